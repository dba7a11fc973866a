"""Ignores SIGTERM, and so does the child it forks (same process group). Hangs forever.

Usage: ignore_term.py PIDFILE. Ready when PIDFILE has 2 lines.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _pidfile import announce

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the fork below
pidfile = sys.argv[1]
if os.fork() == 0:
    announce(pidfile, "child")
else:
    announce(pidfile, "parent")
while True:
    time.sleep(3600)
