#!/usr/bin/env bash
# Type-check the harness's Windows backend (crates/ksspictl/src/backend/windows/:
# the device interface lookup, CreateFileW, overlapped DeviceIoControl) for
# x86_64-pc-windows-msvc, with Debian's rustc-web toolchain building std from
# source. Nothing is linked or run: there is no Windows here.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "windows-harness: checking ksspictl for x86_64-pc-windows-msvc"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-D warnings -C target-feature=+crt-static -C panic=abort" \
  /usr/bin/cargo check -q -p ksspictl -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-msvc --target-dir target/windows-harness
echo "windows-harness: ok"
