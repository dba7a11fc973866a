"""The job contract: what the engine hands an agent backend, and what it gets back.

Both the engine (which claims, launches and applies jobs) and the agent backends (which
run one) speak it, so it lives below both: ``engine.launch`` builds a ``JobContext`` and
calls a backend; the backend returns a ``JobResult``. Nothing here decides anything.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.domain.faults import ApiFault
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.private_files import private_dir
from orchestrator.store.rows import JobRow, RepoRow, TaskRow

__all__ = ["JobContext", "JobResult", "job_marker", "job_out_dir"]


@dataclass(frozen=True)
class JobContext:
    """Everything ``launch_job`` needs about one claimed job."""

    job: JobRow
    task: TaskRow
    repo: RepoRow
    settings: Settings
    task_dir: Path
    log_path: Path
    cancel: threading.Event
    on_start: Callable[[int, int], None] | None = None
    # Why the previous attempt failed, for the next developer prompt (rollbacks).
    previous_failure: str | None = None
    # What this job may spend, set at dispatch for an LLM job (None: no limit): what is left
    # of the task's budget, and the job's cap (the task's left, within what the day budget
    # has left after the other running jobs' reservations). An LLM backend passes the first
    # to a CLI that caps itself and stops the job from outside once its streamed spend
    # reaches the cap.
    task_left_usd: float | None = None
    spend_cap_usd: float | None = None


@dataclass(frozen=True)
class JobResult:
    """What the job's process did (level one of the outcome)."""

    outcome: OutcomeKind
    reasons: list[str] = field(default_factory=list)
    exit_code: int | None = None
    worktree: Path | None = None
    awaiting_human: bool = False
    # Refused before dispatch: an LLM budget is spent (the task is blocked, not deferred).
    over_budget: bool = False
    # Refused before dispatch: untrusted code needs the sandbox and it cannot start here
    # (blocked with an alert naming the fix: waiting does not install bubblewrap).
    sandbox_missing: bool = False
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    # {artifact name: text} the job produced, as the orchestrator took it: a runner's
    # verdict as the runner returned it, an agent's artifact as it was collected from the
    # job's output folder. The gates read these, never the file a later writer may have
    # swapped.
    artifacts: Mapping[str, str] = field(default_factory=dict)
    # {artifact name: why not}: what the agent left that is no text a gate may read (moved
    # into the task folder as it is; the gate refuses it with that reason).
    refused_artifacts: Mapping[str, str] = field(default_factory=dict)
    # The test-runner's passing run: the IDs of the tests it passed, recorded with the tree.
    passed_tests: tuple[str, ...] | None = None
    # An LLM job: the model-API failure its CLI reported (the engine pauses the backend or
    # blocks the task by its kind, see domain.faults), and the model calls it made.
    api_fault: ApiFault | None = None
    model_calls: int | None = None
    # A development job whose commit, made by the orchestrator on main itself, is the
    # branch's whole change: that commit's summary, for the development gate (which then
    # runs no git diff of its own). None: the gate asks git.
    branch_diff: str | None = None


def job_marker(job: JobRow) -> str:
    """The env marker of a job's processes, derivable from its row after a crash."""
    started = int((job.started_at or 0) * 1000)
    return f"orch-job-{job.id}-{job.attempt}-{started}"


def job_out_dir(ctx: JobContext) -> Path:
    """``runs/<job>-out``: where an agent writes its artifact (``ORCH_ARTIFACT_DIR``), made
    empty for the job. The task folder itself is not the agent's to write."""
    out = ctx.task_dir / "runs" / f"{ctx.job.id}-out"
    if out.exists():
        shutil.rmtree(out)
    private_dir(out)
    return out
