#!/usr/bin/env bash
# ABI conformance check: every structure layout, constant and FFI prototype that
# ksspi declares (crates/ksspi/src/sys) must agree with the public headers.
#
# ksspi records each declaration as it declares it (sys/abi.rs); the example
# `abi_c` turns that record into a C file of _Static_asserts and prototype
# redeclarations, which clang compiles for x86_64 Windows in kernel mode
# (SECURITY_KERNEL => ISSP_MODE 0) against mingw-w64's sspi.h, schannel.h and
# winerror.h. A wrong size, offset, value or signature is a compile error.
#
# Then it proves the check bites: one planted error of each kind must fail.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v clang-19 >/dev/null || need+=(clang-19)
[ -f /usr/share/mingw-w64/include/sspi.h ] || need+=(mingw-w64-common)
if [ ${#need[@]} -gt 0 ]; then
  echo "abi-check: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

out=target/abi-check
mkdir -p "$out"
cargo build -q -p ksspi --features std-tools --example abi_c
gen=target/debug/examples/abi_c

compile() {
  clang-19 --target=x86_64-w64-mingw32 -fsyntax-only -w \
    -I/usr/share/mingw-w64/include -x c "$1"
}

"$gen" > "$out/ksspi_abi.c"
structs=$(grep -c '^_Static_assert(sizeof' "$out/ksspi_abi.c")
fields=$(grep -c '^_Static_assert(offsetof' "$out/ksspi_abi.c")
consts=$(grep -c '^_Static_assert((long long)' "$out/ksspi_abi.c")
protos=$(grep -c "^/\* .*\.h \*/" "$out/ksspi_abi.c")
fnptrs=$(grep -c "__builtin_types_compatible_p" "$out/ksspi_abi.c")
if ! compile "$out/ksspi_abi.c"; then
  echo "abi-check: FAILED: ksspi's declarations disagree with the headers (see above)"
  exit 1
fi
echo "abi-check: ok: $structs structures ($fields field offsets), $consts constants, $protos prototypes, $fnptrs function pointer types agree with sspi.h/schannel.h/winerror.h"

# The check must fail on a planted error of each kind.
for planted in offset:SecBuffer offset:SCH_CREDENTIALS value:SEC_I_ASYNC_CALL_PENDING \
  value:ASC_REQ_EXTENDED_ERROR offset:SecPkgContext_ApplicationProtocol \
  value:SecApplicationProtocolNegotiationExt_ALPN signature:SspiAcceptSecurityContextAsync \
  signature:SspiReinitAsyncContext signature:SspiAsyncNotifyCallback \
  signature:DECRYPT_MESSAGE_FN signature:SspiAsyncContextRequiresNotify; do
  "$gen" --corrupt "$planted" > "$out/planted.c"
  if compile "$out/planted.c" 2>/dev/null; then
    echo "abi-check: FAILED: a planted error ($planted) compiled cleanly"
    exit 1
  fi
done
echo "abi-check: ok: every planted error (offset, value, signature) was caught"
