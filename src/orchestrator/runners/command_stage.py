"""A one-command stage: staging's or deploy's command run in the worktree, and its artifact.

The staging-runner and the deploy-finalizer are each a ``CommandStage``: the repo's command
(an argv list) runs through ``run_suite`` and is judged by its exit code alone, even when
it happens to run pytest. With no command configured nothing runs and the artifact says so
(``none_status``). Like every runner it never raises: a crash is a tool error with a
fail-closed artifact (``base.guarded``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.config import Settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners.base import (
    RunContext,
    RunnerResult,
    argv_json,
    argv_problem,
    check_worktree,
    fail_closed,
    guarded,
    one_line,
    output_block,
    reasons_block,
    suite_request,
    write_report,
)
from orchestrator.runners.suite import run_suite


@dataclass(frozen=True)
class CommandStage:
    """How a one-command stage (staging, deploy) writes its artifact."""

    runner: str
    artifact: str
    status_key: str
    ok: str
    fail: str
    none_reason: str
    # The stage's wall-clock limit when the caller gives none.
    default_timeout_s: Callable[[Settings], float]
    sweep_on_exit: bool = True
    # The status written when no command is configured (None: ``ok``). A stage that then
    # ran nothing says so (staging: SKIPPED) rather than claim a run that passed.
    none_status: str | None = None


def run_command_stage(
    ctx: RunContext, stage: CommandStage, command: Sequence[str] | None, timeout_s: float | None
) -> RunnerResult:
    """Run one command (or nothing, when none is configured) and write the stage artifact."""
    fail_keys = {stage.status_key: stage.fail}
    return guarded(
        stage.runner,
        ctx,
        stage.artifact,
        fail_keys,
        lambda: _run_command_stage(ctx, stage, command, timeout_s),
    )


def _run_command_stage(
    ctx: RunContext, stage: CommandStage, command: Sequence[str] | None, timeout_s: float | None
) -> RunnerResult:
    t0 = time.monotonic()
    bad = argv_problem(command)
    if bad is not None:
        keys_bad = {stage.status_key: stage.fail}
        return fail_closed(ctx, stage.artifact, keys_bad, OutcomeKind.NOT_STARTED, [bad], t0)
    fail_keys: dict[str, object] = {stage.status_key: stage.fail, "command": argv_json(command)}
    if not command:
        keys: dict[str, object] = {
            stage.status_key: stage.none_status or stage.ok,
            "outcome": OutcomeKind.COMPLETED.value,
            "exit_code": "none",
            "duration_s": "0",
            "command": "null",
            "log": "none",
        }
        reasons = [stage.none_reason]
        path, problem = write_report(ctx, stage.artifact, keys, reasons_block(reasons))
        if problem is not None:
            return RunnerResult(OutcomeKind.CRASHED, stage.artifact, None, None, [problem], 0.0)
        return RunnerResult(OutcomeKind.COMPLETED, stage.artifact, path, None, reasons, 0.0)
    problem = check_worktree(ctx)
    if problem is not None:
        return fail_closed(ctx, stage.artifact, fail_keys, OutcomeKind.NOT_STARTED, [problem], t0)

    limit = stage.default_timeout_s(ctx.settings) if timeout_s is None else timeout_s
    # A stage command is judged by its exit code, even when it happens to run pytest.
    request = suite_request(
        ctx, command, timeout_s=limit, sweep_on_exit=stage.sweep_on_exit, pytest=False
    )
    run = run_suite(request)
    outcome = run.process
    kind = run.kind
    ok = run.passed
    reasons = list(run.reasons)
    reasons.insert(0, f"{stage.runner}: {stage.ok if ok else stage.fail}")
    keys = {
        stage.status_key: stage.ok if ok else stage.fail,
        "outcome": kind.value,
        "exit_code": "none" if outcome.exit_code is None else outcome.exit_code,
        "duration_s": f"{outcome.duration_s:.3f}",
        "command": argv_json(command),
        "log": one_line(outcome.log_path),
    }
    body = "\n\n".join([reasons_block(reasons), output_block(outcome.log_path)])
    path, problem = write_report(ctx, stage.artifact, keys, body)
    if problem is not None:
        reasons.append(problem)
        if kind is OutcomeKind.COMPLETED:
            kind = OutcomeKind.CRASHED
    return RunnerResult(
        outcome=kind,
        artifact_name=stage.artifact,
        artifact_path=path,
        exit_code=outcome.exit_code,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
    )
