"""Run one command in its own process group and make sure nothing it started outlives it.

The only place in the package that starts processes. Stdlib only, and of the rest of the
package only ``masking`` (stdlib only itself: the rule of what a log header masks), so it
can be reasoned about (and benchmarked) alone.

How a run goes:

1. The child gets a fresh session and process group (``start_new_session=True``), a unique
   marker ``ORCH_RUN_MARKER=<uuid>`` in its environment, stdin from /dev/null, and stdout and
   stderr pointing straight at the log file (no pipe that can fill up and deadlock).
2. A reap loop polls every ~10 ms for: the child's exit, the cancel event, the timeout, and
   (every ~50 ms) the caller's ``poll`` hook.
3. On timeout / cancel / stop reason: SIGTERM to the group, wait ``grace_s``, SIGKILL to the
   group. Then, because ``setsid`` and double forks escape any process group, a *sweep*:
   every process whose ``/proc/<pid>/environ`` holds the marker gets SIGKILL, repeated until
   none is left or a bound is hit (then ``termination_uncertain=True``). Nested runs (the
   orchestrator running its own suite) stay findable through ``ORCH_RUN_MARKER_CHAIN``.
4. After a normal exit the same clean-up runs (``sweep_on_exit``): a daemon left behind by a
   finished suite must not survive it either.

Expected conditions (a timeout, a missing executable, a bad cwd) are values in the returned
``Outcome``, never exceptions.

Limits of the sweep: a process that re-execs itself with an environment stripped of the
marker, or that becomes another user / non-dumpable (its environ unreadable to us), escapes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from orchestrator.masking import mask_env

if TYPE_CHECKING:  # stdlib only at run time: the sandbox is handed in, never imported
    from orchestrator.sandbox import Sandbox

__all__ = [
    "MARKER_CHAIN_ENV",
    "MARKER_ENV",
    "ExecuteRequest",
    "Outcome",
    "find_marked",
    "group_alive",
    "kill_marked",
    "kill_process_group",
    "run",
]

MARKER_ENV = "ORCH_RUN_MARKER"
# Comma-separated markers of every enclosing run, then this run's (see _marker_chain).
MARKER_CHAIN_ENV = "ORCH_RUN_MARKER_CHAIN"
_MARKER_ENV_B = MARKER_ENV.encode()
_CHAIN_ENV_B = MARKER_CHAIN_ENV.encode()

# Reap loop tick: how quickly an exit, a cancel or the timeout is noticed.
_TICK_S = 0.01
# How often the caller's ``poll`` hook runs (it may do real work: stall detection, DB reads).
_POLL_HOOK_INTERVAL_S = 0.05
# Waiting for a signalled group to vanish: start fine-grained (kill latency is what the bench
# measures), back off to a cap so a TERM-ignoring group does not cost a busy core for `grace`.
_GONE_POLL_MIN_S = 0.001
_GONE_POLL_MAX_S = 0.01
# After SIGKILL a process normally dies in microseconds; one stuck in uninterruptible sleep
# (D state, e.g. a hung NFS read) may not. Bound the wait, then report uncertainty.
_KILL_CONFIRM_S = 2.0
# Bound on the /proc sweep for escaped processes.
_SWEEP_TIMEOUT_S = 2.0
# Bound on reaping our own child once its group is gone.
_REAP_TIMEOUT_S = 2.0

_PROC = Path("/proc")
# Above this, a sandboxed command's exit code is 128 + the signal that killed it.
_SIGNAL_EXIT = 128
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecuteRequest:
    """What to run, where, with which environment, and where its output goes."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    log_path: Path
    timeout_s: float | None = None
    grace_s: float = 5.0
    marker: str | None = None  # None -> a fresh uuid4 hex
    secret_names: frozenset[str] = frozenset()  # extra env names to mask in the log header
    # Run inside this sandbox (bubblewrap; the job is its PID namespace). None: bare.
    sandbox: Sandbox | None = None


@dataclass(frozen=True)
class Outcome:
    """What the process did. Times are ``time.time()`` epochs; durations in seconds."""

    exit_code: int | None  # None when killed by a signal (or never started)
    signal: int | None  # the signal that ended it, if any
    timed_out: bool
    cancelled: bool  # cancel event set, or the poll hook returned a stop reason
    signal_sent_by_us: bool  # we sent TERM/KILL to it (timeout, cancel, stop reason)
    duration_s: float
    started_at: float
    finished_at: float
    log_path: Path
    pid: int | None
    pgid: int | None
    marker: str
    termination_uncertain: bool  # something we tried to kill could not be confirmed dead
    start_error: str | None = None  # not started (e.g. executable not found)
    stop_reason: str | None = None  # "timeout after 1s", "cancelled", or the poll hook's reason
    swept: int = 0  # escaped processes killed by the marker sweep
    # From the moment we decided to stop it to the last marked process confirmed dead.
    kill_latency_s: float | None = None

    def __bool__(self) -> bool:
        """True when it exited 0 by itself and nothing abnormal happened."""
        return (
            self.exit_code == 0
            and self.signal is None
            and not self.timed_out
            and not self.cancelled
            and self.start_error is None
            and not self.termination_uncertain
        )


# --------------------------------------------------------------------------- /proc helpers


def _pids() -> Iterator[int]:
    """Every pid listed in /proc (threads are not listed at top level)."""
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _read_proc(pid: int, name: str) -> bytes | None:
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


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of ``pid`` from /proc/<pid>/stat, or None when it is gone."""
    raw = _read_proc(pid, "stat")
    if raw is None:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parens, so cut at the last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[2])
    except (IndexError, ValueError):
        return None


def _dead(pid: int) -> bool:
    """Gone, or a zombie. Zombies reparented to init are not ours to reap, and may linger
    forever when PID 1 does not reap (containers): they run no code, so they count as dead."""
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


def _has_marker(pid: int, marker: bytes) -> bool:
    """``pid``'s environment carries ``marker``, as its own run marker or in the chain."""
    environ = _read_proc(pid, "environ")
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


def _marker_chain(env: Mapping[str, str], marker: str) -> str:
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
    return sorted(pid for pid in _pids() if pid != me and _has_marker(pid, needle))


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


def _sweep(marker: str, timeout_s: float) -> tuple[list[int], list[int]]:
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
        pause = _GONE_POLL_MIN_S
        while not all(_dead(pid) for pid in found):
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, _GONE_POLL_MAX_S)
        if time.monotonic() >= deadline:
            survivors = find_marked(marker)
            return sorted(killed), survivors


def kill_marked(marker: str, *, timeout_s: float = 2.0) -> int:
    """SIGKILL every process carrying ``marker`` until none is left; how many were killed."""
    killed, survivors = _sweep(marker, timeout_s)
    if survivors:
        _log.warning(
            "marked processes survived SIGKILL: %s",
            survivors,
            extra={"action": "sweep", "marker": marker},
        )
    return len(killed)


# --------------------------------------------------------------------------- process groups


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
    if not _PROC.is_dir():
        return True
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid: int, timeout_s: float, reap: Callable[[], object] | None) -> bool:
    deadline = time.monotonic() + timeout_s
    pause = _GONE_POLL_MIN_S
    while True:
        if reap is not None:
            reap()  # our own child, once reaped, no longer counts as a (zombie) member
        if not group_alive(pgid):
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, _GONE_POLL_MAX_S)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> bool:
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
    return _terminate_group(pgid, grace_s)


# --------------------------------------------------------------------------- the log file


def _now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _log_line(log: BinaryIO, text: str) -> None:
    """Append one orchestrator line, on a line of its own even if the output did not end one."""
    log.flush()
    try:
        size = os.fstat(log.fileno()).st_size
        last = os.pread(log.fileno(), 1, size - 1) if size else b""
    except OSError:
        last = b""
    prefix = b"" if last in (b"", b"\n") else b"\n"
    log.write(prefix + f"[orchestrator] {text}\n".encode("utf-8", "backslashreplace"))
    log.flush()


def _write_header(
    log: BinaryIO, request: ExecuteRequest, env: Mapping[str, str], marker: str, at: float
) -> None:
    masked = mask_env(env, request.secret_names)
    lines = [
        f"===== orchestrator run {_now_iso(at)} =====",
        f"argv: {json.dumps(list(request.argv))}",
        f"cwd: {request.cwd}",
        f"sandbox: {_sandbox_line(request)}",
        f"marker: {MARKER_ENV}={marker}",
        f"timeout_s: {request.timeout_s} grace_s: {request.grace_s}",
        "env:",
        *(f"  {name}={masked[name]}" for name in sorted(masked)),
        "----- output -----",
    ]
    log.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))
    log.flush()


def _sandbox_line(request: ExecuteRequest) -> str:
    box = request.sandbox
    if box is None:
        return "off"
    wrapped = box.wrap(["..."], request.cwd)
    return json.dumps(wrapped[: wrapped.index("--")])


def _signal_name(sig: int | None) -> str:
    if sig is None:
        return "None"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


# --------------------------------------------------------------------------- run


class _ExitWaiter:
    """A wait that returns as soon as the child exits, or after the given seconds.

    On Linux a pidfd becomes readable the moment the child exits, so the exit is seen at
    once instead of on the next tick (about half a tick saved on every job). Elsewhere, or
    if the pidfd cannot be had, it is a plain sleep.
    """

    def __init__(self, pid: int) -> None:
        self._fd: int | None = None
        self._poller: select.poll | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None:
            return
        try:
            self._fd = pidfd_open(pid)
        except OSError:
            return
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def wait(self, seconds: float) -> None:
        if self._poller is None:
            time.sleep(seconds)
        else:
            self._poller.poll(max(0, int(seconds * 1000)))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _watch(
    proc: subprocess.Popen[bytes],
    timeout_s: float | None,
    cancel: threading.Event | None,
    poll: Callable[[], str | None] | None,
) -> tuple[str | None, bool]:
    """Wait for the child: (stop reason, timed out). (None, False) when it exited by itself."""
    start = time.monotonic()
    deadline = None if timeout_s is None else start + timeout_s
    next_hook = start + _POLL_HOOK_INTERVAL_S
    waiter = _ExitWaiter(proc.pid)
    try:
        # Exit is checked first on every turn: a child that finished just as the timeout
        # fired finished, and is not reported as timed out.
        while proc.poll() is None:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return "cancelled", False
            if deadline is not None and now >= deadline:
                return f"timeout after {timeout_s:g}s", True
            if poll is not None and now >= next_hook:
                reason = poll()
                if reason is not None:
                    return reason or "stopped by poll hook", False
                next_hook = time.monotonic() + _POLL_HOOK_INTERVAL_S
            wait = _TICK_S if deadline is None else max(min(_TICK_S, deadline - now), 0.0)
            # A cancel is seen within a tick; the child's exit at once.
            waiter.wait(wait)
        return None, False
    finally:
        waiter.close()


@dataclass
class _Cleanup:
    group_gone: bool = True
    killed: int = 0
    survivors: tuple[int, ...] = ()


def _clean_tree(pgid: int, marker: str, grace_s: float, reap: Callable[[], object]) -> _Cleanup:
    """Kill what is left of the group, then sweep escaped processes by their marker."""
    group_gone = _terminate_group(pgid, grace_s, reap)
    killed, survivors = _sweep(marker, _SWEEP_TIMEOUT_S)
    return _Cleanup(group_gone, len(killed), tuple(survivors))


def _stop_child_only(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Fallback without process groups: TERM the child, wait grace, KILL it."""
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=max(grace_s, 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()


def _missing(exe: str, path: str | None, cwd: Path) -> bool:
    """Whether ``exe`` names no executable file (looked up on ``path`` when it has no /,
    else relative to ``cwd``, where the command runs)."""
    found = str(cwd / exe) if os.sep in exe else shutil.which(exe, path=path)
    return found is None or not os.access(found, os.X_OK) or not Path(found).is_file()


def refuse(request: ExecuteRequest, error: str) -> Outcome:
    """A run that must not start (no sandbox where one is required): logged, not started."""
    now = time.time()
    try:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(request.log_path, "ab+") as log:
            _log_line(log, f"not started: {error}")
    except OSError:
        pass  # the outcome still says why; a log we cannot write is no reason to start
    return Outcome(
        exit_code=None,
        signal=None,
        timed_out=False,
        cancelled=False,
        signal_sent_by_us=False,
        duration_s=0.0,
        started_at=now,
        finished_at=now,
        log_path=request.log_path,
        pid=None,
        pgid=None,
        marker=request.marker or "",
        termination_uncertain=False,
        start_error=error,
    )


def run(
    request: ExecuteRequest,
    *,
    cancel: threading.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
    poll: Callable[[], str | None] | None = None,
    tree_kill: bool = True,
    sweep_on_exit: bool = True,
) -> Outcome:
    """Run ``request`` to its end, a timeout, a cancel or a stop reason; never leak a process.

    ``on_start(pid, pgid)`` is called right after the spawn. ``poll`` is called every ~50 ms;
    a non-None return is a stop reason, handled like a cancel and written to the log.
    ``tree_kill=False`` (or a non-POSIX OS) signals the direct child only: no group of its own
    (``on_start`` then gets the pid as pgid, ``Outcome.pgid`` is None), no sweep, and
    ``termination_uncertain`` whenever it had to be killed. ``sweep_on_exit=False`` leaves
    alone what a command that exited by itself started (a deploy that launches a service).
    A hook that raises, or KeyboardInterrupt, kills the tree and then propagates.
    """
    marker = request.marker or uuid.uuid4().hex
    env = {
        **request.env,
        MARKER_ENV: marker,
        MARKER_CHAIN_ENV: _marker_chain(request.env, marker),
    }
    use_tree = tree_kill and os.name == "posix"
    started_at = time.time()
    t0 = time.monotonic()

    def not_started(error: str) -> Outcome:
        finished_at = time.time()
        return Outcome(
            exit_code=None,
            signal=None,
            timed_out=False,
            cancelled=False,
            signal_sent_by_us=False,
            duration_s=time.monotonic() - t0,
            started_at=started_at,
            finished_at=finished_at,
            log_path=request.log_path,
            pid=None,
            pgid=None,
            marker=marker,
            termination_uncertain=False,
            start_error=error,
        )

    try:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append, so a retry adds to the same log; "+" so _log_line can read the last byte.
        log = open(request.log_path, "ab+")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        return not_started(f"cannot open log {request.log_path}: {exc}")
    try:
        _write_header(log, request, env, marker, started_at)
        error = None
        if isinstance(request.argv, str | bytes):
            # A str is a Sequence[str] too: list("pytest -q") would run "p". Never guess a split.
            error = "argv must be a list of arguments, not a string"
        elif not request.argv:
            error = "empty argv"
        elif not Path(request.cwd).is_dir():
            error = f"cwd is not a directory: {request.cwd}"
        elif request.sandbox is not None and _missing(
            request.argv[0], env.get("PATH"), Path(request.cwd)
        ):
            # Inside the sandbox bubblewrap would start and then fail to exec it: say so
            # here, as a bare start would, instead of a failed run of the command.
            error = f"FileNotFoundError: no executable {request.argv[0]!r}"
        proc: subprocess.Popen[bytes] | None = None
        if error is None:
            try:
                argv = list(request.argv)
                if request.sandbox is not None:
                    argv = request.sandbox.wrap(argv, Path(request.cwd))
                proc = subprocess.Popen(
                    argv,
                    cwd=request.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,  # a suite must never block on a terminal read
                    stdout=log,  # the child writes the file itself: no pipe to fill up
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    start_new_session=use_tree,
                )
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        if proc is None:
            _log_line(log, f"not started: {error}")
            return not_started(error or "not started")
        return _supervise(
            proc,
            request,
            log,
            marker=marker,
            use_tree=use_tree,
            started_at=started_at,
            t0=t0,
            cancel=cancel,
            on_start=on_start,
            poll=poll,
            sweep_on_exit=sweep_on_exit,
        )
    finally:
        log.close()


def _supervise(
    proc: subprocess.Popen[bytes],
    request: ExecuteRequest,
    log: BinaryIO,
    *,
    marker: str,
    use_tree: bool,
    started_at: float,
    t0: float,
    cancel: threading.Event | None,
    on_start: Callable[[int, int], None] | None,
    poll: Callable[[], str | None] | None,
    sweep_on_exit: bool,
) -> Outcome:
    # start_new_session makes the child a session and group leader: pgid == pid.
    pgid = proc.pid if use_tree else None
    stop_reason: str | None = None
    timed_out = False
    t_stop: float | None = None
    cleanup = _Cleanup()
    try:
        if on_start is not None:
            on_start(proc.pid, proc.pid if pgid is None else pgid)
        stop_reason, timed_out = _watch(proc, request.timeout_s, cancel, poll)
    except BaseException as exc:
        # KeyboardInterrupt, or a hook that raised: the child must not outlive this call.
        _log_line(log, f"interrupted ({type(exc).__name__}): killing the process tree")
        if pgid is not None:
            _clean_tree(pgid, marker, request.grace_s, proc.poll)
        else:
            _stop_child_only(proc, request.grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_REAP_TIMEOUT_S)
        raise

    if stop_reason is not None:
        t_stop = time.monotonic()
        how = f"process group {pgid}" if pgid is not None else f"pid {proc.pid} (no tree kill)"
        _log_line(
            log, f"stopping: {stop_reason}; SIGTERM to {how}, SIGKILL after {request.grace_s:g}s"
        )
        if pgid is not None:
            cleanup = _clean_tree(pgid, marker, request.grace_s, proc.poll)
        else:
            _stop_child_only(proc, request.grace_s)
    elif pgid is not None and sweep_on_exit:
        # Exited by itself: a daemon it left behind (in its group or escaped) must not survive.
        if group_alive(pgid):
            _log_line(log, f"exited, but process group {pgid} still has members: terminating")
        cleanup = _clean_tree(pgid, marker, request.grace_s, proc.poll)

    uncertain = not cleanup.group_gone or bool(cleanup.survivors)
    try:
        returncode: int | None = proc.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # stuck in D state even after SIGKILL
        returncode = None
        uncertain = True
    if stop_reason is not None and pgid is None:
        uncertain = True  # without a group we cannot know what its descendants did
    kill_latency = None if t_stop is None else time.monotonic() - t_stop

    if cleanup.killed:
        _log_line(log, f"swept {cleanup.killed} escaped process(es) carrying the run marker")
    if cleanup.survivors:
        _log_line(log, f"could not confirm dead: pids {list(cleanup.survivors)}")
    if not cleanup.group_gone:
        _log_line(log, f"could not confirm process group {pgid} dead after SIGKILL")

    exit_code = returncode if returncode is not None and returncode >= 0 else None
    sig = -returncode if returncode is not None and returncode < 0 else None
    if request.sandbox is not None and exit_code is not None and exit_code > _SIGNAL_EXIT:
        # bubblewrap reports a command killed by signal N as exit code 128 + N. Read as
        # the signal: a command that exits 137 by itself is then a tool error, never a
        # PASS (fail closed); a signal death read as an exit code could be a false green.
        sig = exit_code - _SIGNAL_EXIT
        exit_code = None
    finished_at = time.time()
    duration = time.monotonic() - t0
    outcome = Outcome(
        exit_code=exit_code,
        signal=sig,
        timed_out=timed_out,
        cancelled=stop_reason is not None and not timed_out,
        signal_sent_by_us=stop_reason is not None,
        duration_s=duration,
        started_at=started_at,
        finished_at=finished_at,
        log_path=request.log_path,
        pid=proc.pid,
        pgid=pgid,
        marker=marker,
        termination_uncertain=uncertain,
        stop_reason=stop_reason,
        swept=cleanup.killed,
        kill_latency_s=kill_latency,
    )
    _log_line(
        log,
        f"end: exit_code={exit_code} signal={_signal_name(sig)} timed_out={timed_out} "
        f"cancelled={outcome.cancelled} stop_reason={json.dumps(stop_reason)} "
        f"swept={cleanup.killed} termination_uncertain={uncertain} duration_s={duration:.3f}",
    )
    if uncertain:
        _log.warning(
            "termination uncertain for pid %s (marker %s)",
            proc.pid,
            marker,
            extra={"action": "tree-kill", "marker": marker},
        )
    return outcome
