"""The merge gate's rows: validated trees, merge results, and the counters derived from them.

Every function takes the caller's ``sa.Connection``; callers own transactions. Times come
from the caller's ``now``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.store.schema import alerts, merge_results, repos, transitions, validated_trees

# The alert the domain raises when a stage's infra budget is spent (stages.next_transition).
INFRA_BUDGET_ALERT = "infra-budget-exhausted"
# The name the merge gate's check is registered under; run_gates prefixes every reason of a
# check with it, so an alert raised on a merge-gate verdict quotes it.
MERGE_CHECK_NAME = "check_branch_mergeable"


@dataclass(frozen=True)
class ValidatedTreeRow:
    """A tree whose suite passed, for one repo and one test command."""

    id: int
    repo_id: int
    tree: str
    test_cmd_key: str
    source: str
    at: float
    # The IDs of the tests that passed on the tree, sorted; None when none were read.
    passed_tests: list[str] | None = None


@dataclass(frozen=True)
class MergeResultRow:
    """One run of the merge gate and what it decided."""

    id: int
    task_id: int
    job_id: int | None
    status: str
    classification: str | None
    retest: str
    merged_sha: str | None
    rounds: int
    reasons: list[str]
    at: float


def cmd_key(argv: Sequence[str]) -> str:
    """A stable key of a test command: sha256 of its argv as a JSON list."""
    text = json.dumps(list(argv), ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---- validated trees ---------------------------------------------------------------------


def find_validated_tree(
    conn: sa.Connection, *, repo_id: int, tree: str, cmd_key: str
) -> ValidatedTreeRow | None:
    """The record that ``tree`` passed ``cmd_key``'s suite in repo ``repo_id``, or None."""
    stmt = sa.select(validated_trees).where(
        validated_trees.c.repo_id == repo_id,
        validated_trees.c.tree == tree,
        validated_trees.c.test_cmd_key == cmd_key,
    )
    row = conn.execute(stmt).one_or_none()
    return None if row is None else ValidatedTreeRow(**row._mapping)


def record_validated_tree(
    conn: sa.Connection,
    *,
    repo_id: int,
    tree: str,
    cmd_key: str,
    source: str,
    now: float,
    passed_tests: Sequence[str] | None = None,
) -> bool:
    """Remember that ``tree`` passed; False when it was already known (the first record stays).

    Insert-if-absent, so two workers recording the same tree never fail each other's
    transaction on the unique key. ``passed_tests``: the IDs of the tests that passed (the
    baseline of branches that start from this tree); a record that has none yet gets them.
    """
    ids = None if passed_tests is None else sorted(set(passed_tests))
    values = {
        "repo_id": repo_id,
        "tree": tree,
        "test_cmd_key": cmd_key,
        "source": source,
        "at": now,
        "passed_tests": ids,
    }
    name = conn.dialect.name
    stmt: sa.Insert
    # Each dialect imported where it is used: PostgreSQL's cost a SQLite command ~15 ms.
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        stmt = postgresql.insert(validated_trees).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        from sqlalchemy.dialects import sqlite

        stmt = sqlite.insert(validated_trees).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - make_engine only opens the two backends above
        msg = f"unsupported database backend {name!r}"
        raise ValueError(msg)
    # RETURNING, not rowcount: with psycopg an INSERT that did nothing may still report 1.
    inserted = conn.execute(stmt.returning(validated_trees.c.id)).first() is not None
    if not inserted and ids is not None:
        conn.execute(
            sa.update(validated_trees)
            .where(
                validated_trees.c.repo_id == repo_id,
                validated_trees.c.tree == tree,
                validated_trees.c.test_cmd_key == cmd_key,
                validated_trees.c.passed_tests.is_(None),
            )
            .values(passed_tests=ids)
        )
    return inserted


# ---- merge results -----------------------------------------------------------------------


def insert_merge_result(
    conn: sa.Connection,
    *,
    task_id: int,
    status: str,
    retest: str,
    rounds: int,
    reasons: Iterable[str],
    now: float,
    job_id: int | None = None,
    classification: str | None = None,
    merged_sha: str | None = None,
) -> MergeResultRow:
    """Record one run of the merge gate."""
    stmt = (
        sa.insert(merge_results)
        .values(
            task_id=task_id,
            job_id=job_id,
            status=status,
            classification=classification,
            retest=retest,
            merged_sha=merged_sha,
            rounds=rounds,
            reasons=list(reasons),
            at=now,
        )
        .returning(*merge_results.c)
    )
    return MergeResultRow(**conn.execute(stmt).one()._mapping)


def list_merge_results(conn: sa.Connection, *, task_id: int | None = None) -> list[MergeResultRow]:
    """Merge results, oldest first; ``task_id`` keeps one task's."""
    stmt = sa.select(merge_results).order_by(merge_results.c.at, merge_results.c.id)
    if task_id is not None:
        stmt = stmt.where(merge_results.c.task_id == task_id)
    return [MergeResultRow(**r._mapping) for r in conn.execute(stmt)]


# ---- counters ----------------------------------------------------------------------------

COUNTER_NAMES = (
    "merged",
    "conflicts",
    "red",
    "infra",
    "timeouts",
    "lock_busy",
    "retests_skipped",
    "retests_run",
    "infra_retries",
    "alerts",
)


def reason_starts(column: sa.ColumnElement[Any], mark: str) -> sa.ColumnElement[bool]:
    """SQL: some element of the JSON list of strings ``column`` starts with ``mark``.

    Matched on the column's JSON text, where an element starts right after ``[`` or ``, ``
    with an unescaped quote: a quote inside a string is escaped (``\\"``), so text that
    merely quotes ``mark`` inside a reason does not match. Both backends print a list that
    way (SQLite stores json.dumps' text, PostgreSQL prints JSONB so). ``mark`` is plain text
    without quotes or backslashes.
    """
    if any(c in mark for c in '"\\') or not mark.isascii():
        msg = f"reason_starts: {mark!r} would not match as JSON text"
        raise ValueError(msg)
    text = sa.cast(column, sa.Text)
    opening = '"' + mark
    return sa.or_(
        text.startswith("[" + opening, autoescape=True),
        text.contains(", " + opening, autoescape=True),
    )


def merge_gate_ran(
    job_id: sa.ColumnElement[Any], reasons: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """SQL: the merge gate ran for this job (its check ran, so every check before it passed).

    By its ``merge_results`` row when the gate recorded the job's id, else by a reason of
    the job that run_gates prefixed with the check's name.
    """
    recorded = sa.select(merge_results.c.job_id).where(merge_results.c.job_id.is_not(None))
    return sa.or_(job_id.in_(recorded), reason_starts(reasons, f"{MERGE_CHECK_NAME}: "))


def merge_counters(
    conn: sa.Connection,
    *,
    results_where: sa.ColumnElement[bool] | None = None,
    transitions_where: sa.ColumnElement[bool] | None = None,
) -> dict[str, int]:
    """The merge gate's counters, derived from the database (ready for ``/queue``).

    ``results_where`` and ``transitions_where`` count only the merge results and the
    transitions they hold for (both tables only grow: the API adds the new rows to what it
    counted before instead of rescanning them, ``api/totals.py``); ``alerts`` is always
    counted whole (its rows change).

    - ``merged``, ``conflicts``, ``red``, ``infra``: results by status;
    - ``timeouts``, ``lock_busy``: results by classification (INFRA results);
    - ``retests_run``, ``retests_skipped``: results by whether the re-test ran;
    - ``infra_retries``: re-queues: DEFER transitions on a merge-gate verdict, each of which
      queued a gate-only retry. An INFRA result is not one when the budget was spent (the
      task was blocked instead) or the task was cancelled meanwhile;
    - ``alerts``: ``infra-budget-exhausted`` alerts raised on a merge-gate verdict, i.e.
      whose reasons quote ``check_branch_mergeable`` (run_gates prefixes each reason of a
      check with its name, and the domain copies a verdict's reasons into the transition
      and its alert), each occurrence counted. A budget spent by the staging suite itself
      is not counted.
    """
    m = merge_results.c
    new = sa.true() if results_where is None else results_where
    by_status = dict(
        conn.execute(sa.select(m.status, sa.func.count()).where(new).group_by(m.status))
        .tuples()
        .all()
    )
    by_class = dict(
        conn.execute(
            sa.select(m.classification, sa.func.count())
            .where(new, m.classification.is_not(None))
            .group_by(m.classification)
        )
        .tuples()
        .all()
    )
    by_retest = dict(
        conn.execute(sa.select(m.retest, sa.func.count()).where(new).group_by(m.retest))
        .tuples()
        .all()
    )
    t = transitions.c
    requeues = conn.execute(
        sa.select(sa.func.count())
        .select_from(transitions)
        .where(
            sa.true() if transitions_where is None else transitions_where,
            t.kind == "defer",
            merge_gate_ran(t.job_id, t.reasons),
        )
    ).scalar_one()
    alert_count = merge_gate_alerts(conn)
    return {
        "merged": int(by_status.get("MERGED", 0)),
        "conflicts": int(by_status.get("CONFLICT", 0)),
        "red": int(by_status.get("RED", 0)),
        "infra": int(by_status.get("INFRA", 0)),
        "timeouts": int(by_class.get("timeout", 0)),
        "lock_busy": int(by_class.get("lock-busy", 0)),
        "retests_skipped": int(by_retest.get("skipped", 0)),
        "retests_run": int(by_retest.get("ran", 0)),
        "infra_retries": int(requeues),
        "alerts": int(alert_count),
    }


def merge_gate_alerts(conn: sa.Connection) -> int:
    """``merge_counters``' ``alerts``: occurrences of the merge gate's budget alerts."""
    return int(conn.execute(_MERGE_GATE_ALERTS).scalar_one())


# Built once: read by every request for the counters (``api/totals.py``).
_MERGE_GATE_ALERTS = sa.select(sa.func.coalesce(sa.func.sum(alerts.c.occurrences), 0)).where(
    alerts.c.kind == INFRA_BUDGET_ALERT,
    reason_starts(alerts.c.reasons, f"{MERGE_CHECK_NAME}: "),
)


def record_main_seen(conn: sa.Connection, *, repo_id: int, sha: str) -> None:
    """The main the merge gate just made (or found already merged) for this repo."""
    conn.execute(sa.update(repos).where(repos.c.id == repo_id).values(main_seen=sha))
