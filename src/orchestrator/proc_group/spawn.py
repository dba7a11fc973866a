"""``run``: spawn one command, watch it to its end, a timeout, a cancel or a stop reason, and
clean up after it; ``refuse``: log a run that must not start."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchestrator.private_files import open_private_log
from orchestrator.proc_group.groups import group_alive, terminate_group
from orchestrator.proc_group.request import ExecuteRequest, Outcome
from orchestrator.proc_group.runlog import log_line, signal_name, write_header
from orchestrator.proc_group.sweep import MARKER_CHAIN_ENV, MARKER_ENV, marker_chain, sweep

# Reap loop tick: how quickly an exit, a cancel or the timeout is noticed.
_TICK_S = 0.01
# How often the caller's ``poll`` hook runs (it may do real work: stall detection, DB reads).
_POLL_HOOK_INTERVAL_S = 0.05
# Bound on the /proc sweep for escaped processes.
_SWEEP_TIMEOUT_S = 2.0
# Bound on the wait for a sandbox's PID namespace to end after its command exited (its
# init follows at once); past it the namespace is cleaned up the long way.
_NAMESPACE_EXIT_S = 1.0
# Bound on reaping our own child once its group is gone.
_REAP_TIMEOUT_S = 2.0
# How much of what bubblewrap wrote is quoted when it failed to start the sandbox.
_BWRAP_MESSAGE_BYTES = 2000

# Above this, a sandboxed command's exit code is 128 + the signal that killed it.
_SIGNAL_EXIT = 128
# The package's logger, as before it was split: one name to filter its records on.
_log = logging.getLogger("orchestrator.proc_group")


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


@dataclass(frozen=True)
class _BwrapStatus:
    """What bubblewrap wrote to its status fd: the host pid of the sandbox's init, and the
    command's exit code, which ``--json-status-fd`` gets only once bubblewrap's setup
    finished and the command was started (None: it was not, or ``--info-fd``, which never
    says)."""

    child_pid: int | None = None
    exit_code: int | None = None


def _read_status(info: int) -> _BwrapStatus:
    """Everything bubblewrap wrote to ``info`` so far (all of it, once bubblewrap has exited):
    ``--info-fd``'s one JSON object, or ``--json-status-fd``'s JSON lines. Only bubblewrap
    writes there: the command inside never gets the fd. Anything unreadable says nothing."""
    chunks: list[bytes] = []
    try:
        os.set_blocking(info, False)
        while chunk := os.read(info, 65536):
            chunks.append(chunk)
    except OSError:
        pass  # EAGAIN: what was written so far is all there is
    text = b"".join(chunks).decode("utf-8", "replace")
    try:
        docs = [json.loads(text)]
    except ValueError:
        docs = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                docs.append(json.loads(line))
    child_pid = exit_code = None
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        pid, code = doc.get("child-pid"), doc.get("exit-code")
        if type(pid) is int:
            child_pid = pid
        if type(code) is int:
            exit_code = code
    return _BwrapStatus(child_pid, exit_code)


def _namespace_gone(init: int | None, timeout_s: float) -> bool:
    """Whether the sandbox's PID namespace is gone; ``init`` is its init's host pid, as
    bubblewrap wrote it to its status fd (``_read_status``).

    Every process a sandboxed command starts lives in the sandbox's PID namespace (none can
    leave it), and the kernel kills them all when the namespace's init exits, which it does
    when the command does; it reaps the init last, once the others are gone. So once the
    init has exited, nothing of the run is left, in the group or escaped from it, and the
    /proc scans of ``_clean_tree`` would find nothing: an exited (zombie) or reaped init
    is proof enough. The init's pid is bubblewrap's own word, written before the command
    started; the command cannot write to that fd. False (look the long way) when it cannot
    be told within ``timeout_s``.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if init is None or init <= 1 or pidfd_open is None:
        return False
    try:
        fd = pidfd_open(init)
    except ProcessLookupError:
        return True  # reaped already, so its namespace went before it
    except OSError:
        return False
    try:
        # A pidfd is readable once its process has exited. Had the pid been reaped and
        # reused meanwhile, this one would not exit in time: the long way, never a miss.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(fd)


def _bwrap_message(log: BinaryIO, offset: int) -> str:
    """What was written to the log from ``offset`` on, when the command never ran: only
    bubblewrap wrote it (its last lines, on one line, bounded)."""
    try:
        log.flush()
        log.seek(offset)
        text = log.read(_BWRAP_MESSAGE_BYTES + 1)[-_BWRAP_MESSAGE_BYTES:]
    except OSError:
        return "bubblewrap said nothing we could read"
    lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    return " / ".join(lines[-3:]) if lines else "bubblewrap said nothing"


def _clean_tree(pgid: int, marker: str, grace_s: float, reap: Callable[[], object]) -> _Cleanup:
    """Kill what is left of the group, then sweep escaped processes by their marker."""
    group_gone = terminate_group(pgid, grace_s, reap)
    killed, survivors = sweep(marker, _SWEEP_TIMEOUT_S)
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
        with open_private_log(request.log_path) as log:
            log_line(log, f"not started: {error}")
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
        MARKER_CHAIN_ENV: marker_chain(request.env, marker),
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
        # Append, so a retry adds to the same log; "+" so log_line can read the last byte.
        # The user's alone (0600): the command's output may quote what its environment holds.
        log = open_private_log(request.log_path)
    except OSError as exc:
        return not_started(f"cannot open log {request.log_path}: {exc}")
    # A sandboxed run says where its PID namespace's init is (see _namespace_gone).
    info_read: int | None = None
    info_write: int | None = None
    try:
        # The sandbox's options are worked out once per run: the header shows them and the
        # spawn runs them (its paths are looked at once, so both say the same).
        plan = None if request.sandbox is None else request.sandbox.plan(Path(request.cwd))
        write_header(
            log, request, env, marker, started_at, None if plan is None else plan.options()
        )
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
        # Where the command's output begins: what bubblewrap says if the sandbox fails.
        start_offset = log.tell()
        if error is None:
            try:
                argv = list(request.argv)
                if plan is not None:
                    # Always: bubblewrap's word on whether the command started (see
                    # _read_status), and where its namespace's init is.
                    info_read, info_write = os.pipe()
                    argv = plan.argv(argv, info_fd=info_write)
                proc = subprocess.Popen(
                    argv,
                    cwd=request.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,  # a suite must never block on a terminal read
                    stdout=log,  # the child writes the file itself: no pipe to fill up
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    pass_fds=() if info_write is None else (info_write,),
                    start_new_session=use_tree,
                )
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                if info_write is not None:
                    os.close(info_write)
        if proc is None:
            log_line(log, f"not started: {error}")
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
            info=info_read,
            start_offset=start_offset,
        )
    finally:
        log.close()
        if info_read is not None:
            os.close(info_read)


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
    info: int | None = None,
    start_offset: int = 0,
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
        log_line(log, f"interrupted ({type(exc).__name__}): killing the process tree")
        if pgid is not None:
            _clean_tree(pgid, marker, request.grace_s, proc.poll)
        else:
            _stop_child_only(proc, request.grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_REAP_TIMEOUT_S)
        raise

    start_error: str | None = None
    if stop_reason is not None:
        t_stop = time.monotonic()
        how = f"process group {pgid}" if pgid is not None else f"pid {proc.pid} (no tree kill)"
        log_line(
            log, f"stopping: {stop_reason}; SIGTERM to {how}, SIGKILL after {request.grace_s:g}s"
        )
        if pgid is not None:
            cleanup = _clean_tree(pgid, marker, request.grace_s, proc.poll)
        else:
            _stop_child_only(proc, request.grace_s)
    else:
        # Exited by itself: bubblewrap, if any, has written all it will.
        status = None if info is None else _read_status(info)
        if (
            status is not None
            and request.sandbox is not None
            and request.sandbox.json_status
            and status.exit_code is None
        ):
            # bubblewrap writes the command's exit code only once its setup finished and
            # the command was started: without it the exit is bubblewrap's own (a bind that
            # failed, a namespace it could not make), an infrastructure fault and never the
            # command's verdict. Told by the status fd, which the command cannot write to,
            # not by the log: a command can print "bwrap: ..." and exit 1 itself.
            start_error = f"sandbox failed to start: {_bwrap_message(log, start_offset)}"
            log_line(log, f"not started: {start_error}")
        if (
            pgid is not None
            and sweep_on_exit
            # In a sandbox, nothing is left once its PID namespace is gone: no /proc scan.
            and (status is None or not _namespace_gone(status.child_pid, _NAMESPACE_EXIT_S))
        ):
            # Exited by itself: a daemon it left behind (in its group or escaped) must not
            # survive.
            if group_alive(pgid):
                log_line(log, f"exited, but process group {pgid} still has members: terminating")
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
        log_line(log, f"swept {cleanup.killed} escaped process(es) carrying the run marker")
    if cleanup.survivors:
        log_line(log, f"could not confirm dead: pids {list(cleanup.survivors)}")
    if not cleanup.group_gone:
        log_line(log, f"could not confirm process group {pgid} dead after SIGKILL")

    exit_code = returncode if returncode is not None and returncode >= 0 else None
    sig = -returncode if returncode is not None and returncode < 0 else None
    if request.sandbox is not None and exit_code is not None and exit_code > _SIGNAL_EXIT:
        # bubblewrap reports a command killed by signal N as exit code 128 + N. Read as
        # the signal: a command that exits 137 by itself is then a tool error, never a
        # PASS (fail closed); a signal death read as an exit code could be a false green.
        sig = exit_code - _SIGNAL_EXIT
        exit_code = None
    if start_error is not None:
        exit_code = sig = None  # bubblewrap's own exit, not the command's
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
        start_error=start_error,
    )
    log_line(
        log,
        f"end: exit_code={exit_code} signal={signal_name(sig)} timed_out={timed_out} "
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
