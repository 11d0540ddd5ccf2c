#!/usr/bin/env bash
# confluent-kafka (Python, bundled librdkafka) against a fresh node.
set -euo pipefail
COMPAT_NAME=confluent-kafka
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
quarry_start
PYTHONPATH="$COMPAT_DIR" "$COMPAT_PYTHON" "$COMPAT_DIR/confluent-kafka/check.py" "$QUARRY_BOOTSTRAP"
