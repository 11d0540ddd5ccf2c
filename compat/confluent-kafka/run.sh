#!/usr/bin/env bash
# confluent-kafka (Python, bundled librdkafka) against a fresh node. The node is
# killed and restarted between the two runs of check.py (the group scenario
# that resumes from committed offsets spans the restart).
set -euo pipefail
COMPAT_NAME=confluent-kafka
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
quarry_start
check=("$COMPAT_PYTHON" "$COMPAT_DIR/confluent-kafka/check.py")
status=0
PYTHONPATH="$COMPAT_DIR" "${check[@]}" "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
quarry_restart
PYTHONPATH="$COMPAT_DIR" "${check[@]}" --after-restart "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
exit "$status"
