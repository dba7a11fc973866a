"""What a model API did to a job, when it failed: a value the engine acts on.

The backends' parsers read a CLI's own output (claude's ``api_error_status``, codex's error
events, aider's litellm errors) and say which of three kinds a failure is. Each kind has one
owner, and none of them is the code's:

- ``outage``: the server failed (5xx, 529, 429, refused connections, a call that never
  answers). Counted per backend across tasks; enough in a row pause the backend (its jobs
  wait, nobody's retry budget is spent) until a probe succeeds.
- ``credentials``: 401 or 403. The operator's problem: the backend is paused at once, with
  one alert, until a probe gets through.
- ``request``: 400 and other refusals of the request itself. Waiting changes nothing: the
  task is blocked with the server's own message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ApiFault", "FaultKind", "fault_of_status", "status_in"]


class FaultKind(StrEnum):
    OUTAGE = "outage"
    CREDENTIALS = "credentials"
    REQUEST = "request"


@dataclass(frozen=True)
class ApiFault:
    """A model-API failure a parser recognised: its kind, the HTTP status when known, the
    server's (or CLI's) message, and the server's ``retry-after`` when it sent one."""

    kind: FaultKind
    message: str
    status: int | None = None
    retry_after_s: float | None = None

    @property
    def summary(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no HTTP status"
        return f"{self.kind.value} ({status}): {self.message}"


# Statuses that say the server (or what stands in front of it) failed or is busy: waiting
# helps. 408 (request timeout) and 409 (a conflict some gateways send when overloaded)
# count with them.
_OUTAGE_STATUSES = frozenset({408, 409, 425, 429})


def fault_of_status(status: int, message: str, retry_after_s: float | None = None) -> ApiFault:
    """The kind of a failed HTTP call by its status."""
    if status in (401, 403):
        kind = FaultKind.CREDENTIALS
    elif status >= 500 or status in _OUTAGE_STATUSES:
        kind = FaultKind.OUTAGE
    else:
        kind = FaultKind.REQUEST
    return ApiFault(kind, message, status, retry_after_s)


_STATUS = re.compile(r"\b(?:status(?:[ _]code)?[ :=]*|HTTP[ /]?(?:1\.1 |2 )?)([1-5]\d\d)\b", re.I)


def status_in(text: str) -> int | None:
    """An HTTP status a CLI's error line names (``unexpected status 401``, ``HTTP 529``,
    ``status_code: 429``), or None."""
    found = _STATUS.search(text)
    return int(found.group(1)) if found else None
