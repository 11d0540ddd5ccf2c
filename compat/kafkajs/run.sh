#!/usr/bin/env bash
# kafkajs (Node) against a fresh node. The node is killed and restarted between
# the two runs of check.js (the group scenario that resumes from committed
# offsets spans the restart).
set -euo pipefail
COMPAT_NAME=kafkajs
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[ -f "$COMPAT_DIR/kafkajs/node_modules/kafkajs/package.json" ] || die "kafkajs not installed: run compat/install.sh"
quarry_start
status=0
node "$COMPAT_DIR/kafkajs/check.js" "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
quarry_restart
node "$COMPAT_DIR/kafkajs/check.js" --after-restart "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
exit "$status"
