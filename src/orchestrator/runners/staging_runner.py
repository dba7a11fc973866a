"""The staging-runner: run the repo's staging command and write ``15-staging-log.md``."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import STAGING_RUNNER
from orchestrator.runners.base import RunContext, RunnerResult
from orchestrator.runners.command_stage import CommandStage, run_command_stage

NO_COMMAND_REASON = "no staging command configured; nothing to stage"


def _default_timeout_s(settings: Settings) -> float:
    return settings.staging_runner_timeout_s


STAGE = CommandStage(
    runner=STAGING_RUNNER,
    artifact=A.STAGING_LOG,
    status_key="staging_status",
    ok="PASSED",
    fail="FAILED",
    none_reason=NO_COMMAND_REASON,
    default_timeout_s=_default_timeout_s,
    none_status="SKIPPED",
)


def run_staging(
    ctx: RunContext, command: Sequence[str] | None, *, timeout_s: float | None = None
) -> RunnerResult:
    """Run ``command`` (exit 0 is PASSED) in the worktree; never raises.

    No command configured is SKIPPED (the gate lets it pass), and the report says why;
    counters tell it from a staging run that passed. A tool error (timeout, not
    started, killed) writes FAILED and returns that tool error as the outcome, so the engine
    defers instead of rolling back.
    """
    return run_command_stage(ctx, STAGE, command, timeout_s)
