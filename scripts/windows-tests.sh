# Sourced by scripts/windows-harness-check.sh and scripts/windows-harness-wine.sh:
# the workspace tests the Windows workflow runs (.github/workflows/windows.yaml,
# docs/WINDOWS.md; tests/packaging.rs checks the three say the same command).
#
# Left out on Windows: ksspi-driver (there it is the KMDF driver, a kernel
# image: its KMDF glue and the wdk crates need the WDK, and no user-mode test
# can link it) and ksspi-fuzz (it links ksspi-driver). Both run on Linux.
# Test files that need the model backend or a Linux peer program say so in a
# file-level #![cfg(not(windows))].
WINDOWS_TESTS="cargo test --workspace --exclude ksspi-driver --exclude ksspi-fuzz"
# Built here for x86_64-pc-windows-gnu (mingw-w64 gcc links), warnings as
# errors as in the workflow; the workflow also has +crt-static (MSVC).
WINDOWS_TESTS_TARGET=x86_64-pc-windows-gnu
WINDOWS_TESTS_DIR=target/wine
windows_tests() { # cargo test ARGS... (after the package selection)
  local argv
  read -r -a argv <<<"$WINDOWS_TESTS"
  RUSTFLAGS="-D warnings" CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
    "${argv[@]}" --target "$WINDOWS_TESTS_TARGET" --target-dir "$WINDOWS_TESTS_DIR" "$@"
}
