"""Stall detection for LLM agent jobs, as a ``proc_group.run`` ``poll`` hook.

An agent that neither writes output nor changes a file for ``agent_stall_timeout_s`` is
stalled: a hung API call, a CLI waiting on something that will never come. The hook then
returns a stop reason starting with ``STALL_PREFIX``; proc_group tree-kills the job, and the
backend's parser maps that stop reason to the tool error ``timeout``.

Activity is: the job log grew, the (mtime, size, count) signature of the watched trees
changed, or one of the caller's extra signals changed its value (the spend meter's model
calls and tokens: an agent that only reads, with its CLI's own state outside the watched
trees, still shows it is working when each model answer counts). The scan is bounded and
cheap: it skips ``.git``, looks at no more than ``max_entries`` entries, and runs at most
every ``scan_interval_s``; the log size is one ``stat``. The clock is injectable, so tests
drive time without sleeping.

A stall while the agent waits on the model (``waiting_on_model``: its last request is not
answered) is the model server's, not the agent's: the stop reason then says so
(``MODEL_HANG``, after the ``STALL_PREFIX``), and ``model_hang`` tells it apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

STALL_PREFIX = "stalled:"
# In a stall's stop reason when the agent's last request to the model had no answer.
MODEL_HANG = "the model server did not answer the agent's last request"

# Directories never scanned: git's own bookkeeping changes when nothing real happens
# (index refreshes, gc), and it can be huge.
SKIP_DIRS = frozenset({".git"})
# A worktree with more entries than this is only partly watched (the first ones found): the
# log and those still show activity, and a scan stays a few milliseconds.
DEFAULT_MAX_ENTRIES = 20_000

Signature = tuple[int, int, int]


def tree_signature(roots: Iterable[Path], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> Signature:
    """(entries, newest mtime in ns, total file size) over ``roots``, skipping ``.git``.

    A created or deleted file changes the count, an edit the mtime or the size, and a rename
    the mtime of its directory (directories are counted too). Unreadable entries are skipped.
    """
    count = 0
    newest = 0
    total = 0
    stack = [str(r) for r in roots]
    while stack and count < max_entries:
        top = stack.pop()
        try:
            st = os.stat(top)
        except OSError:
            continue
        newest = max(newest, st.st_mtime_ns)
        count += 1
        try:
            entries = os.scandir(top)
        except OSError:  # a file given as a root, or a directory we may not read
            total += st.st_size
            continue
        with entries:
            for entry in entries:
                if count >= max_entries:
                    break
                if entry.name in SKIP_DIRS:
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                count += 1
                newest = max(newest, est.st_mtime_ns)
                total += est.st_size
    return count, newest, total


class StallDetector:
    """A ``poll`` hook: None while the agent shows activity, a stop reason once it stalls."""

    def __init__(
        self,
        log_path: Path,
        roots: Sequence[Path],
        timeout_s: float,
        *,
        scan_interval_s: float | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        activity: Sequence[Callable[[], object]] = (),
        waiting_on_model: Callable[[], bool] | None = None,
    ) -> None:
        """``activity``: extra signals, each a callable whose value changes when the agent
        does something (compared with ``!=``); ``waiting_on_model``: whether the agent's
        last request to the model is unanswered, asked when the detector fires."""
        self.log_path = log_path
        self.activity = tuple(activity)
        self.waiting_on_model = waiting_on_model
        self.roots = tuple(roots)
        self.timeout_s = timeout_s
        # Scan often enough to notice activity well within the timeout, never in a busy loop.
        self.scan_interval_s = (
            scan_interval_s if scan_interval_s is not None else min(max(timeout_s / 10, 0.2), 5.0)
        )
        self.max_entries = max_entries
        self._clock = clock
        now = clock()
        self._last_activity = now
        self._last_scan = now
        self._log_size = self._size()
        self._signature = tree_signature(self.roots, max_entries=max_entries)
        self._signals = self._read_signals()
        self.fired: str | None = None

    def _read_signals(self) -> tuple[object, ...]:
        return tuple(signal() for signal in self.activity)

    def _size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return -1

    def __call__(self) -> str | None:
        """Check for activity; the stop reason once nothing happened for ``timeout_s``."""
        now = self._clock()
        if now - self._last_scan < self.scan_interval_s:
            return None
        self._last_scan = now
        size = self._size()
        if size != self._log_size:
            self._log_size = size
            self._last_activity = now
            return None
        signals = self._read_signals()
        if signals != self._signals:
            self._signals = signals
            self._last_activity = now
            return None
        signature = tree_signature(self.roots, max_entries=self.max_entries)
        if signature != self._signature:
            self._signature = signature
            self._last_activity = now
            return None
        idle = now - self._last_activity
        if idle >= self.timeout_s:
            fired = f"{STALL_PREFIX} no output and no file change for {self.timeout_s:g}s"
            if self.waiting_on_model is not None and self.waiting_on_model():
                fired = f"{fired}: {MODEL_HANG}"
            self.fired = fired
            return self.fired
        return None


def is_stall(stop_reason: str | None) -> bool:
    """Whether a run's stop reason is the stall detector's."""
    return bool(stop_reason) and str(stop_reason).startswith(STALL_PREFIX)


def model_hang(stop_reason: str | None) -> bool:
    """Whether a run's stop reason is a stall while the model left its request unanswered
    (a model-API outage, not the agent's)."""
    return is_stall(stop_reason) and MODEL_HANG in str(stop_reason)
