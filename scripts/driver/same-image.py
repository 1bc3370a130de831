#!/usr/bin/env python3
"""Compare two builds of ksspi_driver.sys (scripts/driver-build.sh, step 7).

Usage: same-image.py FIRST SECOND

They must be byte for byte the same, except for the fields lld-link derives,
under /Brepro, from a hash of the PDB: the COFF header's TimeDateStamp, each
debug directory entry's TimeDateStamp and the CodeView record's GUID. The PDB
differs from link to link: it records the linker's command line and objects,
among them the exports file and the object that rustc writes in a randomly
named temporary folder (target/.../deps/rustcXXXXXX/lib.def, symbols.o).
Everything else, code, data, imports, exports and the rest of the headers,
must match.
"""
import struct
import sys


def pdb_derived_fields(image):
    """(offset, length) of every field /Brepro fills from the PDB's hash."""
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    if image[pe:pe + 4] != b"PE\0\0":
        sys.exit("same-image: not a PE image")
    fields = [(pe + 8, 4)]  # IMAGE_FILE_HEADER.TimeDateStamp
    sections = struct.unpack_from("<H", image, pe + 6)[0]
    optional_size = struct.unpack_from("<H", image, pe + 20)[0]
    optional = pe + 24
    if struct.unpack_from("<H", image, optional)[0] != 0x20B:
        sys.exit("same-image: not a PE32+ image")
    # Data directory 6 (debug) of a PE32+ optional header.
    debug_rva, debug_size = struct.unpack_from("<II", image, optional + 112 + 6 * 8)
    table = optional + optional_size

    def offset(rva):
        for i in range(sections):
            size, va, _, raw = struct.unpack_from("<IIII", image, table + 40 * i + 8)
            if va <= rva < va + size:
                return raw + rva - va
        sys.exit(f"same-image: RVA {rva:#x} is in no section")

    entry = offset(debug_rva)
    for i in range(debug_size // 28):
        at = entry + 28 * i
        fields.append((at + 4, 4))  # IMAGE_DEBUG_DIRECTORY.TimeDateStamp
        kind, _, _, data = struct.unpack_from("<IIII", image, at + 12)
        if kind == 2 and image[data:data + 4] == b"RSDS":  # CodeView: RSDS, GUID, age, path
            fields.append((data + 4, 16))
    return fields


def main():
    first, second = (open(p, "rb").read() for p in sys.argv[1:3])
    if first == second:
        print("identical")
        return
    if len(first) != len(second):
        sys.exit(f"same-image: sizes differ ({len(first)} and {len(second)} bytes)")
    masked = set()
    for at, length in pdb_derived_fields(first):
        masked.update(range(at, at + length))
    differ = [i for i in range(len(first)) if first[i] != second[i]]
    outside = [i for i in differ if i not in masked]
    if outside:
        sys.exit(f"same-image: {len(outside)} bytes differ outside the PDB-derived fields, "
                 f"the first at file offset {outside[0]:#x}")
    print(f"identical but for the {len(differ)} bytes of the PDB-derived time stamps and GUID")


if __name__ == "__main__":
    main()
