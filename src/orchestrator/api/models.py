"""Request and response bodies of the HTTP API, so ``/openapi.json`` says exactly what is sent.

Times are epoch seconds (floats), as in the database and in the CLI's ``--json`` output.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from orchestrator.store.spend import TOP_TASKS

SettingValue = str | int | float | bool | None
# A decision's reasons, as a list; a row's NULL reads as none.
Reasons = Annotated[list[str], BeforeValidator(lambda v: [] if v is None else v)]

# Some character that is not whitespace (a blank patch is no patch).
NOT_BLANK = r"\S"
# One line with something in it: no line breaks, not only blanks.
ONE_LINE = r"^[^\r\n]*\S[^\r\n]*$"


class _Out(BaseModel):
    # Built from the store's rows by name: Model.model_validate(row) (from_attributes).
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class _In(BaseModel):
    # An unknown field is a typo the caller wants to hear about (422), not silently dropped.
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    """Every error: one human-readable message, never a stack trace."""

    error: str = Field(description="What went wrong, for a human.")


# ---- health and status -------------------------------------------------------------------


class HealthOut(_Out):
    """Liveness: the process answers and the database is reachable."""

    status: str = Field(description="`ok`, or `unavailable` when the database is not.")
    database: str = Field(description="`ok`, or why the database could not be reached.")


class KillSwitches(_Out):
    """The switches that stop or reroute work."""

    paused: bool = Field(description="No new jobs are claimed (the setting or `orch pause`).")
    paused_by_setting: bool
    paused_in_db: bool
    test_runner_enabled: bool
    staging_runner_enabled: bool
    subprocess_tree_kill_enabled: bool
    merge_retest_skip_when_current_enabled: bool
    sandbox: str = Field(
        description="on (agents and suites run under bubblewrap), off (ORCH_SANDBOX=off: "
        "they run bare) or unavailable (on, but it cannot start: untrusted jobs are refused)."
    )
    sandbox_detail: str


class StageStateCount(_Out):
    """How many tasks stand at one (stage, state)."""

    stage: str
    state: str
    count: int


class TaskCounts(_Out):
    """Tasks by state and by (stage, state)."""

    total: int
    by_state: dict[str, int]
    by_stage_state: list[StageStateCount]


class TaskSpendOut(_Out):
    """A live task and what its jobs cost so far (what its per-task budget counts)."""

    key: str
    state: str
    cost_usd: float
    tokens_in: int
    tokens_out: int


class LlmSpend(_Out):
    """What LLM jobs cost: the sum of ``jobs.cost_usd`` (0 when none reported any)."""

    as_of: float = Field(description="When it was summed: at this request.")
    total_usd: float
    last_24h_usd: float = Field(
        description="Jobs that finished in the last 24 hours: what the day budget counts."
    )
    last_24h_tokens_in: int
    last_24h_tokens_out: int
    day_budget_usd: float | None = Field(
        description="`ORCH_LLM_BUDGET_PER_DAY_USD`; null when it is 0 (no limit)."
    )
    task_budget_usd: float | None = Field(
        description="`ORCH_LLM_BUDGET_PER_TASK_USD`; null when it is 0 (no limit)."
    )
    tokens_in: int
    tokens_out: int
    jobs_with_cost: int
    top_tasks: list[TaskSpendOut] = Field(
        description=f"The live tasks that spent most, most first (at most {TOP_TASKS}; "
        "none that spent nothing), each against `task_budget_usd`."
    )


class WorkerOut(_Out):
    """A worker process and its last heartbeat."""

    id: str
    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    heartbeat_age_s: float
    stale: bool = Field(description="No heartbeat for longer than a job lease.")


class BackendOut(_Out):
    """A model backend's circuit breaker (only backends that have run a job)."""

    name: str
    health: str = Field(
        description="closed (jobs run), open (paused by an outage: its jobs wait for a "
        "probe) or credentials (paused: 401/403; `orch backend resume NAME` after the fix)."
    )
    failures: int = Field(description="Outage failures in a row (probes failed, when open).")
    opened_at: float | None
    probe_at: float | None = Field(description="When a job may next run as the probe.")
    last_error: str | None


class SchedulerStateOut(_Out):
    """Whether jobs are being run, and why not (``store.reads.SchedulerState``)."""

    state: Literal["running", "paused", "not-running"] = Field(
        description="paused (by `paused_by`), else running or not-running."
    )
    paused_by: list[Literal["ORCH_PAUSED", "orch pause"]] = Field(
        description="What pauses claiming: the setting ORCH_PAUSED, the database's switch "
        "(`orch pause`, `POST /pause`), or both."
    )
    in_this_process: bool | None = Field(
        description="Whether a scheduler runs in this server's process (false under "
        "`orch serve --no-scheduler`)."
    )
    workers: int = Field(description="Workers with a heartbeat within a job lease, anywhere.")
    text: str = Field(description="The same, as the dashboard says it.")


class StatusOut(_Out):
    """The process, its settings (secrets masked) and the state of the work."""

    version: str
    started_at: float
    uptime_s: float
    now: float
    scheduler: bool = Field(description="Whether this process also runs a worker.")
    scheduler_state: SchedulerStateOut
    settings: dict[str, SettingValue] = Field(description="Every setting; secrets masked.")
    kill_switches: KillSwitches
    repos: list[str]
    tasks: TaskCounts
    llm_spend: LlmSpend
    backends: list[BackendOut] = Field(description="The model backends' circuit breakers.")
    workers: list[WorkerOut]
    serial_gate: dict[str, str | None] = Field(
        description="Per repo: the task holding its serial gate, or null."
    )
    alerts: int = Field(description="Open alerts: raised and not resolved yet.")


# ---- queue -------------------------------------------------------------------------------


class QueuedJobOut(_Out):
    """A job waiting to be claimed."""

    job: int
    task: str
    repo: str
    stage: str
    agent: str
    attempt: int
    not_before: float
    created_at: float
    waiting_s: float


class RunningJobOut(_Out):
    """A job being run by a worker."""

    job: int
    task: str
    repo: str
    stage: str
    agent: str
    attempt: int
    started_at: float | None
    elapsed_s: float
    host: str | None
    worker: str | None
    pid: int | None


class DeferredTaskOut(_Out):
    """A task waiting after infra trouble; its next attempt may start at ``not_before``."""

    task: str
    repo: str
    stage: str
    not_before: float | None = Field(description="When its retry may start (null: none queued).")
    infra_retries: int
    reasons: Reasons
    updated_at: float


class BlockedTaskOut(_Out):
    """A task that needs a human, and why."""

    task: str
    repo: str
    stage: str
    reasons: Reasons
    developer_retries: int
    infra_retries: int
    updated_at: float


class QueuedSection(_Out):
    """Queued jobs: how many, and the first ``limit`` in claim order."""

    count: int
    items: list[QueuedJobOut]


class RunningSection(_Out):
    """Running jobs: how many, and the longest-running ``limit``."""

    count: int
    items: list[RunningJobOut]


class DeferredSection(_Out):
    """Deferred tasks: how many, and the ``limit`` deferred most recently."""

    count: int
    items: list[DeferredTaskOut]


class BlockedSection(_Out):
    """Blocked tasks: how many, and the ``limit`` blocked most recently."""

    count: int
    items: list[BlockedTaskOut]


class FallbackCounters(_Out):
    """Finished jobs of a runner's stage that its LLM fallback did (runner off or out of scope)."""

    finished: int
    by_outcome: dict[str, int] = Field(description="By outcome (`none`: never ran).")
    by_verdict: dict[str, int] = Field(description="By the gates' verdict (`none`: no verdict).")


class RunnerCounters(_Out):
    """Jobs of one deterministic runner, counted from the database (``store.counters``)."""

    agent: str
    enabled: bool = Field(description="The runner's kill-switch.")
    repos: str = Field(description="The repos it serves (CSV, * for all).")
    jobs: int
    queued: int
    running: int
    finished: int = Field(description="Every finished job, its LLM fallback's included.")
    by_outcome: dict[str, int] = Field(
        description="Finished jobs the runner itself ran, by outcome (`none`: never ran)."
    )
    by_verdict: dict[str, int] = Field(
        description=(
            "Finished jobs the runner itself ran, by its own check's verdict: PASS, FAIL, "
            "SKIPPED (nothing to run: no staging command), `none` (no verdict). A merge gate "
            "that failed after a passing staging check is counted in `merge_gate_failed`."
        )
    )
    merge_gate_failed: int = Field(
        description="Jobs whose own check passed (PASS or SKIPPED) but the merge gate failed."
    )
    infra_retries: int = Field(
        description="Re-queues after a tool error of the runner's own process (DEFER)."
    )
    llm_fallback: FallbackCounters = Field(
        description="Jobs an LLM did instead of the runner; not in by_outcome or by_verdict."
    )


class QueueOut(_Out):
    """What waits, what runs, what is stuck, and the counters of the deterministic parts.

    Each list holds at most ``limit`` items (queued in claim order, running longest first,
    deferred and blocked newest first); ``count`` is always the full number.
    """

    now: float
    limit: int
    counters_as_of: float = Field(
        description="When the runner and merge counters were read: at this request."
    )
    queued: QueuedSection
    running: RunningSection
    deferred: DeferredSection
    blocked: BlockedSection
    serial_gate: dict[str, str | None] = Field(
        description="Per repo: the task holding its serial gate, or null."
    )
    test_runner: RunnerCounters
    staging_runner: RunnerCounters
    merge_gate: dict[str, int] = Field(description="The merge gate's counters (store.merges).")


# ---- tasks -------------------------------------------------------------------------------


class TaskOut(_Out):
    """A task, as `orch task list --json` shows it."""

    key: str
    repo: str
    title: str
    stage: str
    state: str
    reasons: Reasons
    developer_retries: int
    infra_retries: int
    author: str | None = Field(description="`Name <email>` for its commit on main, if given.")
    requester: str | None = Field(
        default=None, description="Who asked for it (a forge issue's author); null: by hand."
    )
    forge_issue: int | None = Field(
        default=None, description="The number of the forge issue it was filed from."
    )
    forge_url: str | None = Field(default=None, description="That issue's web page.")
    created_at: float
    updated_at: float


class NewTaskOut(TaskOut):
    """A task just filed, its folder, and the tasks it waits for."""

    folder: str
    after: list[str] = Field(description="Keys of the tasks that must be done first.")


class TaskIn(_In):
    """File a task."""

    repo: str = Field(min_length=1, max_length=64, description="A registered repo's name.")
    title: str = Field(min_length=1, max_length=200, pattern=ONE_LINE, description="One line.")
    body: str = Field(default="", max_length=200_000)
    patch: str | None = Field(
        default=None,
        min_length=1,
        max_length=5_000_000,
        pattern=NOT_BLANK,
        description="A patch for the `patch` developer to apply (unified diff text).",
    )
    after: list[Annotated[str, Field(max_length=40)]] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Keys of tasks (of any repo) that must be done, their change on main, before "
            "this task's first job starts."
        ),
    )
    author: str | None = Field(
        default=None,
        max_length=200,
        description="`Name <email>`: the author of the task's commit on main.",
    )


class CancelIn(_In):
    """Cancel a task."""

    reason: str = Field(default="", max_length=2000, description="Why, for the history.")


class RetryIn(_In):
    """Retry a blocked or deferred task."""

    patch: str | None = Field(
        default=None,
        min_length=1,
        max_length=5_000_000,
        pattern=NOT_BLANK,
        description="A new patch: back to development.",
    )
    fresh: bool = Field(
        default=False,
        description="Back to development on a worktree rebuilt from current main.",
    )


class ApproveIn(_In):
    """Complete a blocked stage by hand."""

    artifact: str | None = Field(
        default=None,
        max_length=1_000_000,
        description="The stage's artifact, written by a human; the stage's gates still run.",
    )


# ---- alerts and control ------------------------------------------------------------------


class AlertOut(_Out):
    """Something a human must see, as `orch alerts --json` shows it."""

    id: int
    kind: str
    severity: str
    message: str
    reasons: Reasons
    task: str | None
    created_at: float = Field(description="When it was first raised.")
    delivered_at: float | None
    delivery_attempts: int
    occurrences: int = Field(description="How often it was raised (one alert per task and kind).")
    resolved_at: float | None = Field(
        description="When the task moved on (retry, approve, cancel, done); null while open."
    )


class PausedOut(_Out):
    """The global kill switch after the change."""

    paused: bool
