#!/usr/bin/env bash
# Idempotent producers of confluent-kafka, kafka-python and kafkajs at once against a
# fresh node, which is killed with SIGKILL and started again while they produce
# (check.py asks for the restart through files in the node's temporary directory).
set -euo pipefail
COMPAT_NAME=idempotence
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
[ -f "$COMPAT_DIR/kafkajs/node_modules/kafkajs/package.json" ] || die "kafkajs not installed: run compat/install.sh"
quarry_start
"$COMPAT_PYTHON" "$COMPAT_DIR/idempotence/check.py" "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" &
check=$!
while kill -0 "$check" 2>/dev/null; do
    if [ -e "$QUARRY_TMP/restart-now" ]; then
        rm "$QUARRY_TMP/restart-now"
        quarry_restart
        touch "$QUARRY_TMP/restarted"
    fi
    sleep 0.05
done
wait "$check"
