"""The one schema, for SQLite and PostgreSQL alike (SQLAlchemy Core, no ORM).

Conventions that every table follows:

- Times are epoch seconds as floats, in columns named ``*_at``, and are always written from
  a ``now`` the caller passes: no server default reads a clock, so tests control time.
- JSON columns become JSONB on PostgreSQL; Python ``None`` is stored as SQL NULL, not as the
  JSON literal ``null``, so ``IS NULL`` means what it says.
- Closed vocabularies (states, outcomes, kinds) are CHECK constraints; the allowed values
  are the tuples below, and a test keeps them in step with ``orchestrator.domain``.

Changing anything here needs a migration in ``migrations/versions``; the schema-snapshot
test fails until there is one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

TASK_STATES = ("active", "deferred", "blocked", "done", "cancelled")
JOB_STATES = ("queued", "running", "finished")
JOB_OUTCOMES = ("completed", "timeout", "crashed", "lock-busy", "not-started")
VERDICTS = ("PASS", "FAIL")
FRESH_STARTS = ("carry", "patch")
TRANSITION_KINDS = (
    "create",
    "advance",
    "rollback",
    "defer",
    "block",
    "done",
    "cancel",
    "retry",
    "approve",
)
ALERT_SEVERITIES = ("info", "warning", "critical")
BACKEND_HEALTH = ("closed", "open", "credentials")
PULL_STATES = ("open", "merged", "closed")
PULL_EVENT_KINDS = ("opened", "merged", "check-failed", "changes-requested")

# Deterministic constraint names: Alembic's batch mode on SQLite can only drop or alter a
# constraint it can name, and the snapshot test compares names across both backends.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class JSON(sa.types.TypeDecorator[Any]):
    """JSON, JSONB on PostgreSQL; ``None`` is SQL NULL.

    What ``sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")``
    is (the migrations write it so), except that JSONB is looked up when a PostgreSQL
    connection first needs the type: a variant is an instance, made when the schema is,
    and importing PostgreSQL's dialect cost every SQLite command ~20 ms.

    Its strings are written as ``String`` writes one (see there): what no database can
    hold is written as U+FFFD. A lone surrogate SQLite kept before that (JSON escapes it)
    is read as U+FFFD too: every reader that writes it out (the CLI, the API) failed on it.
    """

    impl = sa.JSON
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(none_as_null=True)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return _writable(value) if _unwritable(value) else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return _writable(value) if _unwritable(value) else value

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(self.impl_instance)


# What no row may hold, in a text or a JSON column: a lone surrogate (what
# ``surrogateescape`` reads a byte that is not UTF-8 as), which UTF-8 cannot encode, and NUL,
# which PostgreSQL refuses in text and in JSONB.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(text: str) -> bool:
    # Two cheap looks first: most text is ASCII and holds no NUL.
    return "\x00" in text or (not text.isascii() and _UNSTORABLE.search(text) is not None)


def storable(text: str) -> str:
    """``text`` with each character no database column can hold (NUL, a lone surrogate)
    as U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text) if _unstorable(text) else text


class String(sa.types.TypeDecorator[str]):
    """``sa.String`` whose value is written as ``storable`` makes it.

    Any text column may hold what an agent wrote (a reason, a name, a message). A NUL or a
    lone surrogate in it made the row one neither database writes (PostgreSQL refuses NUL,
    both refuse a string UTF-8 cannot encode): a job's end that cannot be stored was tried
    again and again, and the task never moved. It is written with U+FFFD in its place, on
    both databases alike, here where every text value enters the store.
    """

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return storable(value) if isinstance(value, str) else value


class Text(String):
    """``sa.Text``, written as ``String`` writes its values."""

    impl = sa.Text
    cache_ok = True


def _unwritable(value: Any) -> bool:
    """Whether a JSON value holds a string (a key included) that no database can hold."""
    if isinstance(value, str):
        return _unstorable(value)
    if isinstance(value, dict):
        return any(_unwritable(k) or _unwritable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_unwritable(v) for v in value)
    return False


def _writable(value: Any) -> Any:
    """A JSON value with its strings (keys included) as ``storable`` makes them."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {_writable(k): _writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(v) for v in value]
    return value


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON, JSONB on PostgreSQL; ``None`` is SQL NULL."""
    return JSON()


class PartialIndex(sa.Index):
    """An index of the rows where ``where`` (SQL) holds, on SQLite and PostgreSQL alike.

    ``sa.Index(..., sqlite_where=text(where), postgresql_where=text(where))`` as the
    migrations write it, except that PostgreSQL's option is set when it is first asked for
    (its DDL, Alembic, a copy of the table): SQLAlchemy checks a ``postgresql_*`` argument
    against that dialect, and importing it cost every SQLite command ~15 ms.
    """

    def __init__(self, name: str, *columns: str, where: str, unique: bool = False) -> None:
        self.where_sql = where
        super().__init__(name, *columns, unique=unique, sqlite_where=sa.text(where))

    def _kw_reg_for_dialect_cls(self, dialect_name: str) -> Any:  # type: ignore[override]
        # What fills ``dialect_options[dialect_name]`` on first use (a classmethod of
        # SQLAlchemy's, called on the instance here): the dialect's defaults, and our WHERE.
        options = super()._kw_reg_for_dialect_cls(dialect_name)
        if dialect_name == "postgresql":
            options["where"] = sa.text(self.where_sql)
        return options

    @property
    def dialect_kwargs(self) -> Any:
        """Every dialect's options as passed (``postgresql_where`` too): what a copy
        (``Table.to_metadata``) passes on, so PostgreSQL's is filled in first."""
        self.dialect_options["postgresql"]  # looked up: filled in on first use
        return super().dialect_kwargs


def in_check(column: str, values: Sequence[str]) -> str:
    """The SQL of a CHECK that ``column`` holds one of ``values``."""
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


class Float(sa.types.TypeDecorator[float]):
    """``sa.Float`` that always reads back a Python float.

    SQLite's RETURNING hands back a REAL column's integral value (``1.0``) as the integer
    ``1``, before the column affinity applies; a plain SELECT would give ``1.0``.
    """

    impl = sa.Float
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        return None if value is None else float(value)


def time_column(name: str, *, nullable: bool = False) -> sa.Column[float]:
    """An epoch-seconds column, written by the caller's ``now``."""
    return sa.Column(name, Float(), nullable=nullable)


# The serial gate: at most one *running* job per serial key (a repo's serialized stages).
# The database enforces it, so two workers on two machines cannot both start a deploy.
SERIAL_GATE_WHERE = "state = 'running' AND serial_key IS NOT NULL"

repos = sa.Table(
    "repos",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", String(), nullable=False, unique=True),
    sa.Column("path", String(), nullable=False),
    sa.Column("main_branch", String(), nullable=False, server_default="main"),
    sa.Column("remote", String(), nullable=True),
    sa.Column("key_prefix", String(), nullable=False, unique=True),
    sa.Column("next_task_number", sa.Integer(), nullable=False, server_default=sa.text("1")),
    sa.Column("test_cmd", json_type(), nullable=True),
    sa.Column("staging_cmd", json_type(), nullable=True),
    sa.Column("deploy_cmd", json_type(), nullable=True),
    sa.Column("health_url", String(), nullable=True),
    sa.Column("stages", json_type(), nullable=False),
    sa.Column("agents", json_type(), nullable=False),
    sa.Column("agent_env", json_type(), nullable=False),
    sa.Column("options", json_type(), nullable=False),
    sa.Column("self_hosting", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The main the merge gate last put there: a main that does not descend from it was
    # rewound or rewritten by someone, and is never a base to build on.
    sa.Column("main_seen", String(), nullable=True),
    time_column("created_at"),
    time_column("updated_at"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("key", String(), nullable=False, unique=True),
    sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id"), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("title", String(), nullable=False),
    sa.Column("body", Text(), nullable=False),
    sa.Column("stage", String(), nullable=False),
    sa.Column("state", String(), nullable=False),
    sa.Column("reasons", json_type(), nullable=False),
    sa.Column("developer_retries", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("infra_retries", sa.Integer(), nullable=False, server_default=sa.text("0")),
    # Gate-only retries of this stage visit: the merge gate's own infra budget counts these.
    sa.Column("gate_retries", sa.Integer(), nullable=False, server_default=sa.text("0")),
    # "Name <email>" for the task's commit on main; NULL: the repo's configured git user.
    sa.Column("author", String(), nullable=True),
    time_column("created_at"),
    time_column("updated_at"),
    # Who asked for the task (a forge issue's author); NULL: filed by hand.
    sa.Column("requester", String(), nullable=True),
    # The forge issue the task was filed from (intake.py): its number and its web page.
    sa.Column("forge_issue", sa.Integer(), nullable=True),
    sa.Column("forge_url", String(), nullable=True),
    sa.UniqueConstraint("repo_id", "number"),
    sa.CheckConstraint(in_check("state", TASK_STATES), name="state"),
    sa.Index(None, "state", "stage"),
    sa.Index(None, "state", "updated_at"),
    # One task per issue of a repo: a poll and a webhook that both see an issue, or one
    # delivered twice, file it once (NULLs are distinct: hand-filed tasks are not limited).
    sa.Index("uq_tasks_repo_id_forge_issue", "repo_id", "forge_issue", unique=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("stage", String(), nullable=False),
    sa.Column("agent", String(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("state", String(), nullable=False),
    sa.Column("outcome", String(), nullable=True),
    sa.Column("verdict", String(), nullable=True),
    sa.Column("reasons", json_type(), nullable=False),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("pgid", sa.Integer(), nullable=True),
    sa.Column("host", String(), nullable=True),
    sa.Column("lease_owner", String(), nullable=True),
    time_column("lease_expires_at", nullable=True),
    sa.Column("not_before", Float(), nullable=False),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("serial_key", String(), nullable=True),
    sa.Column("log_path", String(), nullable=True),
    time_column("created_at"),
    time_column("started_at", nullable=True),
    time_column("finished_at", nullable=True),
    sa.Column("cost_usd", Float(), nullable=True),
    sa.Column("tokens_in", sa.Integer(), nullable=True),
    sa.Column("tokens_out", sa.Integer(), nullable=True),
    # A development attempt that starts from current main instead of the task branch:
    # "carry" re-offers the branch's old diff, "patch" applies the newest attached patch.
    sa.Column("fresh_start", String(), nullable=True),
    # {artifact name: SHA-256} of what the orchestrator recorded for this job: a runner's
    # verdict as the runner returned it, an agent's file as it was collected, a gate's
    # report as it wrote it. An artifact in the task folder that matches no job's record
    # was not written by this pipeline.
    sa.Column("artifacts", json_type(), nullable=True),
    # What a running LLM job may spend, reserved against the day budget at dispatch: the
    # running jobs' reservations are what the day budget has promised away.
    sa.Column("reserved_usd", Float(), nullable=True),
    sa.UniqueConstraint("task_id", "stage", "attempt"),
    sa.CheckConstraint(in_check("state", JOB_STATES), name="state"),
    sa.CheckConstraint(in_check("outcome", JOB_OUTCOMES), name="outcome"),
    sa.CheckConstraint(in_check("verdict", VERDICTS), name="verdict"),
    sa.CheckConstraint(in_check("fresh_start", FRESH_STARTS), name="fresh_start"),
    sa.Index(None, "state", "not_before"),
    sa.Index(None, "state", "task_id"),
    PartialIndex("uq_jobs_running_serial_key", "serial_key", unique=True, where=SERIAL_GATE_WHERE),
)

transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=True),
    sa.Column("kind", String(), nullable=False),
    sa.Column("from_stage", String(), nullable=True),
    sa.Column("to_stage", String(), nullable=True),
    sa.Column("from_state", String(), nullable=True),
    sa.Column("to_state", String(), nullable=True),
    sa.Column("reasons", json_type(), nullable=False),
    sa.Column("actor", String(), nullable=False),
    time_column("at"),
    sa.CheckConstraint(in_check("kind", TRANSITION_KINDS), name="kind"),
    sa.Index(None, "task_id"),
    sa.Index(None, "job_id"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=True),
    sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id"), nullable=True),
    sa.Column("kind", String(), nullable=False),
    sa.Column("severity", String(), nullable=False),
    sa.Column("message", Text(), nullable=False),
    sa.Column("reasons", json_type(), nullable=False),
    time_column("created_at"),
    time_column("delivered_at", nullable=True),
    sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    time_column("acknowledged_at", nullable=True),
    # Closed when the task moves on (retry, approve, cancel, done); while open, the same
    # kind for the same task updates this row instead of stacking a new one.
    time_column("resolved_at", nullable=True),
    sa.Column("occurrences", sa.Integer(), nullable=False, server_default=sa.text("1")),
    sa.CheckConstraint(in_check("severity", ALERT_SEVERITIES), name="severity"),
    sa.Index(None, "delivered_at"),
    sa.Index(None, "task_id", "kind", "resolved_at"),
)

# A task waits for these tasks to be done (their change on main) before its first job runs.
task_deps = sa.Table(
    "task_deps",
    metadata,
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("after_id", sa.Integer(), sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Index(None, "after_id"),
)

# Settings every worker on this database obeys, by key (e.g. "paused": the kill switch).
control = sa.Table(
    "control",
    metadata,
    sa.Column("key", String(), primary_key=True),
    sa.Column("value", json_type(), nullable=False),
    time_column("updated_at"),
)

# Each model backend's circuit breaker (domain.breaker): a row once a job of it has ended.
model_backends = sa.Table(
    "model_backends",
    metadata,
    sa.Column("name", String(), primary_key=True),
    sa.Column("health", String(), nullable=False),
    sa.Column("failures", sa.Integer(), nullable=False),
    time_column("opened_at", nullable=True),
    time_column("probe_at", nullable=True),
    sa.Column("probe_delay_s", Float(), nullable=True),
    sa.Column("probe_job_id", sa.Integer(), nullable=True),
    sa.Column("last_error", Text(), nullable=True),
    # The open alert of the outage (or the rejected credentials), resolved when it ends.
    sa.Column("alert_id", sa.Integer(), nullable=True),
    time_column("updated_at"),
    sa.CheckConstraint(in_check("health", BACKEND_HEALTH), name="health"),
)

# Live workers and their last heartbeat; a clean stop deletes the row.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", String(), primary_key=True),
    sa.Column("name", String(), nullable=False),
    sa.Column("host", String(), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    time_column("started_at"),
    time_column("heartbeat_at"),
    sa.Index(None, "heartbeat_at"),
)

# Webhook deliveries already taken, by the forge's delivery id (GitHub's X-GitHub-Delivery):
# a delivery sent again is acknowledged and not acted on twice.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", String(), primary_key=True),
    sa.Column("event", String(), nullable=False),
    time_column("received_at"),
)

# ---- the merge gate ----------------------------------------------------------------------

VALIDATED_TREE_SOURCES = ("test-runner", "merge-retest")
MERGE_STATUSES = ("MERGED", "CONFLICT", "RED", "INFRA")
MERGE_CLASSIFICATIONS = ("timeout", "red", "lock-busy", "other", "conflict")
MERGE_RETESTS = ("ran", "skipped", "none")

# Trees whose suite passed, per repo and test command: the merge gate skips its re-test
# when the tree it is about to put on main is one of them. Keyed by the tree, not the
# commit, so an equivalent rebase (another commit, the same tree) is recognised too.
validated_trees = sa.Table(
    "validated_trees",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id"), nullable=False),
    sa.Column("tree", String(), nullable=False),
    # A stable hash of the test command's argv (store.merges.cmd_key).
    sa.Column("test_cmd_key", String(), nullable=False),
    sa.Column("source", String(), nullable=False),
    time_column("at"),
    # The IDs of the tests that passed on the tree (JUnit ``classname::name``), sorted;
    # None when the run gave none (no JUnit report). On main's tree: the tests every task
    # branch must still collect, run and pass.
    sa.Column("passed_tests", json_type(), nullable=True),
    sa.UniqueConstraint("repo_id", "tree", "test_cmd_key"),
    sa.CheckConstraint(in_check("source", VALIDATED_TREE_SOURCES), name="source"),
)

# One row per run of the merge gate: what it decided and why. The merge counters are
# derived from these rows, so they survive restarts and add up across workers.
merge_results = sa.Table(
    "merge_results",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=True),
    sa.Column("status", String(), nullable=False),
    sa.Column("classification", String(), nullable=True),
    sa.Column("retest", String(), nullable=False),
    sa.Column("merged_sha", String(), nullable=True),
    sa.Column("rounds", sa.Integer(), nullable=False),
    sa.Column("reasons", json_type(), nullable=False),
    time_column("at"),
    sa.CheckConstraint(in_check("status", MERGE_STATUSES), name="status"),
    sa.CheckConstraint(in_check("classification", MERGE_CLASSIFICATIONS), name="classification"),
    sa.CheckConstraint(in_check("retest", MERGE_RETESTS), name="retest"),
    sa.Index(None, "task_id"),
    sa.Index(None, "job_id"),
)

# ---- pull requests (a repo that lands by pull request) -----------------------------------

# Each task's pull request as the landing last read it (``gates/pull_record.py``): what
# `orch task show`, the API and the dashboard show. One row per task: a pull request that
# replaces a closed one (another number) replaces its row; the events below keep the count.
pull_requests = sa.Table(
    "pull_requests",
    metadata,
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("url", String(), nullable=False),
    sa.Column("head_sha", String(), nullable=False),
    sa.Column("state", String(), nullable=False),
    # [{name, state, summary, required, details_url}] on head_sha: the required checks
    # first (one not reported yet is "expected"), then the others.
    sa.Column("checks", json_type(), nullable=False),
    # [{id, author, state, commit_sha}], oldest first.
    sa.Column("reviews", json_type(), nullable=False),
    # The commit the forge's merge made; NULL until merged.
    sa.Column("merged_sha", String(), nullable=True),
    # When the landing first read this pull request (this number), last read it, merged it.
    time_column("opened_at"),
    time_column("updated_at"),
    time_column("merged_at", nullable=True),
    sa.CheckConstraint(in_check("state", PULL_STATES), name="state"),
)

# What the landing saw happen to pull requests, each thing once: the /metrics counters.
# ``seen`` and ``name`` make an event one: "" and "" for opened and merged (once per pull
# request), the head SHA and the check's name for check-failed (once per head and check),
# the review's id and its author for changes-requested (once per review).
pull_events = sa.Table(
    "pull_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("kind", String(), nullable=False),
    sa.Column("seen", String(), nullable=False),
    sa.Column("name", String(), nullable=False),
    time_column("at"),
    sa.UniqueConstraint("task_id", "number", "kind", "seen", "name"),
    sa.CheckConstraint(in_check("kind", PULL_EVENT_KINDS), name="kind"),
)
