"""Writes N bytes to stdout (and a line to stderr), then exits 0.

Usage: flood.py N_BYTES. A pipe-based runner that does not drain would deadlock here.
"""

from __future__ import annotations

import sys

total = int(sys.argv[1])
chunk = b"x" * 1023 + b"\n"
out = sys.stdout.buffer
written = 0
while written + len(chunk) <= total:
    out.write(chunk)
    written += len(chunk)
out.write(b"y" * (total - written))
out.flush()
sys.stderr.write("flood: done\n")
