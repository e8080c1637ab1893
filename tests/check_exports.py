#!/usr/bin/env python3
"""Check that a shared library exports exactly the WOQ_API functions of
woq.h (no C++ or other symbols) and has a SONAME with the major version.

usage: check_exports.py LIBWOQ.so WOQ.H
"""
import re
import subprocess
import sys


def main():
    lib, header = sys.argv[1], sys.argv[2]
    declared = set(re.findall(r"WOQ_API\s+[^;(]*?\b(woq_\w+)\s*\(", open(header).read()))
    nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1].split("@")[0] for line in nm.splitlines() if line.strip()}
    exported.discard("WOQ_1")  # the version node itself
    ok = True
    if exported - declared:
        print("exported but not declared in woq.h:", sorted(exported - declared))
        ok = False
    if declared - exported:
        print("declared in woq.h but not exported:", sorted(declared - exported))
        ok = False
    dyn = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
    m = re.search(r"SONAME.*\[(.*)\]", dyn)
    major = re.search(r"#define WOQ_VERSION_MAJOR (\d+)", open(header).read()).group(1)
    if not m or m.group(1) != "libwoq.so." + major:
        print("SONAME is %r, expected libwoq.so.%s" % (m and m.group(1), major))
        ok = False
    print("%d functions declared, %d exported, SONAME %s: %s"
          % (len(declared), len(exported), m and m.group(1), "OK" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
