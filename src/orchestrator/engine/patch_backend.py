"""The ``patch`` agent: the deterministic developer, which applies the attempt's patch.

The patch is the attempt's own (``patches/``); on a fresh start the newest one, or the
branch's old change carried over to the fresh tree. It is applied with a three-way merge
and only what it staged is committed; the backend writes its own ``10-dev-report.md``. A
re-run after a crash that finds the patch committed already says so; a task sent back
with no newer patch attached waits for a human rather than apply the same patch again.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import taskdir
from orchestrator.agents.harness import dev_report
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.engine.fresh_start import carried_diff_path
from orchestrator.gitops import commits
from orchestrator.jobcontract import JobContext, JobResult


def run_patch(ctx: JobContext, worktree: Path) -> JobResult:
    """The deterministic developer: apply the attempt's patch and commit what it staged."""
    patch = _patch_to_apply(ctx)
    if patch is None:
        reasons = ["no patch attached: `orch task retry KEY --patch FILE`"]
        made = dev_report(ctx, "FAILED", reasons)
        return JobResult(OutcomeKind.COMPLETED, reasons, 1, worktree, artifacts=made)
    rerun = any("recovered from" in r or "re-queued" in r for r in ctx.job.reasons)
    if (
        rerun
        and commits.patch_present(worktree, patch)
        and commits.has_diff_vs(worktree, ctx.repo.main_branch)[0]
    ):
        # A re-run of this same attempt after a crash between the commit and its
        # bookkeeping: the branch holds the change already. Applying again would find
        # nothing to commit and blame the task. (A rollback's new attempt is no re-run.)
        reasons = [f"{patch.name} is already committed on the task branch"]
        made = dev_report(ctx, "DONE", reasons)
        return JobResult(OutcomeKind.COMPLETED, reasons, 0, worktree, artifacts=made)
    reused = ctx.job.fresh_start is None and ctx.job.attempt > len(
        list(taskdir.patches_dir(ctx.task_dir).glob("*.patch"))
    )
    if not rerun and reused and commits.patch_present(worktree, patch):
        # Sent back (red tests, a failed gate) with no newer patch attached: applying the
        # same one again changes nothing, and every such attempt would only spend a
        # developer retry and bury why the task came back. A person must attach a fix.
        reasons = [
            f"{patch.name} is already on the task branch and no newer patch is attached: "
            f"applying it again would change nothing",
            *_sent_back_for(ctx),
            f"attach a fix: `orch task retry {ctx.task.key} --patch FILE`",
        ]
        return JobResult(OutcomeKind.COMPLETED, reasons, None, worktree, awaiting_human=True)
    applied, detail = commits.apply_patch(worktree, patch)
    if not applied:
        reasons = [f"{patch.name}: {detail}"]
        made = dev_report(ctx, "FAILED", reasons)
        return JobResult(OutcomeKind.COMPLETED, reasons, 1, worktree, artifacts=made)
    # Only what the patch staged: a file the worktree happens to hold is not the task's.
    committed = commits.commit_staged(
        worktree,
        f"{ctx.task.key}: {ctx.task.title} (patch {patch.name}, attempt {ctx.job.attempt})",
    )
    if not committed:
        reasons = [f"{patch.name} applied but {committed.detail}"]
        made = dev_report(ctx, "FAILED", reasons)
        return JobResult(OutcomeKind.COMPLETED, reasons, 1, worktree, artifacts=made)
    reasons = [f"applied and committed {patch.name}"]
    made = dev_report(ctx, "DONE", reasons)
    return JobResult(OutcomeKind.COMPLETED, reasons, 0, worktree, artifacts=made)


def _sent_back_for(ctx: JobContext) -> list[str]:
    """Why the task came back to development: the rollback's reasons (its first lines)."""
    if not ctx.previous_failure:
        return []
    lines = [line.removeprefix("- ").strip() for line in ctx.previous_failure.splitlines()]
    said = [line for line in lines if line and not line.startswith("#")][:5]
    return [f"sent back because: {'; '.join(said)}"] if said else []


def _patch_to_apply(ctx: JobContext) -> Path | None:
    """The attempt's patch; on a fresh start the newest one (``patch``) or the branch's
    old change carried over to the fresh tree (``carry``)."""
    if ctx.job.fresh_start == "carry":
        carry = carried_diff_path(ctx.task_dir, ctx.job.id)
        if carry.exists():
            return carry
    if ctx.job.fresh_start == "patch":
        found = sorted(taskdir.patches_dir(ctx.task_dir).glob("*.patch"))
        return found[-1] if found else None
    return taskdir.patch_for_attempt(ctx.task_dir, ctx.job.attempt)
