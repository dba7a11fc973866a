"""The run marker, and the sweep that kills every process carrying it.

``setsid`` and double forks escape any process group, so a run's processes are also found
by the marker in their environment (``/proc/<pid>/environ``). Nested runs (the orchestrator
running its own suite) stay findable through ``ORCH_RUN_MARKER_CHAIN``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping

from orchestrator.proc_group.procfs import GONE_POLL_MAX_S, GONE_POLL_MIN_S, dead, pids, read_proc

MARKER_ENV = "ORCH_RUN_MARKER"
# Comma-separated markers of every enclosing run, then this run's (see marker_chain).
MARKER_CHAIN_ENV = "ORCH_RUN_MARKER_CHAIN"
_MARKER_ENV_B = MARKER_ENV.encode()
_CHAIN_ENV_B = MARKER_CHAIN_ENV.encode()
# The package's logger, as before it was split: one name to filter its records on.
_log = logging.getLogger("orchestrator.proc_group")


def _has_marker(pid: int, marker: bytes) -> bool:
    """``pid``'s environment carries ``marker``, as its own run marker or in the chain."""
    environ = read_proc(pid, "environ")
    if environ is None or marker not in environ:  # fast path: nearly every process
        return False
    # NUL-separated NAME=value entries. /proc shows the environment the process was exec'd
    # with, so an unsetenv() in the process itself does not hide it. A zombie's reads empty.
    for entry in environ.split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == _MARKER_ENV_B and value == marker:
            return True
        if name == _CHAIN_ENV_B and marker in value.split(b","):
            return True
    return False


def marker_chain(env: Mapping[str, str], marker: str) -> str:
    """Every enclosing run's marker, then ours: the value of ``MARKER_CHAIN_ENV``.

    Self-hosting: when the orchestrator itself runs under a run (its own test suite), the
    processes it spawns get a marker of their own, which replaces the inherited one. Without
    the chain, an outer sweep could not find them once the inner orchestrator was killed
    before its own clean-up. Our own environment counts even when the caller builds a fresh
    ``env``: a run must stay findable by whatever run encloses this process.
    """
    chain: list[str] = []
    for source in (os.environ, env):
        inherited = [*source.get(MARKER_CHAIN_ENV, "").split(","), source.get(MARKER_ENV, "")]
        for raw in inherited:
            item = raw.strip()
            if item and item != marker and item not in chain:
                chain.append(item)
    return ",".join([*chain, marker])


def find_marked(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker``.

    Carries: ``ORCH_RUN_MARKER=<marker>``, or ``marker`` in ``ORCH_RUN_MARKER_CHAIN`` (the
    descendants of a nested run). Skips our own pid; a process that vanishes or hides its
    environ mid-scan is skipped.
    """
    if not marker:
        return []
    needle = marker.encode()
    me = os.getpid()
    return sorted(pid for pid in pids() if pid != me and _has_marker(pid, needle))


def _kill_if_marked(pid: int, marker: bytes) -> bool:
    """SIGKILL ``pid`` if it still carries the marker. True when the signal was sent.

    Race: between the scan and the kill, ``pid`` may die and its number be reused by an
    unrelated process. A pidfd pins the process: re-check the marker through the pinned
    pid, then signal the pidfd, so we can never kill a stranger.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        if not _has_marker(pid, marker):
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return False
        return True
    try:
        fd = pidfd_open(pid)
    except OSError:  # gone already (ESRCH), or pidfds unavailable in this kernel
        return False
    try:
        if not _has_marker(pid, marker):
            return False
        send(fd, signal.SIGKILL)
        return True
    except OSError:  # exited in between, or not ours (EPERM)
        return False
    finally:
        os.close(fd)


def sweep(marker: str, timeout_s: float) -> tuple[list[int], list[int]]:
    """Kill marked processes until none is left or ``timeout_s`` passes: (killed, survivors).

    Repeated scans, because a process may fork between our scan and our kill; its child
    inherits the marker and shows up in the next scan. A killed process cannot fork again,
    so this converges.
    """
    needle = marker.encode()
    deadline = time.monotonic() + timeout_s
    killed: set[int] = set()
    while True:
        found = find_marked(marker)
        if not found:
            return sorted(killed), []
        for pid in found:
            if _kill_if_marked(pid, needle):
                killed.add(pid)
        # Wait for this round to die before rescanning, so a dying process is not re-counted.
        pause = GONE_POLL_MIN_S
        while not all(dead(pid) for pid in found):
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, GONE_POLL_MAX_S)
        if time.monotonic() >= deadline:
            survivors = find_marked(marker)
            return sorted(killed), survivors


def kill_marked(marker: str, *, timeout_s: float = 2.0) -> int:
    """SIGKILL every process carrying ``marker`` until none is left; how many were killed."""
    killed, survivors = sweep(marker, timeout_s)
    if survivors:
        _log.warning(
            "marked processes survived SIGKILL: %s",
            survivors,
            extra={"action": "sweep", "marker": marker},
        )
    return len(killed)
