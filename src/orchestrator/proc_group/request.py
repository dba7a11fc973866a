"""What a run is asked to do (``ExecuteRequest``) and what the process did (``Outcome``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # stdlib only at run time: the sandbox is handed in, never imported
    from orchestrator.sandbox import Sandbox


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
