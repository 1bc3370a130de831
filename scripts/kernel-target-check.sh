#!/usr/bin/env bash
# Kernel-target check (README, "On Linux"; docs/WINDOWS.md for the driver image):
# 1. build every no_std crate for x86_64-pc-windows-msvc with Debian's
#    rustc-web toolchain and -Zbuild-std=core,alloc;
# 2. link a /driver /subsystem:native probe (scripts/kernel-probe) that reaches
#    every method of the ksecdd backend, against mingw-w64's own import
#    libraries for ksecdd.sys and ntoskrnl.exe (Debian mingw-w64-x86-64-dev:
#    an independent list of what those modules export, so an import they do
#    not know fails the link);
# 3. list the image's imports with llvm-readobj-19 --coff-imports and fail
#    unless every Sspi*Async function ksecdd exports is imported from
#    ksecdd.sys by its exact name, SspiAsyncContextRequiresNotify is not
#    imported at all (it is looked up at run time), and the subsystem is native.
# `--self-test` also proves step 3 fails on a misspelled name.
# (scripts/driver-build.sh does the same for the real driver image.)
set -euo pipefail
cd "$(dirname "$0")/.."

KERNEL_CRATES="ksspi ksspi-abi"
# The driver package's portable part (the device engine), built as an rlib
# with --cfg ksspi_host_check: without the WDK here, the KMDF glue and its
# wdk crates are left out.
DRIVER_PACKAGE="ksspi-driver"
EXPECTED=(
  SspiCreateAsyncContext SspiFreeAsyncContext SspiReinitAsyncContext
  SspiSetAsyncNotifyCallback SspiGetAsyncCallStatus
  SspiAcquireCredentialsHandleAsyncW SspiInitializeSecurityContextAsyncW
  SspiAcceptSecurityContextAsync SspiFreeCredentialsHandleAsync
  SspiDeleteSecurityContextAsync
)

need=()
for p in rustc-web cargo-web rust-web-src lld-19 llvm-19 mingw-w64-x86-64-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "kernel-target: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

# rustup's cargo comes first on PATH: name Debian's explicitly.
kcargo() {
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C target-feature=+crt-static ${EXTRA_RUSTFLAGS:-}" \
    /usr/bin/cargo "$@" -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem \
    --target x86_64-pc-windows-msvc
}

for crate in $KERNEL_CRATES; do
  echo "kernel-target: building $crate for x86_64-pc-windows-msvc (no_std)"
  features=()
  # ksspi's ksecdd backend is the kernel build's only (crates/ksspi/Cargo.toml).
  [ "$crate" = ksspi ] && features=(--features ksecdd)
  kcargo build -q -p "$crate" "${features[@]}" --release --target-dir target/kernel
done

echo "kernel-target: building $DRIVER_PACKAGE's device engine for x86_64-pc-windows-msvc (no_std)"
EXTRA_RUSTFLAGS="--cfg ksspi_host_check" kcargo rustc -q -p "$DRIVER_PACKAGE" --lib --crate-type rlib \
  --release --target-dir target/kernel-driver

out=target/kernel-probe
echo "kernel-target: building and linking the probe"
kcargo build -q --manifest-path scripts/kernel-probe/Cargo.toml --release --target-dir "$out"
mingw=/usr/x86_64-w64-mingw32/lib
lld-link-19 /nologo /driver /subsystem:native /entry:DriverEntry /nodefaultlib /machine:x64 \
  "/out:$out/ksspi_probe.sys" "$out/x86_64-pc-windows-msvc/release/ksspi_kernel_probe.lib" \
  "$mingw/libksecdd.a" "$mingw/libntoskrnl.a"

llvm-readobj-19 --coff-imports "$out/ksspi_probe.sys" > "$out/imports.txt"
llvm-readobj-19 --file-headers "$out/ksspi_probe.sys" > "$out/headers.txt"

# Print "DLL!Function" for every import.
imports() {
  awk '/Name:/ {dll=$2} /Symbol:/ {print dll "!" $2}' "$out/imports.txt"
}

check() {
  local missing=()
  for name in "$@"; do
    imports | grep -qx "ksecdd.sys!$name" || missing+=("$name")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "kernel-target: FAILED: not imported from ksecdd.sys: ${missing[*]}"
    return 1
  fi
}

echo "kernel-target: imports of ksspi_probe.sys:"
imports | sed 's/^/  /'
if ! grep -q 'Subsystem: IMAGE_SUBSYSTEM_NATIVE' "$out/headers.txt"; then
  echo "kernel-target: FAILED: the probe is not a native-subsystem image"
  exit 1
fi
check "${EXPECTED[@]}"
if imports | grep -q 'SspiAsyncContextRequiresNotify'; then
  echo "kernel-target: FAILED: SspiAsyncContextRequiresNotify is imported (it must be looked up at run time)"
  exit 1
fi
echo "kernel-target: ok: all ${#EXPECTED[@]} Sspi*Async functions ksecdd exports imported from ksecdd.sys, SspiAsyncContextRequiresNotify not imported; subsystem native"

if [ "${1:-}" = "--self-test" ]; then
  bad=("${EXPECTED[@]}")
  bad[3]="SspiSetAsyncNotifyCalback"
  if check "${bad[@]}" >/dev/null; then
    echo "kernel-target: FAILED: the check accepted a misspelled name"
    exit 1
  fi
  echo "kernel-target: ok: a misspelled name is caught"
fi
