#!/usr/bin/env bash
# kafka-python 3.x (pure Python) against a fresh node.
set -euo pipefail
COMPAT_NAME=kafka-python
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
quarry_start
PYTHONPATH="$COMPAT_DIR" "$COMPAT_PYTHON" "$COMPAT_DIR/kafka-python/check.py" "$QUARRY_BOOTSTRAP"
