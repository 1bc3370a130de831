#!/usr/bin/env bash
# The real driver, built on Linux (docs/WINDOWS.md, "Building the
# driver image without Windows"):
# 1. compile the driver package (ksspi-driver) for x86_64-pc-windows-msvc with
#    its wdk crates, so src/kmdf is compiled against the real wdk-sys: bindgen
#    runs over a stand-in WDK made of mingw-w64's kernel headers, Microsoft's
#    public KMDF 1.33 headers and the shims in scripts/driver/shim;
# 2. cargo clippy -D warnings for that target (ksspi-driver, ksspi, ksspi-abi);
# 3. link ksspi_driver.sys with lld-link, with the libraries and arguments
#    wdk-build's configure_binary_build gives it on Windows, against mingw-w64's
#    own import libraries for ntoskrnl, hal and ksecdd (an import none of them
#    knows fails the link) plus scripts/driver/ntoskrnl-newer.def;
# 4. check the image (scripts/driver/check-image.py): native subsystem, entry
#    point, DriverEntry exported, every import listed in docs/WINDOWS.md's
#    evidence table with a Windows build no later than driver.inx's minimum;
# 5. rebuild it and compare (scripts/driver/same-image.py): byte for byte the
#    same but for the ids lld-link derives from the PDB's hash.
# `--self-test` also proves that a wrong field name in a WDF config struct in
# src/kmdf fails step 1, that an import no list knows fails step 3, and that
# an import without its evidence row, or newer than the minimum, fails step 4.
#
# Cargo builds a copy of the project in target/driver/ws (Cargo.toml + a
# [patch.crates-io] section that swaps in wdk-build 0.5.1 and 0.6.0 patched
# for a Linux host by scripts/driver/patch-wdk-build.py): the project's own
# manifests keep crates.io's wdk-build. A copy and not `cargo --config patch`
# because a patch rewrites Cargo.lock, and because wdk-build finds the
# workspace from OUT_DIR's ancestors, so the target dir lies inside the copy.
#
# Without the KMDF headers (KSSPI_KMDF_INCLUDE, or ../shared beside the
# repository) it prints one line and exits 77: skipped, never passed.
# Exit codes: 0 ok, 1 failed, 2 usage, 77 skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HERE=$REPO/scripts/driver

self_test=0
case "${1:-}" in
  "") ;;
  --self-test) self_test=1 ;;
  *) echo "usage: scripts/driver-build.sh [--self-test]" >&2; exit 2 ;;
esac

say() { echo "driver-build: $*"; }
fail() { say "FAILED: $*"; exit 1; }

# --- Inputs ------------------------------------------------------------------

if [ -n "${KSSPI_KMDF_INCLUDE:-}" ]; then
  KMDF_INC=$KSSPI_KMDF_INCLUDE
  [ -f "$KMDF_INC/wdf.h" ] || fail "KSSPI_KMDF_INCLUDE=$KMDF_INC has no wdf.h"
else
  KMDF_INC=$REPO/../shared/third_party/wdf-kmdf-1.33/include
  if [ ! -f "$KMDF_INC/wdf.h" ]; then
    say "SKIPPED: no KMDF 1.33 headers (set KSSPI_KMDF_INCLUDE, or put shared/third_party/wdf-kmdf-1.33 beside the repository)"
    exit 77
  fi
fi
KMDF_INC=$(cd "$KMDF_INC" && pwd)

TARGET=x86_64-pc-windows-msvc
KMDF=1.33
# The Windows SDK version of the WDK that introduced KMDF 1.33 (Windows 11,
# version 22H2); wdk-build takes the include and library folders' names from it.
SDK=10.0.22621.0
LLVM=/usr/lib/llvm-19/bin
MINGW_INC=/usr/share/mingw-w64/include
MINGW_LIB=/usr/x86_64-w64-mingw32/lib
OUT=$REPO/target/driver
WS=$OUT/ws
LOGS=$OUT/logs
WDK=$OUT/wdk
INC=$WDK/Include/$SDK
LIB=$WDK/Lib/$SDK/km/x64
WDFLIB=$WDK/Lib/wdf/kmdf/x64/$KMDF

# Debian packages: clang/lld/llvm 19 (bindgen's libclang, clang-cl, llvm-lib,
# lld-link, llvm-dlltool, llvm-readobj), mingw-w64's headers and import
# libraries, python3 (the patcher and the checks).
need=()
for p in clang-19 lld-19 llvm-19 libclang-19-dev mingw-w64-common mingw-w64-x86-64-dev python3; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt/dpkg run to finish rather than fail on its lock.
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${need[@]}" >/dev/null
fi
command -v rustup >/dev/null || fail "rustup is needed (the stable toolchain with the $TARGET target)"
if ! rustup target list --installed --toolchain stable | grep -qx "$TARGET"; then
  say "adding the $TARGET target to the stable toolchain"
  rustup target add --toolchain stable "$TARGET" >/dev/null
fi

# Cargo for the copy, with rustup's stable toolchain. RUSTFLAGS would replace
# the Windows rustflags of .cargo/config.toml (panic=abort, crt-static), and a
# target dir outside the copy would hide the workspace from wdk-build.
dcargo() {
  (cd "$WS" && env -u RUSTFLAGS -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    CARGO_INCREMENTAL=0 cargo +stable "$@")
}
# Run a step's command with its output in $LOGS/NAME.log; on failure show what
# cargo and the tools said, without the progress lines.
run() {
  local name=$1; shift
  if "$@" >"$LOGS/$name.log" 2>&1; then return 0; fi
  grep -vE '^ *(Compiling|Checking|Fresh|Locking|Adding|Downloading|Downloaded|Blocking) ' "$LOGS/$name.log" | tail -n 80
  say "(full output: $LOGS/$name.log)"
  return 1
}
# A stamp file remembers the inputs a generated folder was made from, so a
# re-run keeps it, mtimes included (cargo reruns wdk-sys's minutes-long
# bindgen build script when the files it tracks change).
fresh() { [ -f "$OUT/$1.stamp" ] && [ "$(cat "$OUT/$1.stamp")" = "$2" ]; }
stamp() { echo "$2" >"$OUT/$1.stamp"; }
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0)) s"; }

# --- 1. wdk-build patched for a Linux host ------------------------------------

mkdir -p "$LOGS"
# One run at a time in this checkout: a second one waits.
exec 9>"$OUT/lock"
flock 9

# The crates.io sources of every dependency (wdk-build's among them) and the
# versions Cargo.lock pins.
cargo +stable metadata --locked --format-version 1 --manifest-path "$REPO/Cargo.toml" \
  >"$OUT/metadata.json" 2>"$LOGS/metadata.log" \
  || { cat "$LOGS/metadata.log"; fail "cargo metadata (fetching the dependencies' sources)"; }
wdk_build_dirs=$(python3 -c '
import json, os, sys
for p in json.load(open(sys.argv[1]))["packages"]:
    if p["name"] == "wdk-build":
        print(p["version"], os.path.dirname(p["manifest_path"]))
' "$OUT/metadata.json")
[ -n "$wdk_build_dirs" ] || fail "no wdk-build in Cargo.lock"
patch_lines=''
while read -r version dir; do
  key=$(sha256sum "$HERE/patch-wdk-build.py" | cut -d' ' -f1)" $dir"
  if ! fresh "wdk-build-$version" "$key"; then
    say "patching wdk-build $version for a Linux host"
    rm -rf "$OUT/wdk-build-$version"
    cp -r "$dir" "$OUT/wdk-build-$version"
    python3 "$HERE/patch-wdk-build.py" "$OUT/wdk-build-$version"
    stamp "wdk-build-$version" "$key"
  fi
  # Cargo.lock has two versions (0.5.1 and 0.6.0): each needs its own key.
  patch_lines+="wdk-build-${version//./} = { path = \"../wdk-build-$version\", package = \"wdk-build\" }"$'\n'
done <<<"$wdk_build_dirs"

# --- 2. The copy of the project that cargo builds -----------------------------

# What cargo needs of the project (the repository's .cargo/config.toml still
# applies: target/driver/ws lies below it). Files keep their mtimes, so cargo
# sees unchanged sources as unchanged; the build output moves over.
rm -rf "$WS.new"
mkdir -p "$WS.new"
# third_party: the workspace's own [patch.crates-io] (the model's rustls) points there.
tar -C "$REPO" -cf - Cargo.lock build.rs src crates third_party | tar -C "$WS.new" -xf -
# TOML allows one [patch.crates-io] table: the wdk-build lines join the
# workspace's own if it has one, or start it.
PATCH_LINES="$patch_lines" python3 - "$REPO/Cargo.toml" >"$WS.new/Cargo.toml" <<'PY'
import os, sys
text = open(sys.argv[1]).read()
lines = "# Added by scripts/driver-build.sh: wdk-build patched for a Linux host.\n" + os.environ["PATCH_LINES"]
header = "\n[patch.crates-io]\n"
if header in text:
    text = text.replace(header, header + lines, 1)
else:
    text = text.rstrip("\n") + "\n" + header + lines
sys.stdout.write(text)
PY
if [ -d "$WS" ]; then
  # An unchanged manifest keeps its mtime: wdk-build tracks it.
  if cmp -s "$WS.new/Cargo.toml" "$WS/Cargo.toml"; then cp -p "$WS/Cargo.toml" "$WS.new/Cargo.toml"; fi
  if [ -d "$WS/target" ]; then mv "$WS/target" "$WS.new/target"; fi
  rm -rf "$WS"
fi
mv "$WS.new" "$WS"

# --- 3. The stand-in WDK ------------------------------------------------------

# Everything bindgen reads: when any of it changes, wdk-sys's bindings are
# generated again (cargo would not notice by itself).
headers_key=$(
  {
    dpkg-query -W mingw-w64-common libclang1-19 clang-19
    cat "$HERE"/shim/*.h
    (cd "$KMDF_INC" && sha256sum -- *.h)
  } | sha256sum | cut -d' ' -f1
)
if ! fresh headers "$headers_key"; then
  say "making the stand-in WDK's include folders (mingw-w64 $(dpkg-query -W -f '${Version}' mingw-w64-common), KMDF $KMDF)"
  rm -rf "$WDK/Include"
  mkdir -p "$INC/km/crt" "$INC/km/ufx/1.1" "$INC/shared" "$WDK/Include/wdf/kmdf/$KMDF"
  # km: mingw-w64's ddk headers; shared: its other headers, less intrin.h
  # (clang's own must be found, as the WDK's compiler finds its own).
  ln -s "$MINGW_INC"/ddk/* "$INC/km/"
  for f in "$MINGW_INC"/*; do
    [ "$(basename "$f")" = intrin.h ] || [ "$(basename "$f")" = ddk ] || ln -s "$f" "$INC/shared/"
  done
  # km/crt comes first on wdk-build's include path: the shims go there.
  cp "$HERE"/shim/*.h "$INC/km/crt/"
  cp "$KMDF_INC"/*.h "$WDK/Include/wdf/kmdf/$KMDF/"
  # wdf.h names five headers with capitals that the published files lack.
  for n in wdfDmaTransaction.h wdfDmaEnabler.h wdfCommonBuffer.h WdfWMI.h WdfQueryInterface.h; do
    lower=$(echo "$n" | tr 'A-Z' 'a-z')
    [ -f "$WDK/Include/wdf/kmdf/$KMDF/$lower" ] || fail "$KMDF_INC lacks $lower"
    ln -s "$lower" "$WDK/Include/wdf/kmdf/$KMDF/$n"
  done
  if [ -d "$WS/target/$TARGET" ]; then
    dcargo clean -q -p wdk-sys --target "$TARGET"
  fi
  stamp headers "$headers_key"
fi

# The libraries the link uses, each with the name the WDK gives it.
libs_key=$(
  {
    dpkg-query -W mingw-w64-x86-64-dev llvm-19 clang-19
    cat "$HERE"/*.def "$HERE"/wdfdriverentry-standin.c
  } | sha256sum | cut -d' ' -f1
)
if ! fresh libs "$libs_key"; then
  say "making the stand-in WDK's libraries"
  rm -rf "$WDK/Lib"
  mkdir -p "$LIB" "$WDFLIB"
  # Independent lists of the kernel's exports: mingw-w64's import libraries.
  cp "$MINGW_LIB/libntoskrnl.a" "$LIB/ntoskrnl.lib"
  cp "$MINGW_LIB/libhal.a" "$LIB/hal.lib"
  cp "$MINGW_LIB/libwmilib.a" "$LIB/wmilib.lib"
  cp "$MINGW_LIB/libksecdd.a" "$LIB/ksecdd.lib"
  # ntoskrnl exports newer than mingw-w64 10, each with its evidence.
  "$LLVM/llvm-dlltool" -m i386:x86-64 -d "$HERE/ntoskrnl-newer.def" -l "$LIB/ntoskrnl_newer.lib"
  # The WDK's /GS support library: Rust code does not use /GS cookies, so an
  # empty archive stands in for it.
  "$LLVM/llvm-ar" rcs "$LIB/BufferOverflowFastFailK.lib"
  "$LLVM/llvm-dlltool" -m i386:x86-64 -d "$HERE/WdfLdr.def" -l "$WDFLIB/WdfLdr.lib"
  "$LLVM/clang-cl" /nologo /c /GS- /Zl /kernel /Brepro "/Fo$WDK/wdfdriverentry-standin.obj" \
    -- "$HERE/wdfdriverentry-standin.c"
  "$LLVM/llvm-lib" /nologo "/out:$WDFLIB/WdfDriverEntry.lib" "$WDK/wdfdriverentry-standin.obj"
  stamp libs "$libs_key"
fi

# --- 4. Compile and lint ------------------------------------------------------

export WDKContentRoot=$WDK Version_Number=$SDK
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
# bindgen (libclang, in wdk-build's MSVC-compatible mode):
# -fgnuc-version: mingw-w64's headers need __GNUC__ for their GNU-C paths,
#   which MSVC-compatible clang does not define;
# -resource-dir: libclang loaded by clang-sys does not find clang's own
#   headers (intrin.h, stddef.h) by itself;
# -D__AMXINTRIN_H -D__AMX_COMPLEXINTRIN_H: skip clang 19's AMX headers (via
#   intrin.h), whose 1024-byte-aligned vector type bindgen lays out wrongly
#   (its layout test fails); the driver uses no AMX.
export BINDGEN_EXTRA_CLANG_ARGS_x86_64_pc_windows_msvc="-fgnuc-version=4.2.1 -resource-dir=$("$LLVM/clang" -print-resource-dir) -D__AMXINTRIN_H -D__AMX_COMPLEXINTRIN_H"
# The cc crate builds wdk-sys's wdf.c: clang-cl and llvm-lib stand for cl.exe
# and lib.exe.
export CC_x86_64_pc_windows_msvc=$LLVM/clang-cl
export CFLAGS_x86_64_pc_windows_msvc="/clang:-fgnuc-version=4.2.1"
export AR_x86_64_pc_windows_msvc=$LLVM/llvm-lib
export CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER=$LLVM/lld-link

say "compiling src/kmdf against wdk-sys (cargo check, $TARGET; generating wdk-sys's bindings takes minutes)"
run check dcargo check -p ksspi-driver --lib --target "$TARGET" || fail "the driver does not compile"

# The driver package and the crates it builds on, whose Windows-only code
# (the ksecdd backend) only this target compiles.
say "cargo clippy -D warnings ($TARGET: ksspi-driver, ksspi, ksspi-abi) [$(elapsed)]"
run clippy dcargo clippy -p ksspi-driver -p ksspi -p ksspi-abi --lib --target "$TARGET" -- -D warnings \
  || fail "clippy found problems in the driver"

# --- 5. Link ------------------------------------------------------------------

# What the package's build.rs does on a Windows host (configure_binary_build
# of the wdk-build it depends on, then ksecdd), checked against that
# wdk-build's source so a release that changes it is noticed here.
WDK_LIBS=(BufferOverflowFastFailK ntoskrnl hal wmilib WdfLdr WdfDriverEntry)
WDK_ARGS=(/DRIVER /NODEFAULTLIB /SUBSYSTEM:NATIVE /KERNEL /ENTRY:FxDriverEntry /IGNORE:4257
  /NXCOMPAT /DYNAMICBASE /MAP /MAPINFO:EXPORTS /OPT:REF,ICF /INTEGRITYCHECK /MANIFEST:NO)
root_wdk_build=$(python3 -c '
import json, os, sys
m = json.load(open(sys.argv[1]))
root = next(n for n in m["resolve"]["nodes"] if n["id"] == m["resolve"]["root"])
dep = next(d["pkg"] for d in root["deps"] if d["name"] == "wdk_build")
print(os.path.dirname(next(p["manifest_path"] for p in m["packages"] if p["id"] == dep)))
' "$OUT/metadata.json")
expected=$(printf 'lib %s\n' "${WDK_LIBS[@]}"; printf 'arg %s\n' "${WDK_ARGS[@]}")
emitted=$(python3 "$HERE/wdk-link-args.py" "$root_wdk_build/src/lib.rs")
if [ "$expected" != "$emitted" ]; then
  diff <(echo "$expected") <(echo "$emitted") || true
  fail "$(basename "$root_wdk_build")'s configure_binary_build emits other libraries or link arguments than this script passes (diff above: < here, > wdk-build)"
fi
link_flags=(-L "native=$LIB" -L "native=$WDFLIB")
for l in "${WDK_LIBS[@]}"; do link_flags+=(-l "static=$l"); done
# build.rs: ksecdd; this script: the newer ntoskrnl names, and /Brepro (time
# stamps from a hash of the output, not the clock, so a rebuild can match).
link_flags+=(-l ksecdd -l ntoskrnl_newer)
for a in "${WDK_ARGS[@]}" /Brepro; do link_flags+=(-C "link-arg=$a"); done
# The cfg that configure_binary_build sets.
link_flags+=(--cfg 'driver_model__driver_type="KMDF"'
  --check-cfg 'cfg(driver_model__driver_type, values("WDM", "KMDF", "UMDF"))')

built=$WS/target/$TARGET/debug
build_image() { dcargo rustc -p ksspi-driver --lib --target "$TARGET" -- "${link_flags[@]}" "$@"; }
say "linking ksspi_driver.sys (lld-link) [$(elapsed)]"
run link build_image || fail "the link failed (an unresolved symbol is an import that no import library knows)"
cp "$built/ksspi_driver.dll" "$OUT/ksspi_driver.sys"
cp "$built/ksspi_driver.pdb" "$OUT/ksspi_driver.pdb"
cp "$built/deps/ksspi_driver.map" "$OUT/ksspi_driver.map"

# --- 6. Check the image -------------------------------------------------------

check_image() {
  python3 "$HERE/check-image.py" --readobj "$LLVM/llvm-readobj" --nm "$LLVM/llvm-nm" \
    --image "$OUT/ksspi_driver.sys" --map "$OUT/ksspi_driver.map" --inx "$REPO/driver.inx" \
    --newer-def "$HERE/ntoskrnl-newer.def" --mingw-ntoskrnl "$MINGW_LIB/libntoskrnl.a" "$@"
}
check_image --evidence "$REPO/docs/WINDOWS.md" --print || fail "the image's checks"

if [ $self_test -eq 1 ]; then
  say "self-test: a wrong field name in a WDF config struct must fail the build [$(elapsed)]"
  # On the copy only; the next run of this script copies the file again.
  sed -i 's/EvtDriverDeviceAdd: Some(/EvtDriverDeviceAddPlanted: Some(/' "$WS/src/kmdf/driver.rs"
  grep -q EvtDriverDeviceAddPlanted "$WS/src/kmdf/driver.rs" || fail "self-test: could not plant the error"
  if run planted-field dcargo check -p ksspi-driver --lib --target "$TARGET" >/dev/null; then
    fail "self-test: the build accepted a wrong field name"
  fi
  grep -q 'no field named `EvtDriverDeviceAddPlanted`' "$LOGS/planted-field.log" \
    || fail "self-test: the build failed, but not on the planted field (see $LOGS/planted-field.log)"
  cp -p "$REPO/src/kmdf/driver.rs" "$WS/src/kmdf/driver.rs"
  say "self-test: ok: the wrong field name fails the build"

  say "self-test: an import no list knows must fail the link [$(elapsed)]"
  # An object that calls a kernel-style function no import library exports.
  printf 'extern long KsspiPlantedUnknownImport(void);\nlong ksspi_planted(void) { return KsspiPlantedUnknownImport(); }\n' \
    >"$OUT/planted-import.c"
  "$LLVM/clang-cl" /nologo /c /GS- /Zl /kernel "/Fo$OUT/planted-import.obj" -- "$OUT/planted-import.c"
  if run planted-import build_image -C "link-arg=$OUT/planted-import.obj" -C "link-arg=/INCLUDE:ksspi_planted" >/dev/null; then
    fail "self-test: the link accepted an import no list knows"
  fi
  grep -q 'undefined symbol: KsspiPlantedUnknownImport' "$LOGS/planted-import.log" \
    || fail "self-test: the link failed, but not on the planted import (see $LOGS/planted-import.log)"
  say "self-test: ok: the unknown import fails the link"

  say "self-test: an import missing from the evidence table, or newer than the INF's minimum, must fail the check"
  # The check itself, on the real image: first with the evidence row of its
  # first import taken out, then with a minimum build older than every row.
  first=$("$LLVM/llvm-readobj" --coff-imports "$OUT/ksspi_driver.sys" | awk '/Symbol:/ {print $2; exit}')
  grep -v "| \`$first\` |" "$REPO/docs/WINDOWS.md" >"$OUT/evidence-less-one.md"
  check_image --evidence "$OUT/evidence-less-one.md" >"$LOGS/planted-unlisted.log" 2>&1 \
    && fail "self-test: the check accepted an import missing from the evidence table"
  grep -q "not in the evidence table: $first" "$LOGS/planted-unlisted.log" \
    || fail "self-test: the check failed, but not on $first (see $LOGS/planted-unlisted.log)"
  check_image --evidence "$REPO/docs/WINDOWS.md" --min-build 2195 >"$LOGS/planted-old-minimum.log" 2>&1 \
    && fail "self-test: the check accepted imports newer than the minimum Windows build"
  grep -q "newer than the driver's minimum" "$LOGS/planted-old-minimum.log" \
    || fail "self-test: the check failed, but not on the minimum build (see $LOGS/planted-old-minimum.log)"
  say "self-test: ok: an unlisted import and a too-new import fail the check"
fi

# --- 7. Reproducible ----------------------------------------------------------

say "rebuilding ksspi-driver from the same inputs: the image must not change [$(elapsed)]"
dcargo clean -q -p ksspi-driver --target "$TARGET"
run relink build_image || fail "the rebuild failed"
same=$(python3 "$HERE/same-image.py" "$OUT/ksspi_driver.sys" "$built/ksspi_driver.dll" 2>&1) \
  || fail "the rebuilt image ($built/ksspi_driver.dll) differs from the first ($OUT/ksspi_driver.sys): $same"
say "ok: the rebuilt image is $same"
say "ok: $OUT/ksspi_driver.sys ($(stat -c %s "$OUT/ksspi_driver.sys") bytes) compiled, clippy-clean, linked, checked, reproducible [$(elapsed)]"
