#!/usr/bin/env bash
# Fuzzes the Kafka request decoder with libFuzzer for a bounded time: fuzz.sh SECONDS.
# cargo-fuzz needs unstable compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
corpus=protocol/fuzz/corpus/decode_request
mkdir -p "$corpus"
[ -n "$(ls -A "$corpus")" ] || cargo run --release --quiet -p protocol --example fuzz_seeds -- "$corpus"
cd protocol
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --release decode_request "fuzz/corpus/decode_request" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1
