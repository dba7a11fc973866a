"""Reading /proc: the pids there, a process's state and group, whether it is dead, and how
often to look again while waiting for one to die (shared by ``groups`` and ``sweep``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")
# Waiting for a signalled group to vanish: start fine-grained (kill latency is what the bench
# measures), back off to a cap so a TERM-ignoring group does not cost a busy core for `grace`.
GONE_POLL_MIN_S = 0.001
GONE_POLL_MAX_S = 0.01


def pids() -> Iterator[int]:
    """Every pid listed in /proc (threads are not listed at top level)."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def read_proc(pid: int, name: str) -> bytes | None:
    """/proc/<pid>/<name>, or None when the process vanished or hides it from us.

    Raw os.open/os.read: these files are read for every process on every sweep and group
    check, and pathlib's overhead is most of the cost (kill latency is what the bench measures).
    """
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # vanished between listdir and open, or another user's process
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of ``pid`` from /proc/<pid>/stat, or None when it is gone."""
    raw = read_proc(pid, "stat")
    if raw is None:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parens, so cut at the last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[2])
    except (IndexError, ValueError):
        return None


def dead(pid: int) -> bool:
    """Gone, or a zombie. Zombies reparented to init are not ours to reap, and may linger
    forever when PID 1 does not reap (containers): they run no code, so they count as dead."""
    st = stat(pid)
    return st is None or st[0] in ("Z", "X")
