"""The deploy-finalizer: run the repo's deploy command and write ``17-deploy-log.md``."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import DEPLOY_FINALIZER
from orchestrator.runners.base import RunContext, RunnerResult
from orchestrator.runners.command_stage import CommandStage, run_command_stage

NO_COMMAND_REASON = "no deploy command configured; nothing to deploy"


def _default_timeout_s(settings: Settings) -> float:
    # No deploy timeout setting exists yet; the staging limit is the closest bound, and it
    # is below reaper_max_running_s by the settings' invariant.
    return settings.staging_runner_timeout_s


STAGE = CommandStage(
    runner=DEPLOY_FINALIZER,
    artifact=A.DEPLOY_LOG,
    status_key="deploy_status",
    ok="SUCCEEDED",
    fail="FAILED",
    none_reason=NO_COMMAND_REASON,
    default_timeout_s=_default_timeout_s,
    # A deploy may start the service it deploys, which must outlive the deploy command.
    # A timeout or a cancel still kills the whole tree.
    sweep_on_exit=False,
)


def run_deploy(
    ctx: RunContext, command: Sequence[str] | None, *, timeout_s: float | None = None
) -> RunnerResult:
    """Run ``command`` (exit 0 is SUCCEEDED) in the worktree; never raises.

    No command configured is SUCCEEDED, and the report says so. Without a deploy timeout
    setting of its own, the staging-runner's limit applies.
    """
    return run_command_stage(ctx, STAGE, command, timeout_s)
