#!/usr/bin/env bash
# Install what building and testing ksspi needs on a Debian 12 machine (as root):
# clang-19 + mingw-w64 headers (ABI check), Debian's rustc-web toolchain with
# std sources + lld/llvm 19 (kernel-target check), openssl (real TLS peers),
# and the rustfmt / clippy components of the rustup toolchain.
set -euo pipefail

pkgs=(clang-19 mingw-w64-common lld-19 llvm-19 rustc-web cargo-web rust-web-src openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
echo "setup: ok"
