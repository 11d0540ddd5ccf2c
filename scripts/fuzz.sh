#!/usr/bin/env bash
# Fuzzes the Kafka request decoder with libFuzzer for a bounded time: fuzz.sh SECONDS.
#
# Builds the target as cargo-fuzz would (libFuzzer from the libfuzzer-sys crate, LLVM's
# sanitizer-coverage instrumentation, `--cfg fuzzing`, for the host triple so build
# scripts stay uninstrumented), without installing cargo-fuzz and with the release
# profile's codegen units: a cold build takes minutes less, the runs are a little slower.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
corpus=protocol/fuzz/corpus/decode_request
artifacts=protocol/fuzz/artifacts/decode_request
mkdir -p "$corpus" "$artifacts"
[ -n "$(ls -A "$corpus")" ] || cargo run --profile "${QUARRY_PROFILE:-release}" --quiet -p protocol --example fuzz_seeds -- "$corpus"
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing" \
  cargo build --quiet --release --manifest-path protocol/fuzz/Cargo.toml --target "$triple" --bin decode_request
target="${CARGO_TARGET_DIR:-protocol/fuzz/target}"
"$target/$triple/release/decode_request" -artifact_prefix="$artifacts/" \
  -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 "$corpus"
