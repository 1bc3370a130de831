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
cargo test --workspace

step "loom: the issuer / callback / close races"
RUSTFLAGS="--cfg loom" cargo test -q -p ksspi --release --test loom_sync --target-dir target/loom

step "ABI conformance (sspi.h / schannel.h / winerror.h)"
bash scripts/abi-check.sh

step "kernel target (x86_64-pc-windows-msvc, no_std, ksecdd imports)"
bash scripts/kernel-target-check.sh --self-test
