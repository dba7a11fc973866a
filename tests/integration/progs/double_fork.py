"""The classic daemon: fork, setsid, fork, the first child exits; the daemon sleeps forever.

Usage: double_fork.py PIDFILE [--exit]. The parent waits until the daemon has announced
itself, then hangs (default: ready at 2 lines) or exits 0 (``--exit``: ready at 1 line,
a finished "suite" that leaves a daemon behind).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _pidfile import announce

pidfile = sys.argv[1]
exit_after = "--exit" in sys.argv[2:]

pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        announce(pidfile, "daemon")
        while True:
            time.sleep(3600)
    os._exit(0)
os.waitpid(pid, 0)
# Wait for the daemon to be up, so a test can rely on it having existed.
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with open(pidfile) as f:
            if "daemon" in f.read():
                break
    except FileNotFoundError:
        pass
    time.sleep(0.005)
if exit_after:
    sys.exit(0)
announce(pidfile, "parent")
while True:
    time.sleep(3600)
