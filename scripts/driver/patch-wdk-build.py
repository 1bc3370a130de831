#!/usr/bin/env python3
"""Make a copy of wdk-build (0.5.1 or 0.6.0, as published on crates.io) build on
a Linux host. Used by scripts/driver-build.sh only, on a copy in target/driver;
the project's own Cargo.toml keeps the crates.io wdk-build that Windows users get.

Usage: patch-wdk-build.py DIR   (DIR: a pristine copy of the crate's sources)

wdk-build is written for a Windows host; off Windows it does not compile:
  1. src/utils.rs reads the WDK's location from the registry (windows crate).
     Here WDKContentRoot is always set, so the registry lookups are left out.
  2. src/utils.rs's set_var / remove_var stand-ins for non-Windows hosts are a
     compile_error!. Only the cargo-make flow calls them (not build scripts), so
     they become a run-time panic with the same message.
  3. src/cargo_make.rs links rust-driver-makefile.toml with the Windows-only
     std::os::windows::fs::symlink_file; a Unix host gets std's unix symlink.
  4. Cargo.toml: the windows crate becomes a Windows-only dependency.
Every edit must match exactly as many times as expected, or the patch fails
(a new wdk-build release then needs this file reviewed, not guessed at).
"""
import pathlib
import sys


def edit(path, old, new, count):
    """Replace `old` by `new` in `path`, which must hold exactly `count` of it.

    The crate's sources use CRLF line ends: `old` and `new` are written with
    "\n" and take the file's own line end."""
    text = path.read_bytes().decode("utf-8")
    nl = "\r\n" if "\r\n" in text else "\n"
    old, new = old.replace("\n", nl), new.replace("\n", nl)
    found = text.count(old)
    if found != count:
        sys.exit(f"patch-wdk-build: {path}: expected {count} x {old!r}, found {found}")
    path.write_bytes(text.replace(old, new).encode("utf-8"))


def main():
    root = pathlib.Path(sys.argv[1])
    utils = root / "src" / "utils.rs"
    # 1. No registry: the imports, the two lookups and the reader are Windows-only.
    edit(utils, "    ffi::{CStr, OsStr},\n", "    ffi::OsStr,\n", 1)
    edit(utils, "\nuse windows::{", "\n#[cfg(windows)]\nuse std::ffi::CStr;\n#[cfg(windows)]\nuse windows::{", 1)
    edit(utils, "\n    if let Some(path) = read_registry_key_string_value(",
         "\n    #[cfg(windows)]\n    if let Some(path) = read_registry_key_string_value(", 2)
    edit(utils, "\nfn read_registry_key_string_value(",
         "\n#[cfg(windows)]\nfn read_registry_key_string_value(", 1)
    # 2. set_var / remove_var off Windows: a panic if ever called, not a build error.
    edit(utils, "compile_error!(", "panic!(", 2)
    # 3. The symlink function for either host family.
    cargo_make = root / "src" / "cargo_make.rs"
    edit(cargo_make, "std::os::windows::fs::symlink_file(", "symlink_file(", 2)
    edit(cargo_make, "\nuse anyhow::Context;",
         "\n#[cfg(unix)]\nuse std::os::unix::fs::symlink as symlink_file;"
         "\n#[cfg(windows)]\nuse std::os::windows::fs::symlink_file;"
         "\nuse anyhow::Context;", 1)
    # 4. The windows crate only for Windows hosts.
    edit(root / "Cargo.toml", "\n[dependencies.windows]\n",
         "\n[target.'cfg(windows)'.dependencies.windows]\n", 1)


if __name__ == "__main__":
    main()
