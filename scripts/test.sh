#!/usr/bin/env bash
# Every test ksspi has, in the order a failure is cheapest to see.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p ksspi --features std-tools --all-targets -- -D warnings

step "tests"
mkdir -p target
cargo test --workspace 2>&1 | tee target/test-output.txt

step "main job: ksspictl selftest over the model"
cargo run -q -p ksspictl -- selftest --count 300 --concurrency 32 --completion mixed --callback-irql mixed

step "benchmarks: a smoke run (a few iterations of each, no figures kept)"
cargo run -q -p ksspictl -- bench --quick --scale 1,16 --json > target/bench-smoke.json
grep -q '"handshakes"' target/bench-smoke.json
# The instruction counts ran under callgrind (setup.sh installs valgrind).
grep -q '"instructions":{"rows":\[{' target/bench-smoke.json

step "fuzz smoke: each cargo-fuzz target for 20 s (libFuzzer, ASan)"
bash scripts/fuzz.sh --smoke 20

step "loom: the issuer / callback / close races"
RUSTFLAGS="--cfg loom" cargo test -q -p ksspi --release --test loom_sync --target-dir target/loom 2>&1 \
  | tee -a target/test-output.txt

step "ABI conformance (sspi.h / schannel.h / winerror.h)"
bash scripts/abi-check.sh

step "kernel target (x86_64-pc-windows-msvc, no_std, ksecdd imports)"
bash scripts/kernel-target-check.sh --self-test

step "harness on Windows (type-check of the DeviceIoControl backend)"
bash scripts/windows-harness-check.sh

# One closing line over every test run above.
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' target/test-output.txt)
printf '\nksspi: %s passed, %s failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
