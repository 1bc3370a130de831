#!/usr/bin/env python3
"""Print what wdk-build's configure_binary_build emits for a KMDF driver on a
Windows host: one `lib NAME` line per `rustc-link-lib=static=NAME` and one
`arg ARG` line per `rustc-cdylib-link-arg=ARG`, from the KMDF arm (x64) and
the block common to every driver model, in source order.

Usage: wdk-link-args.py PATH/TO/wdk-build-X.Y.Z/src/lib.rs

scripts/driver-build.sh cannot run that function on Linux (the package's
build.rs calls it only on a Windows host), so it passes the same libraries
and arguments itself, and compares its list with this output so that a new
wdk-build release that changes them is noticed rather than silently diverged
from.
"""
import re
import sys


def section(text, start, end):
    """The text between the first `start` and the next `end` after it."""
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        sys.exit(f"wdk-link-args: {start!r} ... {end!r} not found: review this parser")
    return text[i:j]


def main():
    text = open(sys.argv[1], encoding="utf-8").read().replace("\r\n", "\n")
    body = section(text, "pub fn configure_binary_build(", "fn is_crt_static_linked(")
    kmdf = section(body, "DriverConfig::Kmdf(_) => {", "DriverConfig::Umdf(")
    # This build is x64: leave out what only ARM64 links (arm64rt).
    kmdf = re.sub(r"if self\.cpu_architecture == CpuArchitecture::Arm64 \{[^}]*\}", "", kmdf)
    common = section(body, "// Emit linker arguments common to all configs", "emit_cfg_settings()")
    for part in (kmdf, common):
        for kind, value in re.findall(
            r'"cargo::rustc-(link-lib=static|cdylib-link-arg)=([^"]+)"', part
        ):
            print(("lib " if kind.startswith("link-lib") else "arg ") + value)


if __name__ == "__main__":
    main()
