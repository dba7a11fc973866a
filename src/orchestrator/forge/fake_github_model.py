"""What the fake GitHub holds: issues, pull requests, statuses, check runs, reviews and
branch protection, per repository (its git objects are in a bare repository)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FakeCheckRun",
    "FakeComment",
    "FakeIssue",
    "FakeProtection",
    "FakePull",
    "FakeRepo",
    "FakeReview",
    "FakeReviewComment",
    "FakeStatus",
    "Json",
    "stamp",
]

Json = dict[str, Any]


def stamp(when: dt.datetime | None) -> str | None:
    """GitHub's timestamp form: ``2026-01-02T03:04:05Z``."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


@dataclass
class FakeComment:
    """A comment on an issue or a pull request."""

    id: int
    author: str
    body: str
    created_at: dt.datetime


@dataclass
class FakeIssue:
    """An issue; a pull request is one too (GitHub numbers both from one sequence)."""

    number: int
    id: int
    title: str
    body: str
    author: str
    created_at: dt.datetime
    updated_at: dt.datetime
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    closed_at: dt.datetime | None = None
    comments: list[FakeComment] = field(default_factory=list)
    is_pull: bool = False


@dataclass
class FakePull:
    """A pull request: its issue (title, body, state, comments) and its branches."""

    issue: FakeIssue
    id: int
    head_ref: str
    base_ref: str
    # The head as last seen: it follows the branch while the pull request is open, and
    # keeps the last tip once it is merged or closed (as GitHub's does).
    head_sha: str
    base_sha: str
    merged: bool = False
    merged_at: dt.datetime | None = None
    merge_commit_sha: str | None = None


@dataclass
class FakeStatus:
    """A commit status (``POST /statuses/{sha}``'s record)."""

    id: int
    sha: str
    context: str
    state: str
    description: str
    target_url: str | None
    created_at: dt.datetime


@dataclass
class FakeCheckRun:
    """A check run on a commit, as a GitHub App reports one."""

    id: int
    sha: str
    name: str
    status: str
    conclusion: str | None
    title: str | None
    summary: str | None
    text: str | None
    details_url: str | None
    started_at: dt.datetime
    completed_at: dt.datetime | None


@dataclass
class FakeReviewComment:
    """A line comment of a review."""

    id: int
    review_id: int
    path: str
    line: int | None
    body: str
    commit_sha: str
    created_at: dt.datetime


@dataclass
class FakeReview:
    """A submitted review of a pull request, on the head it saw."""

    id: int
    number: int
    author: str
    state: str
    body: str
    commit_sha: str
    submitted_at: dt.datetime
    comments: list[FakeReviewComment] = field(default_factory=list)


@dataclass
class FakeProtection:
    """A branch's protection: the checks and the approvals it requires."""

    contexts: list[str]
    approvals: int


@dataclass
class FakeRepo:
    """One repository's records (its git objects are in the bare repository)."""

    owner: str
    name: str
    id: int
    default_branch: str
    created_at: dt.datetime
    issues: dict[int, FakeIssue] = field(default_factory=dict)
    pulls: dict[int, FakePull] = field(default_factory=dict)
    statuses: list[FakeStatus] = field(default_factory=list)
    check_runs: list[FakeCheckRun] = field(default_factory=list)
    reviews: list[FakeReview] = field(default_factory=list)
    protections: dict[str, FakeProtection] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"
