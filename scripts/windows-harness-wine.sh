#!/usr/bin/env bash
# The harness's Windows side, built and run here: ksspictl.exe for
# x86_64-pc-windows-gnu (rustup's target, Debian's mingw-w64 gcc as linker),
# run under Wine (Debian's wine64, 8.0) in a throwaway prefix, through a suite
# of what the Windows backend does without a driver: every command's --help,
# every model-only option refused with its reason, argument checks (the VM
# commands' INF and flag checks among them), and the
# not-installed guidance of every command that opens the device (Wine's
# CfgMgr32 answers CR_FAILURE where Windows gives an empty list: both must
# end in the same guidance).
#
# Wine 8.0 lacks bcryptprimitives.dll, whose ProcessPrng Rust's standard
# library calls at start-up: scripts/wine/bcryptprimitives.c is a stand-in
# built with mingw-w64 gcc and placed beside the exe (a test aid only; on
# Windows the system's DLL is used). No display is needed: the harness is a
# console program.
#
# Then the workspace tests the Windows workflow runs (scripts/windows-tests.sh),
# built for the same target (scripts/windows-harness-check.sh compiles them
# first; here that build is a no-op) and run by cargo with Wine as the
# runner, in the same prefix.
#
# The exe is the same harness a Windows user builds with cargo for the MSVC
# target (same source, same windows-sys calls); the GNU target differs in its
# C runtime and linker only (README, "ksspictl.exe built here").
#
# Exit codes: 0 ok, 1 failed, 77 skipped (Wine missing or does not start).
# --self-test: also proves the suite bites, by rebuilding the exe with the
# not-installed message altered and requiring the suite to fail on it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

source scripts/windows-tests.sh
TARGET=$WINDOWS_TESTS_TARGET
out=$WINDOWS_TESTS_DIR
exe_dir=$out/$TARGET/debug

need=()
for p in wine64 gcc-mingw-w64-x86-64; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "windows-wine: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null) || true
fi
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  echo "windows-wine: skipped: wine or mingw-w64 gcc is not installed (apt-get install wine64 gcc-mingw-w64-x86-64)"
  exit 77
fi
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET" >/dev/null

# Build the exe (debug: the suite needs no speed, and the release profile's
# LTO takes minutes) and the stand-in DLL. The tests' flags, so that the two
# builds share their dependencies.
build() { # TARGET_DIR
  RUSTFLAGS="-D warnings" CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
    cargo build -q -p ksspictl --target "$TARGET" --target-dir "$1"
}
echo "windows-wine: building ksspictl.exe for $TARGET"
build "$out"
x86_64-w64-mingw32-gcc -shared -O2 -o "$exe_dir/bcryptprimitives.dll" \
  scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -lbcrypt

prefix=$(mktemp -d /tmp/ksspi-wine.XXXXXX)
trap 'wineserver -k >/dev/null 2>&1 || true; rm -rf "$prefix"' EXIT
export WINEPREFIX=$prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY
if ! timeout 120 wine "$exe_dir/ksspictl.exe" --version >"$out/wine-start.txt" 2>&1; then
  echo "windows-wine: skipped: Wine does not start ksspictl.exe here ($(tail -1 "$out/wine-start.txt"))"
  exit 77
fi

NOT_INSTALLED="the ksspi driver is not installed"
GUIDANCE="pnputil /add-driver ksspi_driver.inf /install"
THUMB=00112233445566778899aabbccddeeff00112233
COMPLETION_REFUSED="choose the model's behaviour; on Windows ksecdd and Schannel decide"
SOAK_REFUSED="drive the model; on Windows use Driver Verifier's low-resources simulation"

# name | expected exit code | text the output must contain | arguments
CASES=(
  "help|0|Drive the ksspi kernel TLS driver|--help"
  "version|0|ksspictl|--version"
  "help info|0|One JSON object on stdout|info --help"
  "help selftest|0|--cert-thumbprint|selftest --help"
  "help stress|0|--duration|stress --help"
  "help bench|0|Usage: ksspictl.exe bench|bench --help"
  "help bench-path|0|--path|bench-path --help"
  "help connect|0|--server-name|connect --help"
  "help serve|0|--listen|serve --help"
  "info: not installed|1|$NOT_INSTALLED|info"
  "info --json: not installed|1|$GUIDANCE|info --json"
  "selftest: not installed|1|$NOT_INSTALLED|selftest --count 2 --cert-thumbprint $THUMB"
  "selftest: the guidance names pnputil|1|$GUIDANCE|selftest --cert-thumbprint $THUMB"
  "connect: not installed|1|$NOT_INSTALLED|connect 127.0.0.1:9 --server-name localhost"
  "serve: not installed|1|$NOT_INSTALLED|serve --listen 127.0.0.1:0 --cert-thumbprint $THUMB --once"
  "stress: not installed|1|$NOT_INSTALLED|stress --duration 1 --cert-thumbprint $THUMB"
  "selftest needs a thumbprint|1|pass --cert-thumbprint HEX|selftest --count 2"
  "serve needs a thumbprint|1|pass --cert-thumbprint HEX|serve --listen 127.0.0.1:0"
  "stress needs a thumbprint|1|pass --cert-thumbprint HEX|stress --duration 1"
  "refused: --completion|1|$COMPLETION_REFUSED|selftest --completion async --cert-thumbprint $THUMB"
  "refused: --callback-irql|1|$COMPLETION_REFUSED|selftest --callback-irql dispatch --cert-thumbprint $THUMB"
  "refused: --no-requires-notify|1|$COMPLETION_REFUSED|selftest --no-requires-notify --cert-thumbprint $THUMB"
  "refused: --refuse-reinit-in-callback|1|$COMPLETION_REFUSED|selftest --refuse-reinit-in-callback --cert-thumbprint $THUMB"
  "refused: --no-session-cache|1|$COMPLETION_REFUSED|selftest --no-session-cache --cert-thumbprint $THUMB"
  "refused: stress --faults|1|$SOAK_REFUSED|stress --duration 1 --faults 5"
  "refused: stress --workers|1|$SOAK_REFUSED|stress --duration 1 --workers 2"
  "refused: stress --disrupt|1|$SOAK_REFUSED|stress --duration 1 --disrupt 10"
  "refused: connect --ca|1|import the CA there (certutil -addstore root ca.cer)|connect 127.0.0.1:9 --ca ca.pem"
  "refused: serve --cert/--key|1|use --cert-thumbprint|serve --listen 127.0.0.1:0 --cert c.pem --key k.pem"
  "refused: serve --self-signed|1|use --cert-thumbprint|serve --listen 127.0.0.1:0 --self-signed localhost"
  "refused: bench|1|the driver's own figures come from \`ksspictl selftest\`|bench --quick"
  "refused: bench-path|1|bench-path runs over the model only|bench-path --path rustls --tls 1.3 --count 1"
  "checked: --count 0|2|0 is not in 1..=100000|selftest --count 0 --cert-thumbprint $THUMB"
  "checked: --concurrency above the driver's|2|4294967295 is not in 1..=10000|selftest --concurrency 4294967295 --cert-thumbprint $THUMB"
  "checked: --idle out of range|2|takes seconds from 0.001 to 86400|connect 127.0.0.1:9 --send x --idle 1e300"
  "checked: --idle alone|2|the following required arguments were not provided|connect 127.0.0.1:9 --idle 5"
  "checked: a bad --send escape|1|unknown escape|connect 127.0.0.1:9 --send a\q"
  "checked: stress --duration 0|2|takes seconds from 0.001|stress --duration 0 --cert-thumbprint $THUMB"
  "checked: a short thumbprint|2|a thumbprint has 40 hex digits|selftest --cert-thumbprint 0011"
  "checked: a thumbprint not hex|2|is not hex|selftest --cert-thumbprint zz112233445566778899aabbccddeeff00112233"
  "checked: an unknown TLS version|2|invalid value|selftest --tls 1.1 --cert-thumbprint $THUMB"
  "checked: an unknown command|2|unrecognized subcommand|frobnicate"
  "help install|0|--inf|install --help"
  "help uninstall|0|Usage: ksspictl.exe uninstall|uninstall --help"
  "help verifier|0|--keep-others|verifier --help"
  "help acceptance|0|--no-verifier|acceptance --help"
  "install: no INF|1|no INF at missing.inf|install --inf missing.inf"
  "install: the INF template|1|is the INF template (driver.inx|install --inf Z:$root/driver.inx"
  "verifier: --keep-others with off|1|--keep-others goes with \`verifier on\` only|verifier off --keep-others"
  "acceptance: --dry-run is the model's|1|on the VM run \`ksspictl acceptance\`|acceptance --dry-run"
  "acceptance: --count 0|1|--count must be at least 1|acceptance --count 0"
)

# Run every case against the exe in $1; print one line per failure; return
# the number of failures.
run_suite() {
  local dir=$1 failures=0 case name want text args output rc
  for case in "${CASES[@]}"; do
    IFS='|' read -r name want text args <<<"$case"
    read -r -a argv <<<"$args"
    rc=0
    output=$(cd "$dir" && timeout 60 wine ./ksspictl.exe "${argv[@]}" 2>&1) || rc=$?
    if [ "$rc" != "$want" ] || [[ "$output" != *"$text"* ]]; then
      echo "windows-wine: FAILED: $name: exit $rc (want $want); output: $(echo "$output" | head -3)"
      failures=$((failures + 1))
    fi
  done
  return "$failures"
}

echo "windows-wine: running ${#CASES[@]} cases under $(wine --version)"
if ! run_suite "$exe_dir"; then
  echo "windows-wine: FAILED"
  exit 1
fi
echo "windows-wine: ok: ${#CASES[@]} cases (help, refusals, argument checks, not-installed guidance) pass under Wine"

# The acceptance run's pending-reboot precondition against Wine's registry:
# none pending in a new prefix; then the Component Based Servicing key and
# two file operations queued for boot (a rename and a deletion, as
# MoveFileEx(MOVEFILE_DELAY_UNTIL_REBOOT) records them), which must block the
# run with both named. The acceptance stops at its preconditions here (no
# driver, no test signing), so nothing else runs.
CBS='HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending'
SM='HKLM\SYSTEM\CurrentControlSet\Control\Session Manager'
# Output through a file, not a pipe: Wine's services (winedevice.exe) live
# as long as the persistent server and would hold a pipe open.
acceptance_output() {
  local dir
  dir=$(mktemp -d "$prefix/acceptance.XXXXXX")
  (cd "$dir" && timeout 120 wine "$root/$exe_dir/ksspictl.exe" acceptance --no-verifier \
    >"$dir/output.txt" 2>&1) || true
  cat "$dir/output.txt"
}
# One Wine session for all of it (a new session runs wineboot, which carries
# out and clears PendingFileRenameOperations as the Session Manager does at
# boot): the server restarted persistent before anything is added.
wineserver -k >/dev/null 2>&1 || true
wineserver -w
wineserver -p
wineboot >/dev/null 2>&1
before=$(acceptance_output)
wine reg add "$CBS" /f >/dev/null 2>&1
wine reg add "$SM" /v PendingFileRenameOperations /t REG_MULTI_SZ \
  /d '\??\C:\ksspi.new\0!\??\C:\ksspi.sys\0\??\C:\ksspi.tmp' /f >/dev/null 2>&1
after=$(acceptance_output)
wine reg delete "$CBS" /f >/dev/null 2>&1
wine reg delete "$SM" /v PendingFileRenameOperations /f >/dev/null 2>&1
if [[ "$before" == *"no reboot pending:"* ]] \
  || [[ "$after" != *"no reboot pending: Component Based Servicing waits for a reboot"* ]] \
  || [[ "$after" != *"2 file operations queued for the next boot"* ]]; then
  echo "windows-wine: FAILED: the pending-reboot precondition under Wine's registry:"
  echo "  before: $(echo "$before" | grep -i 'reboot' | head -2)"
  echo "  after:  $(echo "$after" | grep -i 'reboot' | head -2)"
  exit 1
fi
echo "windows-wine: ok: acceptance reads a pending reboot from the registry (Component Based Servicing, PendingFileRenameOperations) and blocks"

# The Windows workflow's tests. Skipped here only for time: the conductor's
# 150 000-call stack test takes two minutes under Wine (each call's
# synchronisation goes through wineserver); it passes under Wine, on Linux,
# and runs in the workflow on Windows.
SLOW_UNDER_WINE=the_stack_stays_bounded_over_many_synchronous_completions
echo "windows-wine: building and running the Windows workflow's tests under Wine ($WINDOWS_TESTS)"
windows_tests -q --no-run
cp "$exe_dir/bcryptprimitives.dll" "$exe_dir/deps/"
rc=0
# cargo runs each test binary as `timeout 300 wine TEST.exe` (cwd: its package).
(export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="timeout 300 wine"
  windows_tests -q --no-fail-fast -- --skip "$SLOW_UNDER_WINE") >"$out/tests.txt" 2>&1 || rc=$?
read -r binaries passed failed < <(awk '/^test result:/ { n++
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print n + 0, p + 0, f + 0 }' "$out/tests.txt")
if [ "$rc" != 0 ] || [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
  grep -E "^test .* FAILED|panicked|^error" "$out/tests.txt" | head -20 || true
  echo "windows-wine: FAILED: the Windows workflow's tests under Wine: exit $rc, $passed passed, $failed failed (log: $out/tests.txt)"
  exit 1
fi
echo "windows-wine: ok: the Windows workflow's tests pass under Wine: $passed passed in $binaries test binaries (skipped for time: $SLOW_UNDER_WINE)"

if [ "${1:-}" = "--self-test" ]; then
  # Plant a regression in the not-installed message, in a scratch copy of the
  # workspace (the repository's files are never touched), and require the suite
  # to fail on it.
  scratch=$out/planted
  rm -rf "$scratch" && mkdir -p "$scratch"
  tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$scratch"
  sed -i 's/pnputil \/add-driver ksspi_driver.inf \/install/pnputil \/add-driver ksspi_driver.inf/' \
    "$scratch/crates/ksspictl/src/backend/windows/device.rs"
  (cd "$scratch" && build "$root/$out/planted-target")
  planted_dir=$out/planted-target/$TARGET/debug
  cp "$exe_dir/bcryptprimitives.dll" "$planted_dir/"
  if run_suite "$planted_dir" >/dev/null; then
    echo "windows-wine: FAILED: the suite passed an exe whose not-installed message lost its guidance"
    exit 1
  fi
  echo "windows-wine: ok: a planted regression in the not-installed message fails the suite"
fi
