#!/usr/bin/env bash
# Every test ksspi has, in the order a failure is cheapest to see.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# A step that cannot run on this machine exits 77 after saying why: it is
# counted as skipped, never as passed. Any other failure stops the run.
skipped_steps=0
skippable() {
  local rc=0
  "$@" || rc=$?
  case $rc in
    0) ;;
    77) skipped_steps=$((skipped_steps + 1)) ;;
    *) return "$rc" ;;
  esac
}

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p ksspi --features std-tools --all-targets -- -D warnings

step "docs (rustdoc, every crate, warnings are errors: broken intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --workspace

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

step "driver image (src/kmdf against wdk-sys, clippy for the Windows target, lld-link, imports and their evidence)"
skippable bash scripts/driver-build.sh --self-test

step "harness on Windows (type-check of the DeviceIoControl backend; the Windows workflow's tests compiled for x86_64-pc-windows-gnu)"
skippable bash scripts/windows-harness-check.sh

step "harness on Windows, run: ksspictl.exe (x86_64-pc-windows-gnu) and the Windows workflow's tests under Wine"
skippable bash scripts/windows-harness-wine.sh --self-test

# One closing line over every test run above; skipped counts ignored tests
# and skipped steps.
read -r passed failed ignored < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i
    }
  } END { print p + 0, f + 0, g + 0 }' target/test-output.txt)
printf '\nksspi: %s passed, %s failed, %s skipped\n' "$passed" "$failed" "$((ignored + skipped_steps))"
[ "$failed" -eq 0 ]
