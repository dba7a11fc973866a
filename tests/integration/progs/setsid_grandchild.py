"""Forks a child that calls os.setsid(): it leaves our process group and session. Both hang.

Usage: setsid_grandchild.py PIDFILE. Ready when PIDFILE has 2 lines.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _pidfile import announce

pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    announce(pidfile, "escaped")
else:
    announce(pidfile, "parent")
while True:
    time.sleep(3600)
