#!/usr/bin/env bash
# kafka-python 3.x (pure Python) against a fresh node. The node is
# killed and restarted between the two runs of check.py (the group scenario
# that resumes from committed offsets spans the restart).
set -euo pipefail
COMPAT_NAME=kafka-python
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
quarry_start
check=("$COMPAT_PYTHON" "$COMPAT_DIR/kafka-python/check.py")
status=0
PYTHONPATH="$COMPAT_DIR" "${check[@]}" "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
quarry_restart
PYTHONPATH="$COMPAT_DIR" "${check[@]}" --after-restart "$QUARRY_BOOTSTRAP" "$QUARRY_TMP" || status=1
exit "$status"
