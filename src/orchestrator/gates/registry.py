"""``QG_CHECKS``: each stage's ordered gate checks, and the checks themselves.

A check reads what a stage left (an artifact, the task branch) and returns a Verdict with
reasons. Checks run in order; the first that does not pass decides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.domain.verdicts import (
    ARTIFACT_CHANGED,
    PARSERS,
    Verdict,
    VerdictStatus,
    failed,
    passed,
)
from orchestrator.gitops import git as gitcmd
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
    # {artifact name: text} the job produced, as the orchestrator took it (a runner's
    # verdict as returned, an agent's artifact as collected): what the checks read.
    produced: Mapping[str, str] = field(default_factory=dict)
    # {artifact name: SHA-256s} the task's jobs recorded: a check that reads a file no job
    # of this run produced (a gate-only retry, an approval) reads it only if it is one of
    # these. None: no record was given, so such a file is not read at all.
    recorded: Mapping[str, set[str]] | None = None
    # {artifact name: text} the gates themselves wrote (the merge report, the coverage
    # report), for the job's record.
    written: dict[str, str] = field(default_factory=dict)


Check = Callable[[GateContext], Verdict]


def read_produced(ctx: GateContext, name: str) -> tuple[str | None, Verdict | None]:
    """The text of artifact ``name`` a check may trust, or the verdict that refuses it.

    The job's own artifact comes from memory, and the file must still say the same, else
    it was changed after it was written: a tool error (the stage runs again, an alert is
    raised), never the file's word. Otherwise (no job of this run produced it) the file is
    read only when a job of the task recorded exactly it.
    """
    got = taskdir.load_artifact(ctx.task_dir, name)
    produced = ctx.produced.get(name)
    if produced is not None:
        if got.text != produced:
            now = "missing" if got.text is None and got.problem is None else "different"
            return None, Verdict(
                VerdictStatus.FAIL,
                [
                    f"{name}: artifact changed after it was written (the file is now "
                    f"{now}); the job's own verdict stands for nothing until the stage "
                    f"runs again"
                ],
                tool_error=ARTIFACT_CHANGED,
            )
        return produced, None
    if got.problem is not None:
        # There, but not a file a gate may read (too large, not text, a symlink...).
        return None, failed(f"{name}: {got.problem}")
    if got.text is None:
        return None, None
    if ctx.recorded is None or taskdir.digest(got.text) not in ctx.recorded.get(name, set()):
        return None, failed(f"{name}: {taskdir.NOT_OURS}; not read")
    return got.text, None


def _artifact_check(name: str) -> Check:
    def check(ctx: GateContext) -> Verdict:
        text, refused = read_produced(ctx, name)
        if refused is not None:
            return refused
        return PARSERS[name](text)

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
        listed = gitcmd.name_paths(markers)
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
