#!/usr/bin/env bash
# Installs the system packages the build needs (RocksDB's bindings need libclang), skipping
# what is already there.
set -euo pipefail
need=()
for pkg in libclang-dev clang pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
