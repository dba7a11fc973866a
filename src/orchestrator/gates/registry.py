"""``QG_CHECKS``: each stage's ordered gate checks, and the checks themselves.

A check reads what a stage left (an artifact, the task branch) and returns a Verdict with
reasons. Checks run in order; the first that does not pass decides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.domain.verdicts import PARSERS, Verdict, VerdictStatus, failed, passed
from orchestrator.gitops import worktrees
from orchestrator.store.queries import RepoRow, TaskRow


@dataclass(frozen=True)
class GateContext:
    """What a check may look at."""

    task: TaskRow
    repo: RepoRow
    stage: Stage
    task_dir: Path
    worktree: Path | None
    settings: Settings
    # For checks that keep state (the merge gate's validated trees and results).
    engine: sa.Engine | None = None
    # A check that runs a process (the merge gate's re-test) runs it as part of the job:
    # the job's cancel (cancel, reaper, lease loss, shutdown), its process registration and
    # its env marker, so recovery after a crash finds and kills it like any agent.
    cancel: threading.Event | None = None
    job_id: int | None = None
    on_start: Callable[[int, int], None] | None = None
    marker: str | None = None


Check = Callable[[GateContext], Verdict]


def _artifact_check(name: str) -> Check:
    def check(ctx: GateContext) -> Verdict:
        got = taskdir.load_artifact(ctx.task_dir, name)
        if got.problem is not None:
            # There, but not a file a gate may read (too large, not text, a symlink...).
            return failed(f"{name}: {got.problem}")
        return PARSERS[name](got.text)

    check.__name__ = f"check_{name}"
    return check


def check_branch_has_diff(ctx: GateContext) -> Verdict:
    """The development gate: the task branch changes something against main."""
    if ctx.worktree is None:
        return failed("no worktree to look at")
    ok, detail = worktrees.has_diff_vs(ctx.worktree, ctx.repo.main_branch)
    if not ok:
        return failed(detail)
    # An agent may commit conflict debris itself; the orchestrator's own commit refuses it.
    markers = worktrees.branch_markers(ctx.worktree, ctx.repo.main_branch)
    if markers:
        listed = worktrees.name_paths(markers)
        return failed(f"the branch adds lines that look like conflict markers: {listed}")
    return passed(f"branch diff: {detail}")


CHECKS: dict[str, Check] = {
    "check_analysis_ready": _artifact_check(A.ANALYSIS),
    "check_dev_report": _artifact_check(A.DEV_REPORT),
    "check_branch_has_diff": check_branch_has_diff,
    "check_tests_passed": _artifact_check(A.TEST_REPORT),
    "check_staging_status": _artifact_check(A.STAGING_LOG),
    "check_deploy_status": _artifact_check(A.DEPLOY_LOG),
    "check_monitor_status": _artifact_check(A.MONITOR_REPORT),
}

# Every check the pipeline table names. A name with no registered check fails closed in
# run_gates: a gate that is not there never passes.
QG_CHECKS: dict[Stage, tuple[str, ...]] = {
    stage: spec.checks for stage, spec in STAGE_TRANSITIONS.items()
}


def register_check(name: str, check: Check) -> None:
    """Plug a check in (the merge gate does); a stage of the pipeline table must name it."""
    if not any(name in checks for checks in QG_CHECKS.values()):
        msg = f"no stage names the check {name!r}"
        raise ValueError(msg)
    CHECKS[name] = check


def run_gates(ctx: GateContext) -> Verdict:
    """Run the stage's checks in order; the first non-pass decides, reasons add up."""
    names = QG_CHECKS[ctx.stage]
    if not names:
        return failed(f"{ctx.stage.value} has no gate checks; fail closed")
    reasons: list[str] = []
    fields: dict[str, str] = {}
    for name in names:
        check = CHECKS.get(name)
        if check is None:
            return Verdict(
                VerdictStatus.FAIL, [*reasons, f"{name}: not available; fail closed"], fields
            )
        verdict = check(ctx)
        reasons.extend(f"{name}: {r}" for r in verdict.reasons)
        fields.update(verdict.fields)
        if not verdict.passed:
            return Verdict(
                VerdictStatus.FAIL, reasons, fields, verdict.tool_error, verdict.needs_human
            )
    return Verdict(VerdictStatus.PASS, reasons, fields)
