"""The deterministic runners' counters, derived from job rows (``/queue``, ``/metrics``).

A runner's job row holds more than what the runner itself did, and the counters tell the
parts apart instead of blaming the runner for all of it:

- at deploy-staging the gates are the staging check *then the merge gate*, and the job's
  verdict is FAIL when either fails. The runner's own verdict is the staging check's: a
  job whose merge gate ran (so the staging check had passed) counts as the runner's PASS,
  and the merge gate's failure in ``merge_gate_failed`` (``merge_counters`` says how);
- a staging run with no staging command configured is SKIPPED, not PASSED;
- a runner that is off, or whose repo is out of its scope, falls back to an LLM agent; the
  job keeps the runner's name. Those jobs count in ``llm_fallback``, not as the runner's;
- ``infra_retries`` counts re-queues: DEFER transitions after the runner's own tool error
  (a gate's infra trouble is that gate's, see ``merge_counters``).

Each part is read from what the engine stored: the job's reasons (the reason
``engine/launch.py`` gives a fallback, the reasons ``run_gates`` prefixes with each check's
name) and the merge gate's ``merge_results`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from orchestrator.domain import artifacts as A
from orchestrator.store.merges import merge_gate_ran, reason_starts
from orchestrator.store.schema import jobs, transitions

# The reason engine/launch.py adds when a runner's stage is done by its LLM fallback.
FALLBACK_MARK = "fell back to "
# The staging check's reason for a SKIPPED staging log, as run_gates prefixes it.
STAGING_CHECK_NAME = "check_staging_status"
SKIPPED_MARK = f"{STAGING_CHECK_NAME}: {A.STAGING_LOG}: staging_status=SKIPPED"

PASS, FAIL, SKIPPED, NONE = "PASS", "FAIL", "SKIPPED", "none"
# What part of the counters a job row belongs to (see runner_counters).
_LIVE, _FALLBACK, _OWN, _SKIPPED = "live", "fallback", "own", "skipped"
_GATE_FAILED, _GATE_FAILED_SKIPPED = "gate-failed", "gate-failed-skipped"


@dataclass
class Tally:
    """Finished jobs by outcome and by verdict."""

    finished: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    by_verdict: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, verdict: str, n: int) -> None:
        """Count ``n`` finished jobs."""
        self.finished += n
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + n
        self.by_verdict[verdict] = self.by_verdict.get(verdict, 0) + n


@dataclass
class RunnerTally:
    """One runner's jobs: the live ones, and the finished ones told apart."""

    jobs: int = 0
    queued: int = 0
    running: int = 0
    # Every finished job under the runner's name: ``own.finished + llm_fallback.finished``.
    finished: int = 0
    own: Tally = field(default_factory=Tally)
    merge_gate_failed: int = 0
    infra_retries: int = 0
    llm_fallback: Tally = field(default_factory=Tally)


def runner_counters(
    conn: sa.Connection,
    names: Sequence[str],
    jobs_where: sa.ColumnElement[bool] | None = None,
) -> dict[str, RunnerTally]:
    """The counters of the runners ``names``, each present even with no jobs.

    ``jobs_where`` counts only the jobs it holds for: the counters add up over disjoint
    sets of jobs (a job's defer transitions are written with its end), which is how the API
    keeps them current without rescanning the history (``api/totals.py``).
    """
    j = jobs.c
    only = sa.true() if jobs_where is None else jobs_where
    skipped = reason_starts(j.reasons, SKIPPED_MARK)
    # One class per job, its tests in order: SQL stops at the first that holds, so the
    # reasons are read only for finished jobs, and the merge gate looked for only on a FAIL.
    part = sa.case(
        (j.state != "finished", _LIVE),
        (reason_starts(j.reasons, FALLBACK_MARK), _FALLBACK),
        (
            sa.and_(j.verdict == FAIL, merge_gate_ran(j.id, j.reasons)),
            sa.case((skipped, _GATE_FAILED_SKIPPED), else_=_GATE_FAILED),
        ),
        (sa.and_(j.verdict == PASS, skipped), _SKIPPED),
        else_=_OWN,
    ).label("part")
    stmt = (
        sa.select(j.agent, j.state, j.outcome, j.verdict, part, sa.func.count())
        .where(j.agent.in_(list(names)), only)
        .group_by(j.agent, j.state, j.outcome, j.verdict, part)
    )
    out = {name: RunnerTally() for name in names}
    for agent, state, outcome, verdict, kind, n in conn.execute(stmt):
        tally = out[agent]
        tally.jobs += n
        if kind == _LIVE:
            if state == "queued":
                tally.queued += n
            elif state == "running":
                tally.running += n
            continue
        tally.finished += n
        if kind == _FALLBACK:
            tally.llm_fallback.add(outcome or NONE, verdict or NONE, n)
            continue
        own = verdict or NONE
        if kind in (_GATE_FAILED, _GATE_FAILED_SKIPPED):
            # The merge gate runs only after the runner's own check passed.
            tally.merge_gate_failed += n
            own = SKIPPED if kind == _GATE_FAILED_SKIPPED else PASS
        elif kind == _SKIPPED:
            own = SKIPPED
        tally.own.add(outcome or NONE, own, n)
    t = transitions.c
    requeues = (
        sa.select(j.agent, sa.func.count())
        .select_from(transitions.join(jobs, j.id == t.job_id))
        .where(
            t.kind == "defer",
            j.agent.in_(list(names)),
            only,
            # A tool error of the job's own process; a gate's infra trouble is the gate's.
            j.outcome != "completed",
            sa.not_(reason_starts(j.reasons, FALLBACK_MARK)),
        )
        .group_by(j.agent)
    )
    for agent, n in conn.execute(requeues):
        out[agent].infra_retries += int(n)
    return out
