"""Process groups: whether one is alive, and TERM, grace, KILL to all of it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from orchestrator.proc_group.procfs import GONE_POLL_MAX_S, GONE_POLL_MIN_S, PROC, pids, stat

# After SIGKILL a process normally dies in microseconds; one stuck in uninterruptible sleep
# (D state, e.g. a hung NFS read) may not. Bound the wait, then report uncertainty.
_KILL_CONFIRM_S = 2.0


def _check_pgid(pgid: int) -> None:
    # killpg(0) or killpg(1) would hit our own group or everything we may signal, and our own
    # group holds the orchestrator itself. Never a valid target: refuse loudly.
    if pgid <= 1 or (os.name == "posix" and pgid == os.getpgrp()):
        msg = f"refusing to signal process group {pgid}: not a child's group"
        raise ValueError(msg)


def group_alive(pgid: int) -> bool:
    """True while the process group has a member that is not a zombie."""
    _check_pgid(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists that we may not signal
        return True
    # killpg counts zombies too (exited, not reaped): orphaned zombies linger when PID 1 does
    # not reap. Only a member that can still run code keeps the group alive.
    if not PROC.is_dir():
        return True
    for pid in pids():
        st = stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid: int, timeout_s: float, reap: Callable[[], object] | None) -> bool:
    deadline = time.monotonic() + timeout_s
    pause = GONE_POLL_MIN_S
    while True:
        if reap is not None:
            reap()  # our own child, once reaped, no longer counts as a (zombie) member
        if not group_alive(pgid):
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, GONE_POLL_MAX_S)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> bool:
    if not group_alive(pgid):
        return True
    if _signal_group(pgid, signal.SIGTERM):
        # A stopped (SIGSTOP/SIGTSTP) member would only act on TERM once continued: wake it,
        # as systemd does, so it gets its grace period instead of sleeping through it.
        _signal_group(pgid, signal.SIGCONT)
    if _wait_group_gone(pgid, max(grace_s, 0.0), reap):
        return True
    _signal_group(pgid, signal.SIGKILL)
    return _wait_group_gone(pgid, _KILL_CONFIRM_S, reap)


def kill_process_group(pgid: int, *, grace_s: float) -> bool:
    """SIGTERM the group, wait up to ``grace_s``, SIGKILL it. True when the group is gone."""
    _check_pgid(pgid)
    return terminate_group(pgid, grace_s)
