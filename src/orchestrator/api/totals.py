"""The history's totals (runner and merge counters, LLM spend), current at every request.

They add up every job, merge result and transition ever recorded: on 100,000 jobs a scan
of ~150 ms on SQLite. Recomputed every few seconds in a background thread, that scan held
the interpreter and spiked ``/queue`` to hundreds of milliseconds. ``Totals`` instead keeps
what it has counted (the *folded* part) and each request counts only what is new since:

- jobs: a finished job's counted columns never change again (every update of them is
  guarded by state queued or running, ``store.jobs``; its defer transitions are written
  with its end). The folded part holds the finished jobs up to id ``job_after`` except
  ``pending``, those queued or running when they were folded; a request counts the jobs
  past ``job_after`` and the pending ones (primary-key reads);
- merge results and transitions only grow: folded up to an id, counted past it;
- the merge gate's alert count is read whole (few rows, and they change).

The request that finds a fold due (every ``FOLD_EVERY_S``) moves what is new into the
folded part: a read of the rows since the last fold, never a rescan. On PostgreSQL it
folds only up to the newest row older than ``COMMIT_MARGIN_S``: ids are handed out before
commit, so a row with a smaller id than a young one may still appear until its
transaction ends; below a row older than any transaction, none can. (SQLite's one writer
commits ids in order.) Only the first request of the process counts the whole history.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from orchestrator.domain.stages import STAGING_RUNNER, TEST_RUNNER
from orchestrator.store import counters, merges
from orchestrator.store import reads as store_reads
from orchestrator.store.counters import RunnerTally, Tally
from orchestrator.store.reads import IDS_PER_STATEMENT
from orchestrator.store.schema import jobs, merge_results, transitions
from orchestrator.store.spend import DAY_S, TOP_TASKS, Spend, TaskSpend

__all__ = ["COMMIT_MARGIN_S", "FOLD_EVERY_S", "Counters", "Snapshot", "Totals"]

RUNNERS = (TEST_RUNNER, STAGING_RUNNER)
FOLD_EVERY_S = 2.0
# Longer than any transaction that writes a job, a transition or a merge result. SQLite
# needs none: its one writer at a time commits ids in order.
COMMIT_MARGIN_S = 30.0
# Tasks looked up in the first round trip when ranking the live ones by spend (each next
# round trip looks up four times as many).
_RANK_BATCH = 32
_J = jobs.c
_ZERO = Spend(0.0, 0, 0, 0)


@dataclass(frozen=True)
class Counters:
    """The runners' and the merge gate's counters, and when they were read."""

    runners: dict[str, RunnerTally]
    merge_gate: dict[str, int]
    as_of: float


def _add_spend(a: Spend, usd: float, tin: int, tout: int, n: int = 1) -> Spend:
    return Spend(a.cost_usd + usd, a.tokens_in + tin, a.tokens_out + tout, a.jobs_with_cost + n)


def _add_tally(into: Tally, other: Tally) -> None:
    into.finished += other.finished
    for k, n in other.by_outcome.items():
        into.by_outcome[k] = into.by_outcome.get(k, 0) + n
    for k, n in other.by_verdict.items():
        into.by_verdict[k] = into.by_verdict.get(k, 0) + n


def add_runner_tallies(
    a: dict[str, RunnerTally], b: dict[str, RunnerTally]
) -> dict[str, RunnerTally]:
    """``a + b``, runner by runner: new tallies, neither argument changed."""
    out: dict[str, RunnerTally] = {}
    for name in a.keys() | b.keys():
        t = RunnerTally()
        for part in (a.get(name), b.get(name)):
            if part is None:
                continue
            t.jobs += part.jobs
            t.queued += part.queued
            t.running += part.running
            t.finished += part.finished
            t.merge_gate_failed += part.merge_gate_failed
            t.infra_retries += part.infra_retries
            _add_tally(t.own, part.own)
            _add_tally(t.llm_fallback, part.llm_fallback)
        out[name] = t
    return out


@dataclass(frozen=True)
class DayWindow:
    """Folded jobs' spend by the time they finished, sorted, with running sums: the spend
    since any moment is a bisection and a subtraction."""

    times: list[float] = field(default_factory=list)
    # sums[i]: the spend of the jobs before times[i] (sums[0] is zero).
    sums: list[Spend] = field(default_factory=lambda: [_ZERO])

    def since(self, at: float) -> Spend:
        """The spend of the folded jobs that finished at or after ``at``."""
        i = bisect.bisect_left(self.times, at)
        last, first = self.sums[-1], self.sums[i]
        return Spend(
            last.cost_usd - first.cost_usd,
            last.tokens_in - first.tokens_in,
            last.tokens_out - first.tokens_out,
            last.jobs_with_cost - first.jobs_with_cost,
        )

    def plus(self, rows: Iterable[tuple[float, float, int, int]], keep_after: float) -> DayWindow:
        """With ``rows`` (finished_at, usd, tokens in, out) added. What finished before
        ``keep_after`` (no day window reaches back that far again) is dropped once it is
        half the list, so most folds only append."""
        new = sorted(r for r in rows if r[0] >= keep_after)
        start = bisect.bisect_left(self.times, keep_after)
        prune = start > len(self.times) // 2
        if not new and not prune:
            return self
        if not prune and (not self.times or new[0][0] >= self.times[-1]):
            # The usual case: jobs finish in time order, so the new ones go at the end.
            times, sums = list(self.times), list(self.sums)
        else:
            first = start if prune else 0
            kept = [
                (
                    at,
                    s.cost_usd - p.cost_usd,
                    s.tokens_in - p.tokens_in,
                    s.tokens_out - p.tokens_out,
                )
                for at, p, s in zip(
                    self.times[first:], self.sums[first:-1], self.sums[first + 1 :], strict=True
                )
            ]
            new = sorted(kept + new)
            times, sums = [], [_ZERO]
        for at, usd, tin, tout in new:
            times.append(at)
            sums.append(_add_spend(sums[-1], usd, tin, tout))
        return DayWindow(times, sums)


@dataclass(frozen=True)
class Folded:
    """What is counted already, and where each table's count stops."""

    at: float = 0.0
    job_after: int = 0
    # The jobs up to job_after that were queued or running when folded, by agent.
    pending: dict[int, str] = field(default_factory=dict)
    # How many of them are each runner's.
    pending_runners: dict[str, int] = field(default_factory=dict)
    results_after: int = 0
    transitions_after: int = 0
    runners: dict[str, RunnerTally] = field(default_factory=dict)
    merge_gate: dict[str, int] = field(default_factory=dict)
    spend: Spend = _ZERO
    by_task: dict[int, Spend] = field(default_factory=dict)
    # Task ids by spend, most first (ties: lower id first); only those that spent > 0.
    ranked: tuple[int, ...] = ()
    day: DayWindow = field(default_factory=DayWindow)

    def unfolded(self, conn: sa.Connection) -> Unfolded:
        """The jobs not counted here: new since, or pending (queued or running then)."""
        now_at = store_reads.marks(conn, self.job_after)
        parts = [_J.id > self.job_after] if now_at.jobs > self.job_after else []
        # Every job up to job_after still queued or running is pending (a finished job
        # never runs again): while as many are as are pending, none has finished.
        done: set[int] = set()
        if now_at.unfinished < len(self.pending):
            # A pending job no longer queued or running has finished (and stays so).
            done = self.pending.keys() - store_reads.unfinished_job_ids(conn, self.job_after)
            parts += _among(done)
        new_rows = (
            now_at.merge_results > self.results_after or now_at.transitions > self.transitions_after
        )
        return Unfolded(parts, frozenset(done), new_rows)

    def live_runners(self, conn: sa.Connection, done: frozenset[int]) -> dict[str, RunnerTally]:
        """The runner counts of the pending jobs still queued or running, ``done`` aside
        (those of them that finished since the fold), as ``runner_counters`` counts a job
        not finished. Read only by the counters: the spend has no use for them."""
        running = store_reads.running_job_ids(conn, self.job_after)
        # Their agent never changes; a queued or running job has no cost yet
        # (store.jobs.finish writes it with the job's end).
        live = {name: RunnerTally(jobs=self.pending_runners.get(name, 0)) for name in RUNNERS}
        for job_id in done:
            if self.pending[job_id] in live:
                live[self.pending[job_id]].jobs -= 1
        for job_id in running:
            if self.pending.get(job_id) in live:
                live[self.pending[job_id]].running += 1
        for tally in live.values():
            tally.queued = tally.jobs - tally.running
        return live


@dataclass(frozen=True)
class Unfolded:
    """Jobs not folded yet: ``parts`` (SQL, disjoint, each read by its primary key);
    ``done``: the pending jobs that finished since the fold; ``new_rows``: merge results
    or transitions arrived since the fold."""

    parts: list[sa.ColumnElement[bool]]
    done: frozenset[int] = frozenset()
    new_rows: bool = True

    def runners(self, conn: sa.Connection) -> dict[str, RunnerTally]:
        """Their runner counters: ``runner_counters``' for each part."""
        out: dict[str, RunnerTally] = {}
        for where in self.parts:
            out = add_runner_tallies(out, counters.runner_counters(conn, RUNNERS, where))
        return out

    def costs(self, conn: sa.Connection) -> list[tuple[int, float | None, float, int, int]]:
        """Their ``cost_rows``: (task_id, finished_at, usd, tokens in, tokens out)."""
        return [
            (int(r[0]), r[1], float(r[2]), int(r[3]), int(r[4]))
            for where in self.parts
            for r in store_reads.cost_rows(conn, where)
        ]


def _among(ids: Iterable[int]) -> list[sa.ColumnElement[bool]]:
    """``id IN ids`` as disjoint parts, each binding at most ``IDS_PER_STATEMENT`` ids."""
    return [_J.id.in_(batch) for batch in store_reads.id_batches(ids)]


def _between_but(after: int, upto: int, but: Sequence[int]) -> list[sa.ColumnElement[bool]]:
    """The ids in (``after``, ``upto``] save ``but`` (sorted, each in that range), as
    disjoint parts each binding at most ``IDS_PER_STATEMENT`` of ``but``: the range is cut
    after each batch's last id."""
    n = IDS_PER_STATEMENT
    parts: list[sa.ColumnElement[bool]] = []
    low = after
    for i in range(0, len(but), n):
        batch = but[i : i + n]
        high = batch[-1] if i + n < len(but) else upto
        parts.append(sa.and_(_J.id > low, _J.id <= high, _J.id.not_in(batch)))
        low = high
    return parts or [sa.and_(_J.id > after, _J.id <= upto)]


def _count_by_runner(pending: dict[int, str]) -> dict[str, int]:
    """How many of the ``pending`` jobs (id -> agent) each runner has."""
    return {n: sum(1 for a in pending.values() if a == n) for n in RUNNERS}


def safe_after(marks: Sequence[Any], after: int, cut: float) -> int:
    """The greatest id among ``marks`` (id, time, ...) whose time is before ``cut``."""
    for row in reversed(marks):
        if row[1] is not None and row[1] < cut:
            return max(after, int(row[0]))
    return after


def fold(conn: sa.Connection, old: Folded, now: float) -> Folded:
    """``old`` with the rows since moved in (see the module's docstring)."""
    cut = now - (COMMIT_MARGIN_S if conn.dialect.name != "sqlite" else 0.0)
    ends = store_reads.marks(conn, old.job_after)
    new_jobs = ends.jobs > old.job_after
    new_rows = ends.merge_results > old.results_after or ends.transitions > old.transitions_after
    # As many unfinished as pending: none of the pending jobs has finished (see unfolded).
    none_done = ends.unfinished == len(old.pending)
    if not (new_jobs or new_rows) and none_done:
        return replace(old, at=now)
    marks = store_reads.job_marks(conn, old.job_after) if new_jobs else []
    job_after = safe_after(marks, old.job_after, cut)
    unfinished_new = {
        int(m.id): str(m.agent) for m in marks if m.id <= job_after and m.state != "finished"
    }
    still = set(old.pending) if none_done else store_reads.unfinished_job_ids(conn, old.job_after)
    # Finished jobs only, each by id: a job that finished after ``marks`` (or ``still``)
    # was read waits in ``pending`` for the next fold, so nothing is counted twice.
    moved = Unfolded([])
    if job_after > old.job_after:
        moved.parts.extend(_between_but(old.job_after, job_after, sorted(unfinished_new)))
    moved.parts.extend(_among(old.pending.keys() - still))
    runners = add_runner_tallies(old.runners, moved.runners(conn))

    spend, by_task = old.spend, dict(old.by_task)
    day_rows = []
    cost_rows = moved.costs(conn)
    for task_id, finished_at, usd, tin, tout in cost_rows:
        spend = _add_spend(spend, usd, tin, tout)
        by_task[task_id] = _add_spend(by_task.get(task_id, _ZERO), usd, tin, tout)
        if finished_at is not None:
            day_rows.append((float(finished_at), usd, tin, tout))
    ranked = old.ranked
    if cost_rows:
        spent = (i for i, s in by_task.items() if s.cost_usd > 0)
        ranked = tuple(sorted(spent, key=lambda i: (-by_task[i].cost_usd, i)))
    pending = {i: a for i, a in old.pending.items() if i in still}
    pending.update(unfinished_new)

    if not new_rows:
        return replace(
            old,
            at=now,
            job_after=job_after,
            pending=pending,
            pending_runners=_count_by_runner(pending),
            runners=runners,
            spend=spend,
            by_task=by_task,
            ranked=ranked,
            day=old.day.plus(day_rows, keep_after=now - DAY_S - COMMIT_MARGIN_S),
        )
    r_marks = store_reads.row_marks(conn, merge_results, old.results_after)
    results_after = safe_after(r_marks, old.results_after, cut)
    t_marks = store_reads.row_marks(conn, transitions, old.transitions_after)
    transitions_after = safe_after(t_marks, old.transitions_after, cut)
    m, t = merge_results.c, transitions.c
    gate = merges.merge_counters(
        conn,
        results_where=sa.and_(m.id > old.results_after, m.id <= results_after),
        transitions_where=sa.and_(t.id > old.transitions_after, t.id <= transitions_after),
    )
    gate["alerts"] = 0  # read whole by every request
    return Folded(
        at=now,
        job_after=job_after,
        pending=pending,
        pending_runners=_count_by_runner(pending),
        results_after=results_after,
        transitions_after=transitions_after,
        runners=runners,
        merge_gate={k: old.merge_gate.get(k, 0) + gate.get(k, 0) for k in merges.COUNTER_NAMES},
        spend=spend,
        by_task=by_task,
        ranked=ranked,
        day=old.day.plus(day_rows, keep_after=now - DAY_S - COMMIT_MARGIN_S),
    )


class Totals:
    """The totals of one API process: folded part shared, the rest read per request."""

    def __init__(self) -> None:
        self._folded: Folded | None = None
        self._lock = threading.Lock()
        # One fold at a time; a request that finds one under way counts from the old part.
        self._folding = threading.Lock()

    def folded(self, conn: sa.Connection, now: float) -> Folded:
        """The folded part, folded first when it is due (or never was)."""
        with self._lock:
            current = self._folded
        if current is not None and now - current.at < FOLD_EVERY_S:
            return current
        if current is not None and not self._folding.acquire(blocking=False):
            return current
        if current is None:
            self._folding.acquire()
        try:
            with self._lock:
                current = self._folded
            if current is None or now - current.at >= FOLD_EVERY_S:
                current = fold(conn, current or Folded(), now)
                with self._lock:
                    self._folded = current
            return current
        finally:
            self._folding.release()

    def snapshot(self, conn: sa.Connection, now: float | None = None) -> Snapshot:
        """The folded part and the jobs not in it, read once: a request that shows both
        the counters and the spend (the dashboard) reads the unfolded jobs once for both."""
        now = time.time() if now is None else now
        f = self.folded(conn, now)
        return Snapshot(f, f.unfolded(conn), now)

    def counters(self, conn: sa.Connection, now: float | None = None) -> Counters:
        """The runner and merge-gate counters as of now."""
        return self.snapshot(conn, now).counters(conn)

    def spend(self, conn: sa.Connection, now: float) -> tuple[Spend, Spend, list[TaskSpend]]:
        """Every job's spend, the spend of the jobs that finished since ``now - DAY_S``,
        and the live tasks that spent most (as ``store.spend`` defines each)."""
        return self.snapshot(conn, now).spend(conn)


@dataclass(frozen=True)
class Snapshot:
    """The totals of one request: the folded part, and the jobs not folded (``tail``) as
    read at ``now``; the counters and the spend both count from these."""

    folded: Folded
    tail: Unfolded
    now: float

    def counters(self, conn: sa.Connection) -> Counters:
        """The runner and merge-gate counters."""
        f, tail = self.folded, self.tail
        fresh = add_runner_tallies(f.live_runners(conn, tail.done), tail.runners(conn))
        m, t = merge_results.c, transitions.c
        if tail.new_rows:
            gate = merges.merge_counters(
                conn,
                results_where=m.id > f.results_after,
                transitions_where=t.id > f.transitions_after,
            )
        else:
            gate = {"alerts": merges.merge_gate_alerts(conn)}
        return Counters(
            runners=add_runner_tallies(f.runners, fresh),
            merge_gate={k: f.merge_gate.get(k, 0) + gate.get(k, 0) for k in merges.COUNTER_NAMES},
            as_of=self.now,
        )

    def spend(self, conn: sa.Connection) -> tuple[Spend, Spend, list[TaskSpend]]:
        """Every job's spend, the spend of the jobs that finished since ``now - DAY_S``,
        and the live tasks that spent most (as ``store.spend`` defines each)."""
        f, now = self.folded, self.now
        total, day = f.spend, f.day.since(now - DAY_S)
        fresh: dict[int, Spend] = {}
        for task_id, finished_at, usd, tin, tout in self.tail.costs(conn):
            total = _add_spend(total, usd, tin, tout)
            if finished_at is not None and finished_at >= now - DAY_S:
                day = _add_spend(day, usd, tin, tout)
            fresh[task_id] = _add_spend(fresh.get(task_id, _ZERO), usd, tin, tout)
        return total, day, _top_live(conn, f, fresh)


def _top_live(conn: sa.Connection, f: Folded, fresh: dict[int, Spend]) -> list[TaskSpend]:
    """The ``TOP_TASKS`` live tasks that spent most: the first live ones down the
    folded ranking (tasks with new spend aside), then those with new spend."""

    def total(task_id: int) -> Spend:
        old = f.by_task.get(task_id, _ZERO)
        new = fresh.get(task_id)
        if new is None:
            return old
        return _add_spend(old, new.cost_usd, new.tokens_in, new.tokens_out, new.jobs_with_cost)

    found: dict[int, tuple[str, str]] = {}
    start, size = 0, _RANK_BATCH
    while start < len(f.ranked):
        batch = [i for i in f.ranked[start : start + size] if i not in fresh]
        start, size = start + size, size * 4
        states = store_reads.task_key_states(conn, batch)
        for i in batch:
            if i in states and states[i][1] not in ("done", "cancelled"):
                found[i] = states[i]
                if len(found) == TOP_TASKS:
                    break
        if len(found) == TOP_TASKS:
            break
    for i, ks in store_reads.task_key_states(conn, fresh).items():
        if ks[1] not in ("done", "cancelled"):
            found[i] = ks
    spent = {i: total(i) for i in found}
    top = sorted((i for i in found if spent[i].cost_usd > 0), key=lambda i: (-spent[i].cost_usd, i))
    return [TaskSpend(found[i][0], found[i][1], spent[i]) for i in top[:TOP_TASKS]]
