"""What the landing read of a task's pull request, kept where people look (``remember``).

``gates/pull_land.py`` calls ``remember`` each time it has read a pull request's checks and
reviews, and once more after the forge merged it: the ``pull_requests`` row `orch task
show`, the API and the dashboard show, and the events ``/metrics`` counts
(``store.pulls``). Recording never decides anything and never raises: a database error
becomes a reason beside the landing's own, as the merge gate's result record does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa

from orchestrator.forge.base import CheckResult, MergeResult, PullRequest, Review
from orchestrator.gates.context import GateContext
from orchestrator.store import pulls

__all__ = ["remember", "seen_of"]


def seen_of(
    pr: PullRequest,
    checks: Sequence[CheckResult],
    reviews: Sequence[Review],
    *,
    required: Sequence[str] = (),
    merged: MergeResult | None = None,
) -> pulls.PullSeen:
    """The pull request as read: the required checks first, in the order they are
    required (one the forge has not reported is ``expected``), then the other checks."""
    by_name = {c.name: c for c in checks}
    shown: list[pulls.PullCheck] = []
    for name in dict.fromkeys(required):  # once each, a name required twice too
        c = by_name.pop(name, None)
        if c is None:
            shown.append(pulls.PullCheck(name, pulls.EXPECTED, "not reported yet", True))
        else:
            shown.append(pulls.PullCheck(c.name, c.state, c.summary, True, c.details_url))
    shown.extend(
        pulls.PullCheck(c.name, c.state, c.summary, False, c.details_url) for c in by_name.values()
    )
    done = merged is not None and merged.merged
    return pulls.PullSeen(
        number=pr.number,
        url=pr.url,
        head_sha=pr.head_sha,
        state="merged" if done or pr.merged else pr.state,
        checks=tuple(shown),
        reviews=tuple(pulls.PullReview(r.id, r.author, r.state, r.commit_sha) for r in reviews),
        merged_sha=merged.sha if merged is not None and merged.merged else None,
    )


def remember(
    ctx: GateContext,
    pr: PullRequest,
    checks: Sequence[CheckResult],
    reviews: Sequence[Review],
    *,
    required: Sequence[str] = (),
    merged: MergeResult | None = None,
    now: float | None = None,
) -> tuple[str, ...]:
    """Record task ``ctx.task``'s pull request as the landing read it (``merged``: what the
    forge's merge did); the reasons to add: none, or why it could not be recorded."""
    if ctx.engine is None:
        # The merge gate already says its result is not recorded without a database.
        return ()
    seen = seen_of(pr, checks, reviews, required=required, merged=merged)
    try:
        with ctx.engine.begin() as conn:
            pulls.record_pull(conn, ctx.task.id, seen, now=time.time() if now is None else now)
    except sa.exc.SQLAlchemyError as exc:
        return (
            f"could not record pull request #{pr.number} (shown as last recorded): "
            f"{type(exc).__name__}: {exc}",
        )
    return ()
