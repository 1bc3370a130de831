#!/usr/bin/env python3
"""Check the linked ksspi_driver.sys (scripts/driver-build.sh, step 6).

- a native-subsystem x64 image with wdk-build's DLL characteristics, whose
  entry point is FxDriverEntry (the KMDF stub's, per wdk-build's /ENTRY),
  exporting DriverEntry (the name the stub calls; src/kmdf/driver.rs) and
  otherwise only wdk-sys's stubs;
- every import comes from ntoskrnl.exe, HAL.dll, ksecdd.sys or WdfLdr.sys and
  has its row in the evidence table of docs/WINDOWS.md ("Imports of
  ksspi_driver.sys, with evidence"), under the same module, with a Windows
  build no later than the driver's minimum (driver.inx's
  NT$ARCH$.10.0...BUILD decoration); every row is an import (the table is the
  image's list, not a wish list);
- every name of scripts/driver/ntoskrnl-newer.def has its row and is absent
  from mingw-w64's libntoskrnl.a (that .def is for names newer than it).

The table is the one list: the docs show it, this script enforces it. A row:
| `ntoskrnl.exe` | `ExAllocatePool2` | Windows 10, version 2004 (19041) | evidence |
(the build is the last parenthesised number of the third column).
"""
import argparse
import re
import subprocess
import sys

MODULES = ("ntoskrnl.exe", "HAL.dll", "ksecdd.sys", "WdfLdr.sys")
SECTION = "## Imports of ksspi_driver.sys, with evidence"
# wdk-sys defines these (#[no_mangle], so a cdylib exports them) for the
# linker's floating-point and C++ exception references; the samples' drivers
# export them too.
WDK_SYS_EXPORTS = {"_fltused", "__CxxFrameHandler3", "__CxxFrameHandler4", "__GSHandlerCheck_EH4"}


def readobj(tool, flag, image):
    return subprocess.run([tool, flag, image], check=True, capture_output=True, text=True).stdout


def evidence_table(path):
    """{(module, name): (build, since)} from the table under SECTION."""
    lines = open(path, encoding="utf-8").read().splitlines()
    if SECTION not in lines:
        sys.exit(f"check-image: {path} has no section {SECTION!r}")
    rows = {}
    for line in lines[lines.index(SECTION) + 1:]:
        if line.startswith("## "):
            break
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 4 or cells[0] not in MODULES:
            continue
        builds = re.findall(r"\((?:build )?(\d{4,5})\)", cells[2])
        if not builds:
            sys.exit(f"check-image: {path}: no (build) in the row of {cells[1]}: {line}")
        key = (cells[0].lower(), cells[1])
        if key in rows:
            sys.exit(f"check-image: {path}: two rows for {cells[0]} {cells[1]}")
        rows[key] = (int(builds[-1]), cells[2])
    if not rows:
        sys.exit(f"check-image: {path}: the evidence table has no rows")
    return rows


def minimum_build(inx):
    found = set(re.findall(r"NT\$ARCH\$\.10\.0\.\.\.(\d+)", open(inx, encoding="utf-8").read()))
    if len(found) != 1:
        sys.exit(f"check-image: {inx}: expected one NT$ARCH$.10.0...BUILD decoration, found {sorted(found)}")
    return int(found.pop())


def def_names(path):
    names, exports = [], False
    for line in open(path, encoding="utf-8"):
        line = line.split(";")[0].strip()
        if line == "EXPORTS":
            exports = True
        elif exports and line:
            names.append(line.split()[0])
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--evidence", required=True)
    ap.add_argument("--inx", required=True)
    ap.add_argument("--newer-def", required=True)
    ap.add_argument("--mingw-ntoskrnl", required=True)
    ap.add_argument("--readobj", default="llvm-readobj-19")
    ap.add_argument("--nm", default="llvm-nm-19")
    ap.add_argument("--min-build", type=int, help="instead of driver.inx's (the self-test's)")
    ap.add_argument("--print", action="store_true", help="print the import table")
    args = ap.parse_args()

    problems = []
    table = evidence_table(args.evidence)
    min_build = args.min_build or minimum_build(args.inx)
    min_source = "--min-build" if args.min_build else args.inx

    headers = readobj(args.readobj, "--file-headers", args.image)
    if "IMAGE_FILE_MACHINE_AMD64" not in headers:
        problems.append("not an x64 image")
    if "Subsystem: IMAGE_SUBSYSTEM_NATIVE" not in headers:
        problems.append("not a native-subsystem image")
    base = int(re.search(r"ImageBase: (0x[0-9A-Fa-f]+)", headers).group(1), 16)
    entry = int(re.search(r"AddressOfEntryPoint: (0x[0-9A-Fa-f]+)", headers).group(1), 16)
    for flag in ("NX_COMPAT", "DYNAMIC_BASE", "FORCE_INTEGRITY"):
        if f"IMAGE_DLL_CHARACTERISTICS_{flag}" not in headers:
            problems.append(f"no {flag} (the /NXCOMPAT /DYNAMICBASE /INTEGRITYCHECK of wdk-build)")
    # The link map (/MAP, link.exe's layout): "0001:0003dca0  FxDriverEntry  000000018003eca0  lib:obj".
    fx = [int(m.group(1), 16) for m in re.finditer(r"^\s*[0-9a-f]{4}:[0-9a-f]{8}\s+FxDriverEntry\s+([0-9a-f]{16})\s",
                                                      open(args.map, encoding="utf-8").read(), re.M)]
    if fx != [base + entry]:
        problems.append(f"the entry point ({base + entry:#x}) is not FxDriverEntry ({[hex(a) for a in fx]})")

    exports = re.findall(r"Name: (\S+)", readobj(args.readobj, "--coff-exports", args.image))
    if "DriverEntry" not in exports:
        problems.append("DriverEntry is not exported")
    for name in sorted(set(exports) - {"DriverEntry"} - WDK_SYS_EXPORTS):
        problems.append(f"exports {name}: only DriverEntry and wdk-sys's stubs {sorted(WDK_SYS_EXPORTS)} are expected")

    imports, module = [], None
    for line in readobj(args.readobj, "--coff-imports", args.image).splitlines():
        m = re.match(r"\s*Name: (\S+)", line)
        if m:
            module = m.group(1)
        m = re.match(r"\s*Symbol: (\S+)", line)
        if m:
            imports.append((module, m.group(1)))
    allowed = {m.lower() for m in MODULES}
    for module, name in imports:
        if module.lower() not in allowed:
            problems.append(f"{name} is imported from {module}, not one of {', '.join(MODULES)}")
        elif (module.lower(), name) not in table:
            problems.append(f"not in the evidence table: {name} ({module}): add its row to "
                            f"{args.evidence} with the Windows version that introduced it and the evidence")
        elif table[(module.lower(), name)][0] > min_build:
            problems.append(f"{name} ({module}) needs build {table[(module.lower(), name)][0]}, "
                            f"newer than the driver's minimum {min_build} ({min_source})")
    imported = {(m.lower(), n) for m, n in imports}
    for module, name in sorted(set(table) - imported):
        problems.append(f"{args.evidence} lists {name} ({module}), which the image does not import: remove its row")

    mingw = subprocess.run([args.nm, "--defined-only", args.mingw_ntoskrnl],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in def_names(args.newer_def):
        if ("ntoskrnl.exe", name) not in table:
            problems.append(f"{args.newer_def}: {name} has no row for ntoskrnl.exe in {args.evidence}")
        if name in mingw:
            problems.append(f"{args.newer_def}: mingw-w64's libntoskrnl.a already exports {name}: remove it")

    if args.print:
        print(f"driver-build: imports of {args.image} (minimum build {min_build}):")
        for module, name in sorted(imports, key=lambda i: (i[0].lower(), i[1])):
            since = table.get((module.lower(), name), (0, "NOT IN THE EVIDENCE TABLE"))[1]
            print(f"  {module:<13} {name:<40} {since}")
    for p in problems:
        print(f"driver-build: FAILED: {p}")
    if problems:
        sys.exit(1)
    print(f"driver-build: ok: {len(imports)} imports, each with its evidence and no newer than build "
          f"{min_build}; native subsystem, entry FxDriverEntry, exports {', '.join(exports)}")


if __name__ == "__main__":
    main()
