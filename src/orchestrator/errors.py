"""The one root of every exception this package raises on purpose.

Expected conditions (a red suite, a merge conflict, a timeout) are values, not exceptions;
these are for what the caller cannot go on from.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""


class ConfigError(OrchestratorError):
    """Settings that break an invariant, named by their keys."""


class UsageError(OrchestratorError):
    """Bad input from a user: unknown repo, bad key, a path that is not a git repo."""


class NotFoundError(UsageError):
    """A repo, task or job that does not exist."""
