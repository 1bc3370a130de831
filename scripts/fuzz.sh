#!/usr/bin/env bash
# Fuzz ksspi with cargo-fuzz (nightly, libFuzzer, AddressSanitizer).
#
#   scripts/fuzz.sh TARGET SECONDS   one target; new inputs go to fuzz/corpus/TARGET
#   scripts/fuzz.sh --smoke SECONDS  every target for SECONDS each, new inputs
#                                    kept apart (target/fuzz-smoke), as CI runs it
#
# Targets: ioctl, handshake, record (fuzz/fuzz_targets; the programs are in
# crates/ksspi-fuzz). A crash stops the run with a non-zero status; libFuzzer
# leaves the input in fuzz/artifacts/TARGET/ (copy it to
# fuzz/regressions/TARGET/ to keep it as a test). See docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(ioctl handshake record)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  cargo +nightly install cargo-fuzz --locked
fi

# -O: fuzz/Cargo.toml's release profile (optimised, with debug assertions and
# overflow checks). ASan is cargo-fuzz's default sanitizer.
fuzz() {
  local target=$1 seconds=$2 out=$3
  mkdir -p "$out"
  local dirs=("$out" "fuzz/seeds/$target")
  [ "$out" != "fuzz/corpus/$target" ] && [ -d "fuzz/corpus/$target" ] && dirs+=("fuzz/corpus/$target")
  cargo +nightly fuzz run --fuzz-dir fuzz -O "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1
}

if [ "${1:-}" = "--smoke" ]; then
  seconds=${2:-30}
  for t in "${targets[@]}"; do
    printf 'fuzz smoke: %s for %s s\n' "$t" "$seconds"
    fuzz "$t" "$seconds" "target/fuzz-smoke/$t" 2>&1 | grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY|thread .* panicked)' || true
    status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || { echo "fuzz smoke: $t failed ($status)"; exit 1; }
  done
  exit 0
fi

[ $# -eq 2 ] || { sed -n '2,12p' "$0"; exit 2; }
fuzz "$1" "$2" "fuzz/corpus/$1"
