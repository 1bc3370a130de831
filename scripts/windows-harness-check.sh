#!/usr/bin/env bash
# 1. Type-check the harness's Windows backend (crates/ksspictl/src/backend/windows/:
#    the device interface lookup, CreateFileW, overlapped DeviceIoControl) for
#    x86_64-pc-windows-msvc, with Debian's rustc-web toolchain building std from
#    source. Nothing is linked or run: there is no Windows here.
# 2. Compile (--no-run) the workspace tests the Windows workflow runs
#    (scripts/windows-tests.sh) for x86_64-pc-windows-gnu, linked by mingw-w64
#    gcc: a test that stops compiling for Windows fails here.
#    scripts/windows-harness-wine.sh runs them under Wine.
# Exit codes: 0 ok, 1 failed, 77 step 2 skipped (mingw-w64 gcc or the target
# missing; step 1 has passed by then).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "windows-harness: checking ksspictl for x86_64-pc-windows-msvc"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-D warnings -C target-feature=+crt-static -C panic=abort" \
  /usr/bin/cargo check -q -p ksspictl -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-msvc --target-dir target/windows-harness
echo "windows-harness: ok: ksspictl type-checks for x86_64-pc-windows-msvc"

source scripts/windows-tests.sh
if ! command -v x86_64-w64-mingw32-gcc >/dev/null \
  || ! rustup target list --installed 2>/dev/null | grep -qx "$WINDOWS_TESTS_TARGET"; then
  echo "windows-harness: skipped: the Windows tests' build needs mingw-w64 gcc and rustup's $WINDOWS_TESTS_TARGET (bash scripts/setup.sh)"
  exit 77
fi
echo "windows-harness: building the Windows workflow's tests for $WINDOWS_TESTS_TARGET ($WINDOWS_TESTS --no-run)"
windows_tests -q --no-run
echo "windows-harness: ok: the Windows workflow's tests compile for $WINDOWS_TESTS_TARGET"
