"""``GitHubForge``: the ``Forge`` of one GitHub repository, through githubkit.

Every call is sync, with a timeout, and goes out once: githubkit's own retry (which would
sleep through a rate limit inside the call) is off, because whether and when to try again
is the engine's decision (``ForgeFault.kind``, ``retry_after_s``). Its HTTP cache is off
too: a cached head SHA or check state would be a stale decision.

Any failure of the forge is a ``ForgeFault`` by kind (``fault_from_response``). The token
is only ever in the ``Authorization`` header: never in a message, a log record or a repr.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import RequestError, RequestFailed, RequestTimeout

from orchestrator.errors import ConfigError
from orchestrator.forge.base import (
    CheckResult,
    CheckState,
    ForgeFault,
    ForgeFaultKind,
    ForgeIssue,
    MergeResult,
    PullRequest,
    Review,
    ReviewComment,
)

if TYPE_CHECKING:
    from githubkit_schemas.latest.models import (
        CheckRun,
        Issue,
        PullRequestReview,
        PullRequestReviewComment,
    )

__all__ = ["API_URL", "LOG_TAIL_CHARS", "GitHubForge", "check_run_state", "fault_from_response"]

log = logging.getLogger(__name__)

API_URL = "https://api.github.com"
DEFAULT_TIMEOUT_S = 30.0
# How much of a failed check's output a developer's prompt gets: the end, where the error is.
LOG_TAIL_CHARS = 4000
MergeMethod = Literal["squash", "merge", "rebase"]
MERGE_METHODS: dict[str, MergeMethod] = {"squash": "squash", "merge": "merge", "rebase": "rebase"}
_PER_PAGE = 100
_SUCCESS_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
ReviewState = Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED"]
_REVIEW_STATES: dict[str, ReviewState] = {
    "APPROVED": "APPROVED",
    "CHANGES_REQUESTED": "CHANGES_REQUESTED",
    "COMMENTED": "COMMENTED",
    "DISMISSED": "DISMISSED",
}

T = TypeVar("T")


def fault_from_response(
    what: str, response: httpx.Response, *, now: float | None = None
) -> ForgeFault:
    """The ``ForgeFault`` an error answer of GitHub's is: 5xx an outage; 429, or a 403
    with ``retry-after`` or ``x-ratelimit-remaining: 0``, a rate limit; 401, or any other
    403, credentials; any other 4xx a refused request."""
    status = response.status_code
    headers = response.headers
    message = f"{what}: {_error_message(response)}"
    retry_after = _retry_after_s(headers, now)
    details = {"request_id": headers.get("x-github-request-id", "")}
    rate_limited = "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
    if status == 429 or (status == 403 and rate_limited):
        kind = ForgeFaultKind.RATE_LIMITED
    elif status >= 500:
        kind = ForgeFaultKind.OUTAGE
    elif status in (401, 403):
        kind = ForgeFaultKind.CREDENTIALS
        retry_after = None
    else:
        kind = ForgeFaultKind.REQUEST
        retry_after = None
    return ForgeFault(kind, message, status=status, retry_after_s=retry_after, details=details)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return response.reason_phrase or f"HTTP {response.status_code}"
    # A 422's "Validation Failed" says why only in its errors: each one's message, or the
    # field and the code.
    why = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            text = err.get("message") or " ".join(
                str(err[k]) for k in ("field", "code") if err.get(k)
            )
            why.append(str(text))
    message = str(body["message"]) + (f" ({'; '.join(why)})" if why else "")
    return message[:500]


def _retry_after_s(headers: Mapping[str, str], now: float | None) -> float | None:
    """Seconds to wait: ``retry-after``, else ``x-ratelimit-reset`` minus now (when the
    limit is spent), else None (the engine's own backoff)."""
    if "retry-after" in headers:
        try:
            return max(0.0, float(headers["retry-after"]))
        except ValueError:
            return None
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        clock = now if now is not None else dt.datetime.now(dt.UTC).timestamp()
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - clock)
        except ValueError:
            return None
    return None


def check_run_state(status: str, conclusion: str | None) -> CheckState:
    """A check run's state: pending until completed; success for success, neutral and
    skipped; failure for anything else (failure, cancelled, timed_out, action_required,
    stale, an unknown word): fail closed."""
    if status != "completed":
        return "pending"
    return "success" if conclusion in _SUCCESS_CONCLUSIONS else "failure"


def status_state(state: str) -> CheckState:
    """A commit status's state: pending, success, or failure (failure, error, unknown)."""
    if state in ("pending", "success"):
        return "pending" if state == "pending" else "success"
    return "failure"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _login(user: Any) -> str:
    login = getattr(user, "login", None)
    return login if isinstance(login, str) else "ghost"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every forge call: the one httpx would build for each client
    (certificates checked against its CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` read
    from the environment), built once. githubkit makes a client per API call, and each
    would read the CA bundle again: ~20 ms a call here."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


class GitHubForge:
    """One GitHub repository, ``OWNER/NAME``, with a token (see the module docstring)."""

    def __init__(
        self,
        repo: str,
        token: str,
        *,
        base_url: str = API_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name or "/" in name:
            msg = f"a GitHub repository is OWNER/NAME, not {repo!r}"
            raise ConfigError(msg)
        if not token:
            msg = f"no GitHub token for {repo}"
            raise ConfigError(msg)
        self.repo = repo
        self._owner, self._name = owner, name
        self._gh: GitHub[Any] = GitHub(
            TokenAuthStrategy(token),
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s),
            ssl_verify=tls_context(),
            auto_retry=False,
            http_cache=False,
        )

    def __repr__(self) -> str:
        return f"GitHubForge({self.repo!r})"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call (and the parsing of its answer); any failure is a ForgeFault."""
        try:
            return fn()
        except RequestFailed as exc:
            fault = fault_from_response(what, exc.response.raw_response)
        except RequestTimeout as exc:
            fault = ForgeFault(
                ForgeFaultKind.OUTAGE, f"{what}: timed out ({type(exc.exc).__name__})"
            )
        except RequestError as exc:
            # A refused connection, a reset, a DNS failure: the forge is out of reach. The
            # cause's own text names the host and the error, never a header.
            fault = ForgeFault(ForgeFaultKind.OUTAGE, f"{what}: unreachable ({exc.exc})")
        except ValueError as exc:
            # An answer githubkit's models cannot read (pydantic's ValidationError is a
            # ValueError), or a header it cannot parse: the forge misbehaves, the task
            # did nothing wrong.
            fault = ForgeFault(ForgeFaultKind.OUTAGE, f"{what}: answer not understood ({exc})")
        log.info("%s: %s", self.repo, fault, extra={"action": f"forge-{fault.kind.value}"})
        raise fault

    # -- issues -------------------------------------------------------------------------
    def labeled_issues(self, label: str) -> list[ForgeIssue]:
        """Open issues that carry ``label``, oldest first (pull requests left out)."""
        rest = self._gh.rest

        def fetch() -> list[ForgeIssue]:
            pages: Iterable[Issue] = rest.paginate(
                rest.issues.list_for_repo,
                owner=self._owner,
                repo=self._name,
                labels=label,
                state="open",
                sort="created",
                direction="asc",
                per_page=_PER_PAGE,
            )
            return [self._issue(i) for i in pages if not i.pull_request]

        return self._call(f"list issues labeled {label!r}", fetch)

    def issue(self, number: int) -> ForgeIssue:
        """One issue, open or closed."""
        rest = self._gh.rest
        return self._call(
            f"read issue #{number}",
            lambda: self._issue(rest.issues.get(self._owner, self._name, number).parsed_data),
        )

    def _issue(self, raw: Any) -> ForgeIssue:
        labels = []
        for label in raw.labels:
            name = label if isinstance(label, str) else getattr(label, "name", None)
            if isinstance(name, str):
                labels.append(name)
        state: Literal["open", "closed"] = "closed" if raw.state == "closed" else "open"
        return ForgeIssue(
            number=raw.number,
            title=raw.title,
            body=_text(raw.body),
            url=raw.html_url,
            author=_login(raw.user),
            labels=tuple(labels),
            state=state,
        )

    def comment(self, number: int, body: str) -> None:
        """Comment on an issue or a pull request."""
        rest = self._gh.rest
        self._call(
            f"comment on #{number}",
            lambda: rest.issues.create_comment(self._owner, self._name, number, body=body),
        )

    def close_issue(self, number: int) -> None:
        """Close an issue."""
        rest = self._gh.rest
        self._call(
            f"close issue #{number}",
            lambda: rest.issues.update(self._owner, self._name, number, state="closed"),
        )

    # -- pull requests ---------------------------------------------------------------------
    def open_pull(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """The open pull request of ``head`` into ``base``: the existing one, else a new one.
        Two callers racing both end with the one GitHub kept (its 422 for the second)."""
        found = self._open_pull_of(head, base)
        if found is not None:
            return found
        rest = self._gh.rest
        try:
            made = self._call(
                f"open a pull request of {head} into {base}",
                lambda: (
                    rest.pulls.create(
                        self._owner, self._name, head=head, base=base, title=title, body=body
                    ).parsed_data
                ),
            )
        except ForgeFault as fault:
            if fault.status == 422 and (again := self._open_pull_of(head, base)) is not None:
                return again
            raise
        return self._pull(made)

    def _open_pull_of(self, head: str, base: str) -> PullRequest | None:
        rest = self._gh.rest
        found = self._call(
            f"find the open pull request of {head}",
            lambda: (
                rest.pulls.list(
                    self._owner, self._name, head=f"{self._owner}:{head}", base=base, state="open"
                ).parsed_data
            ),
        )
        return self._pull(found[0]) if found else None

    def pull(self, number: int) -> PullRequest:
        """A pull request as it is now."""
        rest = self._gh.rest
        return self._call(
            f"read pull request #{number}",
            lambda: self._pull(rest.pulls.get(self._owner, self._name, number).parsed_data),
        )

    def _pull(self, raw: Any) -> PullRequest:
        state: Literal["open", "closed"] = "closed" if raw.state == "closed" else "open"
        return PullRequest(
            number=raw.number,
            url=raw.html_url,
            head_ref=raw.head.ref,
            head_sha=raw.head.sha,
            base_ref=raw.base.ref,
            state=state,
            merged=bool(getattr(raw, "merged", False)) or raw.merged_at is not None,
        )

    # -- branch protection -------------------------------------------------------------------
    def _protection(self, branch: str) -> Any | None:
        rest = self._gh.rest
        try:
            return self._call(
                f"read the protection of {branch}",
                lambda: (
                    rest.repos.get_branch_protection(self._owner, self._name, branch).parsed_data
                ),
            )
        except ForgeFault as fault:
            # GitHub says "Branch not protected" with a 404; any other 404 (no such repo or
            # branch, a token that may not see it) stays a fault.
            if fault.status == 404 and "Branch not protected" in fault.message:
                return None
            raise

    def required_checks(self, branch: str) -> list[str]:
        """The checks branch protection requires on ``branch``; [] when it has none."""
        prot = self._protection(branch)
        checks = getattr(prot, "required_status_checks", None) if prot is not None else None
        if not checks:
            return []
        names = list(checks.contexts or [])
        names += [c.context for c in (checks.checks or []) if c.context not in names]
        return names

    def required_approvals(self, branch: str) -> int:
        """How many approvals branch protection requires on ``branch``; 0 when none."""
        prot = self._protection(branch)
        reviews = getattr(prot, "required_pull_request_reviews", None) if prot else None
        count = getattr(reviews, "required_approving_review_count", None) if reviews else None
        return count if isinstance(count, int) else 0

    # -- checks and reviews ------------------------------------------------------------------
    def checks(self, sha: str) -> list[CheckResult]:
        """Every check on ``sha``: commit statuses and check runs, the newest per name."""
        rest = self._gh.rest
        combined = self._call(
            f"read the statuses of {sha[:12]}",
            lambda: (
                rest.repos.get_combined_status_for_ref(
                    self._owner, self._name, sha, per_page=_PER_PAGE
                ).parsed_data
            ),
        )
        runs: list[CheckRun] = self._call(
            f"read the check runs of {sha[:12]}",
            lambda: list(
                rest.paginate(
                    rest.checks.list_for_ref,
                    map_func=lambda r: r.parsed_data.check_runs,
                    owner=self._owner,
                    repo=self._name,
                    ref=sha,
                    per_page=_PER_PAGE,
                )
            ),
        )
        # Newest per name across both kinds: (when, id) orders them, a later report of a
        # name replaces an earlier one, whichever kind each was.
        newest: dict[str, tuple[tuple[float, int], CheckResult]] = {}

        def keep(when: dt.datetime | None, ident: int, result: CheckResult) -> None:
            key = ((when.timestamp() if when else 0.0), ident)
            if result.name not in newest or key > newest[result.name][0]:
                newest[result.name] = (key, result)

        for s in combined.statuses:
            result = CheckResult(
                name=s.context,
                state=status_state(s.state),
                summary=_text(s.description),
                details_url=s.target_url,
            )
            keep(s.updated_at, s.id, result)
        for run in runs:
            out = run.output
            summary = "\n".join(x for x in (_text(out.title), _text(out.summary)) if x)
            result = CheckResult(
                name=run.name,
                state=check_run_state(run.status, run.conclusion),
                summary=summary,
                details_url=run.details_url or run.html_url,
                log_tail=_text(out.text)[-LOG_TAIL_CHARS:],
            )
            keep(run.completed_at or run.started_at, run.id, result)
        return [result for _, result in sorted(newest.values(), key=lambda kv: kv[1].name)]

    def reviews(self, number: int) -> list[Review]:
        """Submitted reviews, oldest first, each with its line comments (pending ones left
        out: nobody has said them yet)."""
        rest = self._gh.rest
        raw_reviews: list[PullRequestReview] = self._call(
            f"read the reviews of #{number}",
            lambda: list(
                rest.paginate(
                    rest.pulls.list_reviews,
                    owner=self._owner,
                    repo=self._name,
                    pull_number=number,
                    per_page=_PER_PAGE,
                )
            ),
        )
        raw_comments: list[PullRequestReviewComment] = self._call(
            f"read the review comments of #{number}",
            lambda: list(
                rest.paginate(
                    rest.pulls.list_review_comments,
                    owner=self._owner,
                    repo=self._name,
                    pull_number=number,
                    per_page=_PER_PAGE,
                )
            ),
        )
        by_review: dict[int, list[ReviewComment]] = {}
        for c in raw_comments:
            if c.pull_request_review_id is None:
                continue
            line = c.line if isinstance(c.line, int) else None
            by_review.setdefault(c.pull_request_review_id, []).append(
                ReviewComment(path=c.path, line=line, body=c.body)
            )
        found = []
        for r in raw_reviews:
            state = _REVIEW_STATES.get(r.state)
            if state is None:
                continue
            found.append(
                Review(
                    id=r.id,
                    author=_login(r.user),
                    state=state,
                    body=r.body,
                    commit_sha=r.commit_id or "",
                    comments=tuple(by_review.get(r.id, ())),
                )
            )
        return found

    # -- merge ---------------------------------------------------------------------------------
    def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        """Merge if the head is still ``sha``. A moved head (409, or 405 "Head branch was
        modified") and a merge GitHub refuses (405: not mergeable, a required check or
        review) are values; trouble with GitHub is a ForgeFault."""
        if method not in MERGE_METHODS:
            msg = f"merge #{number}: unknown merge method {method!r} (squash, merge, rebase)"
            raise ForgeFault(ForgeFaultKind.REQUEST, msg)
        rest = self._gh.rest
        try:
            done = self._call(
                f"merge #{number} at {sha[:12]}",
                lambda: (
                    rest.pulls.merge(
                        self._owner,
                        self._name,
                        number,
                        sha=sha,
                        merge_method=MERGE_METHODS[method],
                    ).parsed_data
                ),
            )
        except ForgeFault as fault:
            text = fault.message.split(": ", 1)[-1]
            if fault.status == 409 or (fault.status == 405 and "Head branch was modified" in text):
                return MergeResult(merged=False, message=text, head_moved=True)
            if fault.status == 405:
                return MergeResult(merged=False, message=text)
            raise
        return MergeResult(merged=bool(done.merged), sha=done.sha, message=done.message)
