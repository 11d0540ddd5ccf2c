#!/usr/bin/env bash
# kafkajs (Node) against a fresh node.
set -euo pipefail
COMPAT_NAME=kafkajs
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[ -f "$COMPAT_DIR/kafkajs/node_modules/kafkajs/package.json" ] || die "kafkajs not installed: run compat/install.sh"
quarry_start
node "$COMPAT_DIR/kafkajs/check.js" "$QUARRY_BOOTSTRAP"
