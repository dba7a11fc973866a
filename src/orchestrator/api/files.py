"""Reading a task's files for the API: artifacts and job logs, never a path outside its folder.

Names are checked before any path is built (an artifact name must match the contract's
``ARTIFACT_NAME_RE``; a log path is derived from the job row, never taken from the request),
and the resolved path must still lie inside the task's folder, so a symlink an agent left
in the folder cannot point a reader at another file of the machine.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from orchestrator import taskdir
from orchestrator.domain import artifacts as A

# Bytes read from the end of a log for a tail: a suite may print megabytes.
TAIL_MAX_BYTES = 2_000_000
_BLOCK = 64 * 1024
# How often a follow looks at the file, and at the job's state.
FOLLOW_POLL_S = 0.25
FOLLOW_STATE_EVERY_S = 1.0
# A comment line now and then keeps proxies and clients from timing out a quiet stream.
FOLLOW_KEEPALIVE_S = 15.0


def inside(folder: Path, path: Path) -> Path | None:
    """``path`` resolved, when it is a regular file inside ``folder``; else None."""
    try:
        real = path.resolve(strict=True)
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def artifact_path(tasks_dir: Path, key: str, name: str) -> Path | None:
    """The artifact file ``name`` of task ``key``, if the name is a contract name and it exists."""
    if not A.ARTIFACT_NAME_RE.fullmatch(name):
        return None
    folder = taskdir.task_dir(tasks_dir, key)
    return inside(folder, folder / name)


def read_artifact(path: Path) -> str | None:
    """An artifact's text, cut at the size limit gates read (with a note when it is).

    None when it is no longer a regular file: ``path`` was checked by ``inside`` but may have
    been swapped since, for a FIFO (the bounded read never blocks) or a symlink.
    """
    try:
        raw, size = taskdir.read_bounded(path, taskdir.MAX_ARTIFACT_BYTES)
    except OSError:
        return None
    text = raw[: taskdir.MAX_ARTIFACT_BYTES].decode("utf-8", errors="replace")
    if len(raw) > taskdir.MAX_ARTIFACT_BYTES:
        text += f"\n[cut at {taskdir.MAX_ARTIFACT_BYTES} of {max(size, len(raw))} bytes]\n"
    return text


class JobLike(Protocol):
    """What names a job's log: a job row, or a job as the API shows it."""

    @property
    def id(self) -> int: ...
    @property
    def stage(self) -> str: ...
    @property
    def agent(self) -> str: ...


def job_log(tasks_dir: Path, key: str, job: JobLike) -> Path | None:
    """The job's log (``runs/<id>-<stage>-<agent>.log``), if it exists inside the task's folder.

    The path is derived from the job's fields the way the worker derives it, never read from
    the request (nor from ``jobs.log_path``, which a reader need not trust).
    """
    folder = taskdir.task_dir(tasks_dir, key)
    return inside(folder, taskdir.run_log_path(folder, job.id, job.stage, job.agent))


def tail(path: Path, lines: int, *, max_bytes: int = TAIL_MAX_BYTES) -> tuple[str, int]:
    """The last ``lines`` lines of a file, from its last ``max_bytes`` bytes or so, and its
    size when read (where a follow goes on)."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        start = size
        buf = b""
        # Read backwards block by block until there are enough newlines or the byte limit.
        while start > 0 and buf.count(b"\n") <= lines and size - start < max_bytes:
            step = min(_BLOCK, start, max_bytes - (size - start))
            start -= step
            fh.seek(start)
            buf = fh.read(step) + buf
    kept = buf.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return b"".join(kept).decode("utf-8", errors="replace"), size


def _sse(lines: list[str], event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    # One data field per line: a client joins them with newlines. A carriage return would
    # end a field early, so it goes.
    return head + "".join(f"data: {line.replace(chr(13), '')}\n" for line in lines) + "\n"


def follow(
    locate: Callable[[], Path | None],
    job_finished: Callable[[], str | None],
    *,
    lines: int,
    stop: threading.Event,
    max_s: float,
) -> Iterator[str]:
    """Server-sent events: the tail of a job's log, then each new line, until the job ends.

    ``locate`` gives the log file once it exists (a queued job has none yet);
    ``job_finished`` returns the job's end (``finished: <outcome>``) or None while it runs.
    The stream ends with an ``end`` event when the job has finished and its last output is
    sent, when ``stop`` is set (the server shuts down), or after ``max_s``.
    """
    deadline = time.monotonic() + max_s
    offset: int | None = None
    pending = b""
    last_sent = time.monotonic()
    last_state = 0.0
    ended: str | None = None
    while True:
        now = time.monotonic()
        if now - last_state >= FOLLOW_STATE_EVERY_S:
            # Read the state before the file: output written before the job finished is
            # then surely in the file when we read it below.
            ended = job_finished()
            last_state = now
        path = locate()
        if path is not None:
            if offset is None:
                text, offset = tail(path, lines)
                if text:
                    yield _sse(text.splitlines())
                    last_sent = now
            else:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(TAIL_MAX_BYTES)
                offset += len(chunk)
                pending += chunk
                complete, sep, rest = pending.rpartition(b"\n")
                if sep:
                    pending = rest
                    yield _sse(complete.decode("utf-8", errors="replace").split("\n"))
                    last_sent = now
                if len(chunk) == TAIL_MAX_BYTES:
                    continue  # more is waiting: no sleep
        if ended is not None:
            if pending:
                yield _sse([pending.decode("utf-8", errors="replace")])
            yield _sse([ended], event="end")
            return
        if stop.is_set() or now > deadline:
            yield _sse(["stream closed before the job finished"], event="end")
            return
        if now - last_sent >= FOLLOW_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = now
        time.sleep(FOLLOW_POLL_S)
