"""What the orchestrator needs of a forge (GitHub first; GitLab or Gitea can follow).

The engine speaks only this interface: issues in (``labeled_issues``, ``issue``), comments
out, pull requests opened, their required checks and reviews read, and a merge with the
head SHA the decision was taken on. Values in and out; expected conditions are values (a
merge refused because the head moved), trouble with the forge itself is a ``ForgeFault``
by kind, so the engine can defer on an outage or a rate limit, pause on rejected
credentials, and never blame the task's code for either.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

__all__ = [
    "CheckResult",
    "CheckState",
    "Forge",
    "ForgeFault",
    "ForgeFaultKind",
    "ForgeIssue",
    "MergeResult",
    "PullRequest",
    "Review",
    "ReviewComment",
    "sign_webhook",
    "verify_webhook",
]

CheckState = Literal["pending", "success", "failure"]


@dataclass(frozen=True)
class ForgeIssue:
    """An issue on the forge, as intake reads it."""

    number: int
    title: str
    body: str
    url: str
    author: str
    labels: tuple[str, ...] = ()
    state: Literal["open", "closed"] = "open"


@dataclass(frozen=True)
class PullRequest:
    """A pull request, as the landing reads it."""

    number: int
    url: str
    head_ref: str
    head_sha: str
    base_ref: str
    state: Literal["open", "closed"] = "open"
    merged: bool = False


@dataclass(frozen=True)
class CheckResult:
    """One check on a commit: a commit status or a check run, the newest per name.

    ``summary``: the status's description or the check run's output title and summary;
    ``log_tail``: the end of what it printed (a check run's output text), for the prompt
    of a developer sent back by it."""

    name: str
    state: CheckState
    summary: str = ""
    details_url: str | None = None
    log_tail: str = ""


@dataclass(frozen=True)
class ReviewComment:
    """A line comment of a review."""

    path: str
    line: int | None
    body: str


@dataclass(frozen=True)
class Review:
    """A submitted review of a pull request."""

    id: int
    author: str
    state: Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED"]
    body: str
    # The head the review was given on: an approval counts only for the head it saw.
    commit_sha: str
    comments: tuple[ReviewComment, ...] = ()


@dataclass(frozen=True)
class MergeResult:
    """What a merge through the API did: merged (with the merge commit), or refused and why
    (the head moved since it was read, a check or review the forge itself requires)."""

    merged: bool
    sha: str | None = None
    message: str = ""
    head_moved: bool = False


class ForgeFaultKind(StrEnum):
    """Why the forge did not answer as asked: never the task's code's fault."""

    # 5xx, a timeout, a refused connection: defer with backoff.
    OUTAGE = "outage"
    # 429, or a 403 with retry-after or an exhausted rate limit: defer until it allows.
    RATE_LIMITED = "rate-limited"
    # 401, or a 403 without rate-limit signs: a human must fix the token.
    CREDENTIALS = "credentials"
    # Any other 4xx: the request itself was refused (a repo that does not exist...).
    REQUEST = "request"


@dataclass
class ForgeFault(Exception):
    """The forge failed a call; ``retry_after_s`` when it said how long to wait."""

    kind: ForgeFaultKind
    message: str
    status: int | None = None
    retry_after_s: float | None = None
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        code = f" (HTTP {self.status})" if self.status is not None else ""
        return f"forge {self.kind.value}{code}: {self.message}"


class Forge(Protocol):
    """One repository on a forge, with the token it was given."""

    def labeled_issues(self, label: str) -> list[ForgeIssue]:
        """Open issues that carry ``label``, oldest first."""
        ...

    def issue(self, number: int) -> ForgeIssue:
        """One issue, open or closed."""
        ...

    def comment(self, number: int, body: str) -> None:
        """Comment on an issue or a pull request."""
        ...

    def close_issue(self, number: int) -> None:
        """Close an issue (done: its change is merged)."""
        ...

    def open_pull(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request of branch ``head`` into ``base``; the open one of ``head``
        when there is one already (opening twice is one pull request)."""
        ...

    def pull(self, number: int) -> PullRequest:
        """A pull request as it is now."""
        ...

    def required_checks(self, branch: str) -> list[str]:
        """The checks branch protection requires on ``branch``; [] when it has none."""
        ...

    def required_approvals(self, branch: str) -> int:
        """How many approvals branch protection requires on ``branch``; 0 when none."""
        ...

    def checks(self, sha: str) -> list[CheckResult]:
        """Every check on commit ``sha``: commit statuses and check runs, newest per name."""
        ...

    def reviews(self, number: int) -> list[Review]:
        """The submitted reviews of a pull request, oldest first, with their line comments."""
        ...

    def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        """Merge a pull request if its head is still ``sha`` (``method``: squash, merge or
        rebase); a moved head is refused, never merged blind."""
        ...


def sign_webhook(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_webhook(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (``X-Hub-Signature-256``) is ``body``'s under ``secret``,
    compared in constant time. No secret, or no signature, is never valid."""
    if not secret or not signature:
        return False
    return hmac.compare_digest(sign_webhook(secret, body), signature)
