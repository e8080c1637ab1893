#!/usr/bin/env python3
"""Runs the examples of every language on the shared vectors and checks that
they print the same Y bits as the C example, and that those match the
float64 values of examples/data/expected.txt (numpy, independent of libwoq).

  check_examples.py EXPECTED.txt NAME=COMMAND [NAME=COMMAND ...]

The first command is the C example; each COMMAND is run by the shell.
"""
import struct
import subprocess
import sys


def y_lines(name, command):
    run = subprocess.run(command, shell=True, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit("%s example failed (exit %d):\n%s%s" % (name, run.returncode, run.stdout, run.stderr))
    lines = [line.split() for line in run.stdout.splitlines() if line.startswith("y ")]
    if not lines:
        sys.exit("%s example printed no 'y' lines:\n%s" % (name, run.stdout))
    print("%-7s %s" % (name, run.stdout.splitlines()[0]))
    return lines


def main(expected_path, runs):
    expected = {}
    for line in open(expected_path):
        if not line.startswith("#"):
            r, n, y, scale = line.split()
            expected[(int(r), int(n))] = (float(y), float(scale))
    names = [run.split("=", 1)[0] for run in runs]
    outputs = [y_lines(*run.split("=", 1)) for run in runs]
    c_lines = outputs[0]
    worst = 0.0
    for row in c_lines:
        r = int(row[1].rstrip(":"))
        for n, word in enumerate(row[2:]):
            got = struct.unpack("<f", struct.pack("<I", int(word, 16)))[0]
            want, scale = expected[(r, n)]
            worst = max(worst, abs(got - want) / scale)
    if len(expected) != sum(len(row) - 2 for row in c_lines):
        sys.exit("C example printed %d values, expected.txt has %d" %
                 (sum(len(row) - 2 for row in c_lines), len(expected)))
    if worst > 1e-5:
        sys.exit("C example differs from the float64 reference by %.3g (relative to sum |x w| + |b|)" % worst)
    for name, lines in zip(names[1:], outputs[1:]):
        if lines != c_lines:
            sys.exit("%s example printed other bits than the C example" % name)
    print("%d values, largest error vs float64 %.2g; %s print the same bits as C" %
          (len(expected), worst, ", ".join(names[1:]) or "no other language"))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
