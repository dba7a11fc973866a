"""Whether a pull request may merge: its required checks and reviews, read as values.

``judge_pull`` is the landing's decision on a pull request whose head is the candidate the
merge gate made: merge it, wait (checks pending, approvals missing, the head just moved),
send the task back (a required check failed, a reviewer asked for changes on this head),
or stop for a human (checks pending past the timeout). Pure: the forge's answers in, a
``PullJudgement`` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["CheckView", "PullJudgement", "ReviewView", "judge_pull"]

# How much of a failing check's log goes into the reasons (and the next prompt).
LOG_TAIL_CHARS = 2000


@dataclass(frozen=True)
class CheckView:
    """One check on the head: its name, state and what it said."""

    name: str
    state: Literal["pending", "success", "failure"]
    summary: str = ""
    log_tail: str = ""


@dataclass(frozen=True)
class ReviewView:
    """One submitted review: who, what, on which head, with its line comments."""

    author: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED
    commit_sha: str
    body: str = ""
    comments: tuple[str, ...] = ()  # "path:line: body"


@dataclass(frozen=True)
class PullJudgement:
    """merge, wait (``wait_s``), fail (back to development) or block (a human looks)."""

    kind: Literal["merge", "wait", "fail", "block"]
    reasons: tuple[str, ...]
    wait_s: float | None = None
    alert: str | None = None


def _latest_by_author(reviews: Sequence[ReviewView]) -> dict[str, ReviewView]:
    """Each reviewer's last word that counts (a comment neither approves nor blocks)."""
    latest: dict[str, ReviewView] = {}
    for r in reviews:
        if r.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            latest[r.author] = r
    return latest


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= LOG_TAIL_CHARS else "..." + text[-LOG_TAIL_CHARS:]


def judge_pull(
    *,
    number: int,
    head_sha: str,
    candidate: str,
    checks: Sequence[CheckView],
    required_checks: Sequence[str],
    reviews: Sequence[ReviewView],
    required_approvals: int,
    waited_s: float,
    timeout_s: float,
    poll_s: float,
) -> PullJudgement:
    """The decision on pull request ``number``, whose head should be ``candidate``.

    Checks: the required ones (branch protection and the repo's own list) when any are
    named, else every check reported on the head. Reviews: only a review of this head
    counts, an approval as much as a request for changes: after a new push, an old request
    for changes waits for the reviewer's new word instead of sending the task back again.
    """
    pr = f"pull request #{number}"
    if head_sha != candidate:
        return PullJudgement(
            "wait",
            (
                f"{pr}: its head is {head_sha[:12]}, not the candidate {candidate[:12]}; "
                "read again before anything is merged",
            ),
            wait_s=min(poll_s, 5.0),
        )
    by_name = {c.name: c for c in checks}
    named = list(dict.fromkeys(required_checks)) or sorted(by_name)
    failed = [by_name[n] for n in named if n in by_name and by_name[n].state == "failure"]
    if failed:
        reasons = [f"{pr}: required check failed on {head_sha[:12]}"]
        for c in failed:
            reasons.append(f"check {c.name} failed: {c.summary or 'no summary'}")
            if c.log_tail.strip():
                reasons.append(f"log of {c.name} (tail):\n{_tail(c.log_tail)}")
        return PullJudgement("fail", tuple(reasons))
    asked = [
        r
        for r in _latest_by_author(reviews).values()
        if r.state == "CHANGES_REQUESTED" and r.commit_sha == head_sha
    ]
    if asked:
        reasons = [f"{pr}: changes requested on {head_sha[:12]}"]
        for r in asked:
            reasons.append(f"review by {r.author}: {r.body.strip() or '(no text)'}")
            reasons.extend(f"comment: {c}" for c in r.comments)
        return PullJudgement("fail", tuple(reasons))
    waiting: list[str] = []
    missing = [n for n in named if n not in by_name]
    pending = [n for n in named if n in by_name and by_name[n].state == "pending"]
    if missing:
        waiting.append(f"checks not reported yet: {', '.join(missing)}")
    if pending:
        waiting.append(f"checks pending: {', '.join(pending)}")
    approvals = sorted(
        r.author
        for r in _latest_by_author(reviews).values()
        if r.state == "APPROVED" and r.commit_sha == head_sha
    )
    if len(approvals) < required_approvals:
        waiting.append(f"approvals of {head_sha[:12]}: {len(approvals)} of {required_approvals}")
    if waiting:
        if waited_s >= timeout_s:
            return PullJudgement(
                "block",
                (
                    f"{pr}: still waiting after {waited_s:.0f}s (the limit is {timeout_s:g}s)",
                    *waiting,
                ),
                alert="forge-checks-timeout",
            )
        return PullJudgement("wait", (f"{pr}: waiting", *waiting), wait_s=poll_s)
    passed = ", ".join(named) or "none required"
    approved = ", ".join(approvals) or "none required"
    return PullJudgement("merge", (f"{pr}: checks passed ({passed}); approved by {approved}",))
