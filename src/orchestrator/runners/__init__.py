"""Deterministic runners: the agents of the stages where an LLM adds no judgement.

Each runner runs (or polls) something real, writes its stage's artifact with aligned
verdict keys, and returns a ``RunnerResult``. None of them ever raises.
"""

from __future__ import annotations

from orchestrator.runners.base import RunContext, RunnerResult, runner_available
from orchestrator.runners.deploy_finalizer import run_deploy
from orchestrator.runners.post_deploy_monitor import run_monitor
from orchestrator.runners.staging_runner import run_staging
from orchestrator.runners.test_runner import run_tests

__all__ = [
    "RunContext",
    "RunnerResult",
    "run_deploy",
    "run_monitor",
    "run_staging",
    "run_tests",
    "runner_available",
]
