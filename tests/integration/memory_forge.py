"""An in-memory ``Forge`` (forge/base.py) for intake's tests: issues a test opens, labels,
unlabels and closes, and faults it makes the next calls raise.

Only the issue side is modelled; the pull-request side (landing) raises, so a test that
reaches it by mistake fails instead of passing on made-up answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from orchestrator.forge.base import (
    CheckResult,
    ForgeFault,
    ForgeFaultKind,
    ForgeIssue,
    MergeResult,
    PullRequest,
    Review,
)


@dataclass
class MemoryForge:
    """One repository's issues, kept in a dict; every call is counted in ``calls``."""

    repo: str = "octo/demo"
    issues: dict[int, ForgeIssue] = field(default_factory=dict)
    comments: list[tuple[int, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    # Raised by every call while set (an outage, a rejected token...).
    fault: ForgeFault | None = None

    # ---- what a test does on the forge ---------------------------------------------------

    def open(
        self, title: str, body: str = "", *, labels: tuple[str, ...] = (), author: str = "ada"
    ) -> ForgeIssue:
        number = max(self.issues, default=0) + 1
        issue = ForgeIssue(
            number=number,
            title=title,
            body=body,
            url=f"https://github.com/{self.repo}/issues/{number}",
            author=author,
            labels=labels,
        )
        self.issues[number] = issue
        return issue

    def label(self, number: int, name: str) -> ForgeIssue:
        issue = self.issues[number]
        return self._set(number, labels=(*issue.labels, name))

    def unlabel(self, number: int, name: str) -> ForgeIssue:
        issue = self.issues[number]
        return self._set(number, labels=tuple(n for n in issue.labels if n != name))

    def close(self, number: int) -> ForgeIssue:
        return self._set(number, state="closed")

    def _set(self, number: int, **changes: object) -> ForgeIssue:
        self.issues[number] = dataclasses.replace(self.issues[number], **changes)  # type: ignore[arg-type]
        return self.issues[number]

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fault is not None:
            raise self.fault

    # ---- the Forge protocol --------------------------------------------------------------

    def labeled_issues(self, label: str) -> list[ForgeIssue]:
        self._call("labeled_issues")
        # As GitHub's list: open issues only, label names matched without regard to case.
        return [
            i
            for _, i in sorted(self.issues.items())
            if i.state == "open" and label.casefold() in {n.casefold() for n in i.labels}
        ]

    def issue(self, number: int) -> ForgeIssue:
        self._call("issue")
        if number not in self.issues:
            raise ForgeFault(ForgeFaultKind.REQUEST, f"no issue {number}", status=404)
        return self.issues[number]

    def comment(self, number: int, body: str) -> None:
        self._call("comment")
        self.comments.append((number, body))

    def close_issue(self, number: int) -> None:
        self._call("close_issue")
        self.close(number)

    def open_pull(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        raise AssertionError("intake opens no pull request")

    def pull(self, number: int) -> PullRequest:
        raise AssertionError("intake reads no pull request")

    def required_checks(self, branch: str) -> list[str]:
        raise AssertionError("intake reads no branch protection")

    def required_approvals(self, branch: str) -> int:
        raise AssertionError("intake reads no branch protection")

    def checks(self, sha: str) -> list[CheckResult]:
        raise AssertionError("intake reads no checks")

    def reviews(self, number: int) -> list[Review]:
        raise AssertionError("intake reads no reviews")

    def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        raise AssertionError("intake merges nothing")
