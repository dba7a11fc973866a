"""What a job's process did, before any verdict is read (the first level of the outcome)."""

from __future__ import annotations

from enum import StrEnum


class OutcomeKind(StrEnum):
    """``completed``: it ran and the verdict decides. The rest are tool errors."""

    COMPLETED = "completed"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    LOCK_BUSY = "lock-busy"
    NOT_STARTED = "not-started"

    @property
    def is_tool_error(self) -> bool:
        """A tool error: the suite or agent did not really run, so the code is not to blame."""
        return self is not OutcomeKind.COMPLETED


TOOL_ERRORS = frozenset(k for k in OutcomeKind if k.is_tool_error)
