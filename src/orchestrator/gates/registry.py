"""The gate table: ``CHECKS`` maps every check name the pipeline table names to its
function, and ``run_gates`` runs a stage's checks (``QG_CHECKS``) in order. ``AFTER_PASS``
does the same for the steps a stage declares after its PASS (``run_after_pass``).

A check reads what a stage left (an artifact, the task branch) and returns a Verdict with
reasons. Checks run in order; the first that does not pass decides. ``CHECKS`` is the one
place a check is plugged in: written out here, not filled by importing the modules that
define checks, so what runs is what this file says, whatever was imported before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.domain.verdicts import PARSERS, Verdict, VerdictStatus, failed, passed
from orchestrator.gates import merge_gate, pull_land, validated
from orchestrator.gates.context import Check, GateContext, read_produced
from orchestrator.gitops import commits
from orchestrator.gitops import git as gitcmd


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
    if ctx.branch_diff is not None:
        # The job's commit, made on main itself, is the branch's whole change: it changes
        # something (git commits no empty change) and its markers were refused before it
        # was made, in this very change.
        return passed(f"branch diff: {ctx.branch_diff}")
    ok, detail = commits.has_diff_vs(ctx.worktree, ctx.repo.main_branch)
    if not ok:
        return failed(detail)
    # An agent may commit conflict debris itself; the orchestrator's own commit refuses it.
    markers, why = commits.branch_markers(ctx.worktree, ctx.repo.main_branch)
    if markers is None:
        return failed(why)
    if markers:
        listed = gitcmd.name_paths(markers)
        return failed(f"the branch adds lines that look like conflict markers: {listed}")
    return passed(f"branch diff: {detail}")


# Every check, by the name the pipeline table (domain/stages.py) gives it.
log = logging.getLogger(__name__)

# The tool error of a gate check that raised (``run_gates``).
GATE_ERROR = "gate-error"

CHECKS: Mapping[str, Check] = {
    "check_analysis_ready": _artifact_check(A.ANALYSIS),
    "check_dev_report": _artifact_check(A.DEV_REPORT),
    "check_branch_has_diff": check_branch_has_diff,
    "check_tests_passed": _artifact_check(A.TEST_REPORT),
    "check_staging_status": _artifact_check(A.STAGING_LOG),
    "check_branch_mergeable": merge_gate.check_branch_mergeable,
    "check_deploy_status": _artifact_check(A.DEPLOY_LOG),
    "check_monitor_status": _artifact_check(A.MONITOR_REPORT),
}

# Every check the pipeline table names. A name with no check in CHECKS fails closed in
# run_gates: a gate that is not there never passes.
QG_CHECKS: dict[Stage, tuple[str, ...]] = {
    stage: spec.checks for stage, spec in STAGE_TRANSITIONS.items()
}


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
        try:
            verdict = check(ctx)
        except Exception as exc:
            # A check that raises (a bug of ours, which what the agent left can find) is a
            # gate error: its gates alone run again, within the gate's own budget. Raised,
            # it left the job to recovery: the agent ran again, met it again, forever.
            # Named by its type only: the message may quote what the agent wrote.
            log.exception(
                "gate check %s raised",
                name,
                extra={"task": ctx.task.key, "job": ctx.job_id, "action": "gate-error"},
            )
            why = f"{name}: internal error ({type(exc).__name__}); the worker's log has it"
            return Verdict(VerdictStatus.FAIL, [*reasons, why], fields, tool_error=GATE_ERROR)
        reasons.extend(f"{name}: {r}" for r in verdict.reasons)
        fields.update(verdict.fields)
        if not verdict.passed:
            # Everything that decides the transition is carried, a wait too: without it a
            # pull request still waiting for its checks would read as a red gate and roll
            # the task back instead of deferring it.
            return Verdict(
                VerdictStatus.FAIL,
                reasons,
                fields,
                verdict.tool_error,
                verdict.needs_human,
                verdict.wait_s,
            )
    return Verdict(VerdictStatus.PASS, reasons, fields)


@dataclass(frozen=True)
class AfterPass:
    """A step a stage runs after its gates passed, on the word of one agent only."""

    # The agent whose PASS the step acts on; it must have run deterministically (no LLM).
    trusts: str
    # (the gates' context, the IDs of the tests the job passed) -> a note for the log.
    run: Callable[[GateContext, Sequence[str] | None], str]


# Every after-pass step, by the name the pipeline table gives it.
AFTER_PASS: Mapping[str, AfterPass] = {
    # The merge gate may skip its re-test for a tree the suite already passed: only when
    # the deterministic test-runner ran it, never on an LLM tester's word.
    "record_validated_tree": AfterPass(trusts="test-runner", run=validated.after_testing),
    # A repo that lands by pull request: the tested branch's pull request opens now, so the
    # forge's checks run while the task goes through staging.
    "open_pull_request": AfterPass(trusts="test-runner", run=pull_land.open_after_testing),
}


def run_after_pass(
    ctx: GateContext,
    *,
    agent: str,
    llm_backend: str | None,
    passed_tests: Sequence[str] | None,
) -> list[str]:
    """Run the after-pass steps ``ctx.stage`` declares, for a job whose gates passed; their
    notes. A step runs only for the agent it trusts, and only when no LLM did the job
    (``llm_backend``: an LLM agent's, or the one a runner fell back to)."""
    notes: list[str] = []
    for name in STAGE_TRANSITIONS[ctx.stage].after_pass:
        step = AFTER_PASS.get(name)
        if step is None:
            notes.append(f"{name}: not available; not run")
        elif agent == step.trusts and llm_backend is None:
            try:
                # A step with nothing to do for this repo says nothing.
                note = step.run(ctx, passed_tests)
            except Exception as exc:
                # Raised, it killed the job's thread after its gates passed: recovery
                # re-queued the job, and its agent ran again and met it again, forever.
                # Each step is a help, not a condition of the PASS (a tree not recorded
                # is re-tested by the merge gate; a pull request not opened yet is
                # opened by the landing), so the PASS stands and the step is not done.
                log.exception(
                    "after-pass step %s raised",
                    name,
                    extra={"task": ctx.task.key, "job": ctx.job_id, "action": "after-pass"},
                )
                note = f"internal error ({type(exc).__name__}); not done"
            if note:
                notes.append(f"{name}: {note}")
    return notes
