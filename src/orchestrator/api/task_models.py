"""A task's detail in the HTTP API: its history, jobs, spend, the tasks it waits for, and
its pull request as the landing last read it (``GET /tasks/{key}``).

Apart from ``models`` (the other bodies) so neither grows past what one reads at once; the
same base, so these too are built from the store's rows by name.
"""

from __future__ import annotations

from pydantic import Field

from orchestrator.api.models import Reasons, TaskOut, _Out


class DependencyOut(_Out):
    """A task this task waits for, and where it stands now."""

    key: str
    state: str


class TransitionOut(_Out):
    """One entry of a task's history, with the reasons for it."""

    kind: str
    from_stage: str | None
    to_stage: str | None
    from_state: str | None
    to_state: str | None
    reasons: Reasons
    actor: str
    at: float


class JobOut(_Out):
    """One run of one agent for the task."""

    id: int
    stage: str
    agent: str
    attempt: int
    state: str
    outcome: str | None
    verdict: str | None
    exit_code: int | None
    reasons: Reasons
    log_path: str | None
    started_at: float | None
    finished_at: float | None
    cost_usd: float | None = Field(description="What the job cost; null: it reported none.")
    tokens_in: int | None
    tokens_out: int | None


class SpendOut(_Out):
    """What a task's jobs cost so far, against its budget."""

    cost_usd: float = Field(description="The sum of its jobs' cost (none reported: 0).")
    tokens_in: int
    tokens_out: int
    jobs_with_cost: int
    budget_usd: float | None = Field(
        description="`ORCH_LLM_BUDGET_PER_TASK_USD`; null when it is 0 (no limit)."
    )


# ---- the pull request --------------------------------------------------------------------


class PullCheckOut(_Out):
    """One check on the pull request's head, as the landing read it."""

    name: str
    state: str = Field(
        description="`pending`, `success`, `failure`, or `expected`: required and not "
        "reported on this head yet."
    )
    summary: str = Field(description="What the check said (a status's description, a run's title).")
    required: bool = Field(
        description="Required by branch protection or the repo's `required_checks`."
    )
    details_url: str | None = Field(description="The check's own page, if it gave one.")


class PullReviewOut(_Out):
    """One submitted review, and whether it was given on the head read."""

    id: int
    author: str
    state: str = Field(description="`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`.")
    commit_sha: str = Field(description="The head it was given on.")
    on_head: bool = Field(
        description="Given on the head read: an approval counts only for the head it saw."
    )


class PullRequestOut(_Out):
    """The task's pull request (``land: pr``) as the landing last read it."""

    number: int
    url: str = Field(description="Its page on the forge.")
    state: str = Field(description="`open`, `merged` or `closed`.")
    head_sha: str = Field(description="The head its checks and reviews were read on.")
    merged_sha: str | None = Field(description="The commit the forge's merge made.")
    opened_at: float = Field(description="When the landing first read it.")
    updated_at: float = Field(description="When the landing last read it.")
    merged_at: float | None
    checks: list[PullCheckOut] = Field(
        description="The required checks first, in the order required, then the others."
    )
    reviews: list[PullReviewOut] = Field(description="Oldest first.")


class TaskDetailOut(TaskOut):
    """A task with its history, jobs and artifacts, as `orch task show --json` shows it."""

    body: str
    folder: str
    # The artifacts a job of this pipeline recorded exactly as they are; the others in the
    # folder (forged, or left by hand) are listed apart and never read by a gate.
    artifacts: list[str]
    not_written_by_pipeline: list[str] = Field(default_factory=list)
    history: list[TransitionOut]
    jobs: list[JobOut]
    spend: SpendOut
    after: list[DependencyOut] = Field(
        description="The tasks that must be done (their change on main) before it starts."
    )
    waiting_on: list[DependencyOut] = Field(
        description="Those of `after` not done yet, while the task is live: its jobs wait."
    )
    waiting: str | None = Field(
        description="`waiting on DEMO-1 (blocked)`, or null when nothing holds it back."
    )
    pull_request: PullRequestOut | None = Field(
        default=None,
        description="Its pull request as the landing last read it; null: none (yet).",
    )
