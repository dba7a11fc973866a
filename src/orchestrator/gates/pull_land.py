"""Landing by pull request: the merge gate's last step when a repo lands through its forge.

Where the merge gate would move main itself (compare-and-swap, push), a repo that lands by
pull request (``land: pr``) has the candidate pushed as the task branch, its pull request
opened (once), and the forge's word read on exactly that head: the required checks (branch
protection's and the repo's own ``required_checks``) and the reviews. ``domain.pullreq``
decides; here it is asked and carried out:

- merge: through the forge's API with the head SHA the decision was taken on (a head that
  moved meanwhile is refused by the forge and read again, never merged blind);
- wait: the gate's verdict says how long (``Verdict.wait_s``), the task waits deferred,
  holding no worker and no serial gate, and nothing is spent;
- fail: a failing check (its name, summary and log tail) or a request for changes (the
  review and its line comments) sends the task back to development, with that text in
  the reasons the next prompt shows;
- block: checks pending past ``ORCH_FORGE_CHECKS_TIMEOUT_S`` stop for a human with an
  alert.

A forge outage or rate limit is a wait that honours ``retry-after``, never the task's
fault; the forge's own breaker (``gates.forge_breaker``) pauses a forge that keeps failing
or rejects the token, with one alert for the forge, and the landings wait for its probe.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import taskdir
from orchestrator.domain import artifacts as A
from orchestrator.domain import breaker
from orchestrator.domain.pullreq import CheckView, ReviewView, judge_pull
from orchestrator.domain.quoting import fence_text
from orchestrator.errors import ConfigError
from orchestrator.forge.base import CheckResult, Forge, ForgeFault, ForgeFaultKind, Review
from orchestrator.forge.branch import push_task_branch
from orchestrator.forge.connect import forge_for
from orchestrator.forge.settings import forge_settings, land_of
from orchestrator.gates import forge_breaker
from orchestrator.gates.context import GateContext
from orchestrator.gates.pull_record import remember
from orchestrator.gitops import merge as gm
from orchestrator.gitops import worktrees
from orchestrator.gitops.land import Candidate, Published, Publisher
from orchestrator.store import pulls, queries
from orchestrator.store.pulls import PullRow
from orchestrator.store.rows import TransitionRow

__all__ = ["FORGE_CREDENTIALS", "lands_by_pull_request", "open_after_testing", "prepare"]

log = logging.getLogger(__name__)

# The alert of a forge that refuses the token.
FORGE_CREDENTIALS = "forge-credentials"
# How often a waiting pull request is read when ORCH_FORGE_POLL_S is 0.
DEFAULT_POLL_S = 60.0
# How long to wait on a forge outage that named no retry-after.
OUTAGE_WAIT_S = 30.0
# The words that mark a deferral as a wait for the pull request (see ``_Past``).
WAITING_WORDS = "waiting for pull request"
# How the landing's reasons name a pull request: "pull request #7: URL".
_PULL_RE = re.compile(r"pull request #([0-9]{1,9}): (\S+)")


def lands_by_pull_request(ctx: GateContext) -> bool:
    """Whether the repo lands through its forge's pull requests."""
    return land_of(ctx.repo.options) == "pr"


@dataclass(frozen=True)
class _Past:
    """What the task's record says of its pull request, read once per landing: the task's
    history and the pull request last recorded (None: none yet)."""

    history: list[TransitionRow]
    seen: PullRow | None = None

    @staticmethod
    def read(ctx: GateContext) -> _Past:
        if ctx.engine is None:
            return _Past([])
        with ctx.engine.connect() as conn:
            return _Past(
                queries.list_transitions(conn, ctx.task.id), pulls.get_pull(conn, ctx.task.id)
            )

    def waiting_since(self, now: float) -> float:
        """When the task began its current wait for its pull request: the first of the
        waits in a row at the end of its history; ``now`` when it is not waiting yet."""
        since = now
        for t in reversed(self.history):
            if t.kind != "defer" or not any(WAITING_WORDS in r for r in t.reasons):
                break
            since = t.at
        return since

    def earlier_pull(self) -> int | None:
        """The number of the pull request opened for this task before (after testing, or by
        an earlier run of this landing), as recorded or as the history names it."""
        if self.seen is not None:
            return self.seen.number
        for t in reversed(self.history):
            for r in reversed(t.reasons):
                found = _PULL_RE.search(r)
                if found:
                    return int(found.group(1))
        return None

    def knows(self, number: int, url: str) -> bool:
        """Whether pull request ``number`` was recorded or named before."""
        if self.seen is not None and self.seen.number == number:
            return True
        return any(url in r for t in self.history for r in t.reasons)


def _fault(ctx: GateContext, name: str, exc: ForgeFault, poll_s: float) -> Published:
    """What a forge's failure means for this landing: the forge's breaker hears of it (its
    outage or rejected token is the forge's, with one alert, never the task's); the landing
    waits, honouring retry-after, or until the paused forge's next probe."""
    if exc.kind is ForgeFaultKind.REQUEST:
        return Published("INFRA", (f"the forge refused the request: {exc}",), "other")
    until = forge_breaker.record(ctx.engine, ctx.settings, name, ctx.job_id, exc)
    wait = exc.retry_after_s if exc.retry_after_s is not None else max(poll_s, OUTAGE_WAIT_S)
    if until is not None:
        wait = max(wait, until - time.time())
    why = f"{WAITING_WORDS}: the forge failed: {exc}"
    if exc.kind is ForgeFaultKind.CREDENTIALS:
        why = f"{WAITING_WORDS}: the forge rejected the credentials: {exc}"
    if until is not None:
        # The words `orch backend resume` wakes the waiting landings by.
        why += f"; {breaker.paused_mark(name)}"
    return Published("WAIT", (why,), wait_s=max(wait, 1.0))


def prepare(
    ctx: GateContext,
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[Publisher | None, Published | None]:
    """The merge gate's publisher for a repo that lands by pull request, or why the landing
    stops before it starts: no forge (or no token for it), no remote, or a forge that is
    down or refuses the token, asked before any git talks to it (a fetch would only fail
    less clearly). The forge is ``ctx.forge``, else the one the repo's settings name."""
    repo, task, st = ctx.repo, ctx.task, ctx.settings
    try:
        forge = ctx.forge if ctx.forge is not None else forge_for(repo, os.environ)
    except ConfigError as exc:
        return None, Published("BLOCKED", (str(exc),), "other", alert=FORGE_CREDENTIALS)
    # 0 turns issue polling off; a waiting pull request is still read at the default pace.
    poll_s = st.forge_poll_s or DEFAULT_POLL_S
    configured = forge_settings(ctx.repo.options)
    required_extra = list(configured.required_checks) if configured else []
    method = configured.merge_method if configured else "squash"
    if forge is None:
        return None, Published(
            "INFRA", ("the repo lands by pull request but has no forge",), "other"
        )
    if not repo.remote:
        return None, Published(
            "INFRA", ("landing by pull request needs the repo's remote",), "other"
        )
    name = forge_breaker.forge_name(configured.api_url if configured else "forge")
    until = forge_breaker.admit(ctx.engine, name, ctx.job_id)
    if until is not None:
        why = f"{WAITING_WORDS}: {breaker.paused_mark(name)}; waiting for its next probe"
        return None, Published("WAIT", (why,), wait_s=max(until - time.time(), 1.0))
    try:
        protected = forge.required_checks(repo.main_branch)
    except ForgeFault as exc:
        return None, _fault(ctx, name, exc, poll_s)
    # It answered: a paused forge is resumed (this landing was its probe), and its count of
    # failures in a row starts again.
    forge_breaker.record(ctx.engine, st, name, ctx.job_id, None)
    required = [*protected, *required_extra]
    past = _Past.read(ctx)
    try:
        red = _red_already(ctx, forge, past, required, poll_s)
    except ForgeFault as exc:
        return None, _fault(ctx, name, exc, poll_s)
    if red is not None:
        return None, red

    def publish(candidate: Candidate) -> Published:
        assert forge is not None
        assert repo.remote is not None
        try:
            pushed, detail = push_task_branch(
                Path(repo.path), repo.remote, task.key, candidate.sha, main=repo.main_branch
            )
            if not pushed:
                return Published("INFRA", (detail,), "other")
            pr = forge.open_pull(
                head=worktrees.branch_name(task.key),
                base=repo.main_branch,
                title=f"{task.key}: {task.title}",
                body=_pull_body(ctx),
            )
            if pr.merged:
                return Published("MERGED", (f"pull request #{pr.number} is merged",))
            _note_opened(ctx, forge, past, pr.number, pr.url)
            checks = forge.checks(pr.head_sha)
            approvals = forge.required_approvals(repo.main_branch)
            reviews = forge.reviews(pr.number)
            now = clock()
            noted = remember(ctx, pr, checks, reviews, required=required, now=now)
            judged = judge_pull(
                number=pr.number,
                head_sha=pr.head_sha,
                candidate=candidate.sha,
                checks=[_check_view(c) for c in checks],
                required_checks=required,
                reviews=[_review_view(r) for r in reviews],
                required_approvals=approvals,
                waited_s=now - past.waiting_since(now),
                timeout_s=st.forge_checks_timeout_s,
                poll_s=poll_s,
            )
            reasons = (f"{detail}; pull request #{pr.number}: {pr.url}", *judged.reasons, *noted)
            if judged.kind == "wait":
                return Published(
                    "WAIT", (f"{WAITING_WORDS} #{pr.number}", *reasons), wait_s=judged.wait_s
                )
            if judged.kind == "fail":
                return Published("RED", reasons, "red")
            if judged.kind == "block":
                return Published("BLOCKED", reasons, "other", alert=judged.alert)
            merged = forge.merge(pr.number, sha=pr.head_sha, method=method)
        except ForgeFault as exc:
            return _fault(ctx, name, exc, poll_s)
        if merged.head_moved:
            return Published(
                "WAIT",
                (
                    f"{WAITING_WORDS} #{pr.number}: its head moved before the merge; read again",
                    merged.message,
                ),
                wait_s=min(poll_s, 5.0),
            )
        if not merged.merged:
            return Published(
                "INFRA", (f"the forge did not merge #{pr.number}: {merged.message}",), "other"
            )
        done = f"merged pull request #{pr.number} ({method}) as {(merged.sha or '?')[:12]}"
        return Published(
            "MERGED",
            (
                *reasons,
                done,
                *remember(ctx, pr, checks, reviews, required=required, merged=merged, now=clock()),
                *_close_issue(ctx, forge, done),
            ),
            merged_sha=merged.sha,
        )

    return publish, None


def _red_already(
    ctx: GateContext, forge: Forge, past: _Past, required: list[str], poll_s: float
) -> Published | None:
    """The pull request as it stands, read before anything is rebased: a failing required
    check or changes requested on its head send the task back now. Rebasing first would
    push a new head whose checks start again, and a red result would be read late, or
    never while main keeps moving."""
    number = past.earlier_pull()
    if number is None:
        return None
    pr = forge.pull(number)
    if pr.state != "open" or pr.merged:
        return None
    if gm.rev_parse(ctx.workspace, "HEAD") != pr.head_sha:
        # The branch moved on since that head was pushed (a new attempt after a rollback):
        # its old checks say nothing about the work that lands now.
        return None
    checks, reviews = forge.checks(pr.head_sha), forge.reviews(pr.number)
    judged = judge_pull(
        number=pr.number,
        head_sha=pr.head_sha,
        candidate=pr.head_sha,
        checks=[_check_view(c) for c in checks],
        required_checks=required,
        reviews=[_review_view(r) for r in reviews],
        required_approvals=0,
        waited_s=0.0,
        timeout_s=float("inf"),
        poll_s=poll_s,
    )
    if judged.kind != "fail":
        return None
    noted = remember(ctx, pr, checks, reviews, required=required)
    return Published(
        "RED", (f"pull request #{pr.number}: {pr.url}", *judged.reasons, *noted), "red"
    )


def _check_view(c: CheckResult) -> CheckView:
    return CheckView(c.name, c.state, c.summary, c.log_tail)


def _review_view(r: Review) -> ReviewView:
    comments = tuple(f"{c.path}:{c.line or '-'}: {c.body}" for c in r.comments)
    return ReviewView(r.author, r.state, r.commit_sha, r.body, comments)


def _note_opened(ctx: GateContext, forge: Forge, past: _Past, number: int, url: str) -> None:
    """Tell the task's issue its pull request is open, the first time it is seen (it is
    recorded, and the task's history names it, from then on)."""
    issue = ctx.task.forge_issue
    if issue is None or ctx.engine is None or past.knows(number, url):
        return
    try:
        forge.comment(issue, f"Task {ctx.task.key}: pull request #{number} is open: {url}")
    except ForgeFault as exc:
        # A comment is news, not state: the landing goes on without it.
        log.warning(
            "could not comment on issue #%s: %s", issue, exc, extra={"action": "forge-note"}
        )


def _close_issue(ctx: GateContext, forge: Forge, done: str) -> tuple[str, ...]:
    """Close the task's issue now that its change is merged; what went wrong, if anything
    (the merge stands either way)."""
    issue = ctx.task.forge_issue
    if issue is None:
        return ()
    try:
        forge.comment(issue, f"Task {ctx.task.key}: {done}.")
        forge.close_issue(issue)
    except ForgeFault as exc:
        return (f"issue #{issue} not closed: {exc}",)
    return (f"issue #{issue} closed",)


def open_after_testing(ctx: GateContext, passed_tests: Sequence[str] | None) -> str:
    """Testing's after-pass step for a repo that lands by pull request: push the tested
    branch and open its pull request now, so the forge's checks and its reviewers start
    while the task goes on through staging; the merge gate later pushes the rebased head
    and decides. Never fails the stage: a forge that does not answer now is asked again by
    the merge gate."""
    del passed_tests
    if not lands_by_pull_request(ctx):
        return ""  # the repo lands by push
    repo, key = ctx.repo, ctx.task.key
    worktree = ctx.worktree
    if worktree is None or not repo.remote:
        return "not opened now: no worktree or no remote (the merge gate opens it)"
    try:
        forge = ctx.forge if ctx.forge is not None else forge_for(repo, os.environ)
    except ConfigError as exc:
        return f"not opened now: {exc}"
    if forge is None:
        return "not opened now: the repo has no forge"
    head = gm.rev_parse(worktree, "HEAD")
    if head is None:
        return "not opened now: the branch has no commit"
    published, detail = worktrees.publish_branch(Path(repo.path), worktree, key)
    if not published:
        return f"not opened now: {detail}"
    pushed, detail = push_task_branch(
        Path(repo.path), repo.remote, key, head, main=repo.main_branch
    )
    if not pushed:
        return f"not opened now: {detail}"
    try:
        pr = forge.open_pull(
            head=worktrees.branch_name(key),
            base=repo.main_branch,
            title=f"{key}: {ctx.task.title}",
            body=_pull_body(ctx),
        )
        _note_opened(ctx, forge, _Past.read(ctx), pr.number, pr.url)
        noted = remember(ctx, pr, forge.checks(pr.head_sha), forge.reviews(pr.number))
    except ForgeFault as exc:
        return f"not opened now: {exc} (the merge gate opens it)"
    return f"pull request #{pr.number} open on {head[:12]}: {pr.url}" + "".join(
        f"; {n}" for n in noted
    )


def _pull_body(ctx: GateContext) -> str:
    """The pull request's description: the task, the test report's summary, a link back."""
    report = taskdir.read_artifact(ctx.task_dir, A.TEST_REPORT) or ""
    summary = "\n".join(report.strip().splitlines()[:40])
    issue = ctx.task.forge_issue
    parts = [
        f"Task {ctx.task.key}: {ctx.task.title}" + (f" (for #{issue})" if issue else ""),
        "",
        ctx.task.body.strip(),
        "",
        "### Test report (summary)",
        "",
        # Quoted as code no line of it can close: the report may be an agent's.
        fence_text(summary or "(no test report)"),
        "",
        f"Opened by the orchestrator for task {ctx.task.key}.",
    ]
    return "\n".join(parts)
