#!/usr/bin/env bash
# Install what building and testing ksspi needs on a Debian 12 machine (as root):
# clang-19 + mingw-w64 headers (ABI check), Debian's rustc-web toolchain with
# std sources + lld/llvm 19 (kernel-target check), openssl (real TLS peers),
# the rustfmt / clippy components of the rustup toolchain, and the nightly
# toolchain with cargo-fuzz (the fuzz smoke run); valgrind, whose callgrind
# counts the bench's instructions per handshake; for the driver image
# (scripts/driver-build.sh) libclang (bindgen), mingw-w64's import libraries,
# python3 and the stable toolchain's x86_64-pc-windows-msvc target; for the
# harness's Windows side under Wine (scripts/windows-harness-wine.sh) wine64,
# mingw-w64 gcc and the x86_64-pc-windows-gnu target; gnutls-bin (gnutls-cli,
# gnutls-serv) and openjdk-17-jdk-headless (java, javac: JSSE), real TLS peers
# besides openssl for ksspictl's interop tests.
set -euo pipefail

pkgs=(clang-19 mingw-w64-common lld-19 llvm-19 rustc-web cargo-web rust-web-src openssl valgrind
  libclang-19-dev mingw-w64-x86-64-dev python3 wine64 gcc-mingw-w64-x86-64
  gnutls-bin openjdk-17-jdk-headless)
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
  rustup target add --toolchain stable x86_64-pc-windows-msvc x86_64-pc-windows-gnu >/dev/null
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup: installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal >/dev/null
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked -q
  fi
fi
echo "setup: ok"
