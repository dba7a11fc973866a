"""Deterministic runners: the agents of the stages where an LLM adds no judgement.

Each runner runs (or polls) something real, writes its stage's artifact with aligned
verdict keys, and returns a ``RunnerResult``. None of them ever raises.

The names below are loaded on first use: a command that only needs a small module of this
package (``protected_globs`` to file a task) must not import every runner with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.runners.base import RunContext, RunnerResult, runner_available
    from orchestrator.runners.deploy_finalizer import run_deploy
    from orchestrator.runners.post_deploy_monitor import run_monitor
    from orchestrator.runners.staging_runner import run_staging
    from orchestrator.runners.test_runner import run_tests

# Public name -> the module of this package that defines it.
_WHERE = {
    "RunContext": "base",
    "RunnerResult": "base",
    "run_deploy": "deploy_finalizer",
    "run_monitor": "post_deploy_monitor",
    "run_staging": "staging_runner",
    "run_tests": "test_runner",
    "runner_available": "base",
}

__all__ = [
    "RunContext",
    "RunnerResult",
    "run_deploy",
    "run_monitor",
    "run_staging",
    "run_tests",
    "runner_available",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    where = _WHERE.get(name)
    if where is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
