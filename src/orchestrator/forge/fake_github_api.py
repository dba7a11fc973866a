"""The fake GitHub's REST API: the routes of api.github.com it answers, and the changes
they and the test controls share (an issue opened or closed, a comment, a pull request
opened or merged), each queueing the webhook GitHub would send (``fake_github_hooks``).

Every route runs under the fake's lock (``FakeGitHub.changing``); answers are values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlencode

from orchestrator.forge import fake_github_hooks as hooks
from orchestrator.forge import fake_github_json as j
from orchestrator.forge import fake_github_model as m
from orchestrator.forge.fake_github_model import FakeIssue, FakePull, FakeRepo, Json

if TYPE_CHECKING:
    from orchestrator.forge.fake_github import FakeGitHub

__all__ = ["Answer", "ApiRequest", "dispatch"]

MERGE_METHODS = ("merge", "squash", "rebase")
HEAD_MODIFIED = "Head branch was modified. Review and try the merge again."
NOT_MERGEABLE = "Pull Request is not mergeable"


@dataclass(frozen=True)
class ApiRequest:
    """One API request: method, path, query (first value of each key), JSON body."""

    method: str
    path: str
    query: dict[str, str]
    body: Json | None


@dataclass(frozen=True)
class Answer:
    """What a route answers."""

    status: int
    payload: Json | list[Json] | None
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, message: str, errors: list[Json] | None = None) -> Answer:
    body = j.error_body(status, message)
    if errors:
        body["errors"] = errors
    return Answer(status, body)


def _invalid(errors: list[Json]) -> Answer:
    return _error(422, "Validation Failed", errors)


Route = Callable[["FakeGitHub", FakeRepo, ApiRequest, dict[str, str]], Answer]
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = []
_REPO = r"^/repos/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)"


def _route(method: str, tail: str) -> Callable[[Route], Route]:
    def register(fn: Route) -> Route:
        _ROUTES.append((method, re.compile(_REPO + tail + "$"), fn))
        return fn

    return register


def dispatch(fake: FakeGitHub, request: ApiRequest) -> Answer:
    """The answer to ``request``: its route's, or GitHub's 404."""
    for method, pattern, fn in _ROUTES:
        found = pattern.match(request.path)
        if found is None or method != request.method:
            continue
        params = {k: unquote(v) for k, v in found.groupdict().items()}
        repo = fake.repos.get(f"{params['owner']}/{params['name']}")
        if repo is None:
            return _error(404, "Not Found")
        return fn(fake, repo, request, params)
    return _error(404, "Not Found")


def _page(fake: FakeGitHub, request: ApiRequest, items: list[Json]) -> Answer:
    """One page of ``items`` (``per_page``, ``page``) with GitHub's ``Link`` header."""
    try:
        per_page = max(1, min(100, int(request.query.get("per_page", "30"))))
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        return _error(400, "Invalid page")
    chunk = items[(page - 1) * per_page : page * per_page]
    last = max(1, -(-len(items) // per_page))
    wanted = [("prev", page - 1), ("next", page + 1), ("first", 1), ("last", last)]
    links = []
    for rel, target in wanted:
        if last == 1 or not 1 <= target <= last or (rel in ("first", "prev") and page == 1):
            continue
        if rel in ("next", "last") and page >= last:
            continue
        query = urlencode({**request.query, "page": str(target)})
        links.append(f'<{fake.url}{request.path}?{query}>; rel="{rel}"')
    return Answer(200, chunk, (("Link", ", ".join(links)),) if links else ())


def _sort(items: list[FakeIssue], request: ApiRequest) -> list[FakeIssue]:
    key = request.query.get("sort", "created")
    newest_first = request.query.get("direction", "desc") != "asc"
    if key == "updated":
        return sorted(items, key=lambda i: (i.updated_at, i.number), reverse=newest_first)
    return sorted(items, key=lambda i: i.number, reverse=newest_first)


# -- changes shared by the routes and the test controls ------------------------------------
def new_issue(
    fake: FakeGitHub, repo: FakeRepo, title: str, body: str, author: str, labels: Sequence[str]
) -> FakeIssue:
    """A new issue numbered after every issue and pull request so far."""
    now = fake.tick()
    number = len(repo.issues) + 1
    issue = FakeIssue(number, fake.next_id(), title, body, author, now, now, list(labels))
    repo.issues[number] = issue
    return issue


def set_issue_state(
    fake: FakeGitHub, repo: FakeRepo, issue: FakeIssue, state: str, by: str
) -> None:
    """Close or reopen an issue (a pull request's too), with its webhook."""
    if issue.state == state:
        return
    issue.state = state
    issue.updated_at = fake.tick()
    issue.closed_at = issue.updated_at if state == "closed" else None
    action = "closed" if state == "closed" else "reopened"
    pull = repo.pulls.get(issue.number)
    if pull is not None:
        fake.emit(
            "pull_request",
            hooks.pull_event(fake.url, repo, pull_json_now(fake, repo, pull), action, by),
        )
    else:
        fake.emit("issues", hooks.issue_event(fake.url, repo, issue, action, by))


def add_comment(
    fake: FakeGitHub, repo: FakeRepo, issue: FakeIssue, body: str, author: str
) -> m.FakeComment:
    comment = m.FakeComment(fake.next_id(), author, body, fake.tick())
    issue.comments.append(comment)
    fake.emit("issue_comment", hooks.comment_event(fake.url, repo, issue, comment))
    return comment


def new_pull(
    fake: FakeGitHub, repo: FakeRepo, head: str, base: str, title: str, body: str, author: str
) -> FakePull | str:
    """Open a pull request, or why GitHub would refuse it (422's message)."""
    head_ref = head.split(":", 1)[1] if ":" in head else head
    head_sha = fake.bare.branch_sha(repo.full_name, head_ref)
    base_sha = fake.bare.branch_sha(repo.full_name, base)
    if head_sha is None:
        return f"head: no branch {head_ref}"
    if base_sha is None:
        return f"base: no branch {base}"
    for pull in repo.pulls.values():
        if pull.issue.state == "open" and (pull.head_ref, pull.base_ref) == (head_ref, base):
            return f"A pull request already exists for {repo.owner}:{head_ref}."
    if not fake.bare.commits_between(repo.full_name, base_sha, head_sha):
        return f"No commits between {base} and {head_ref}"
    issue = new_issue(fake, repo, title, body, author, ())
    issue.is_pull = True
    pull = FakePull(issue, fake.next_id(), head_ref, base, head_sha, base_sha)
    repo.pulls[issue.number] = pull
    fake.emit(
        "pull_request",
        hooks.pull_event(fake.url, repo, pull_json_now(fake, repo, pull), "opened", author),
    )
    return pull


def _protection_refusal(fake: FakeGitHub, repo: FakeRepo, pull: FakePull) -> str | None:
    """Why the base branch's protection refuses this merge now, or None."""
    prot = repo.protections.get(pull.base_ref)
    if prot is None:
        return None
    for context in prot.contexts:
        if _check_state(repo, pull.head_sha, context) != "success":
            return f'Required status check "{context}" is expected.'
    latest: dict[str, str] = {}
    for review in repo.reviews:
        if review.number == pull.issue.number and review.state != "COMMENTED":
            latest[review.author] = review.state
    if "CHANGES_REQUESTED" in latest.values():
        return "Changes requested by a reviewer."
    if sum(1 for s in latest.values() if s == "APPROVED") < prot.approvals:
        return (
            f"At least {prot.approvals} approving review is required by reviewers with "
            "write access."
        )
    return None


def _check_state(repo: FakeRepo, sha: str, name: str) -> str:
    """The newest state of check ``name`` on ``sha`` (a status or a check run)."""
    seen = [
        (s.created_at, s.id, s.state) for s in repo.statuses if s.sha == sha and s.context == name
    ]
    for run in repo.check_runs:
        if run.sha == sha and run.name == name:
            ok = run.conclusion in ("success", "neutral", "skipped")
            state = "pending" if run.status != "completed" else "success" if ok else "failure"
            seen.append((run.started_at, run.id, state))
    return max(seen)[2] if seen else "missing"


def merge_pull(
    fake: FakeGitHub, repo: FakeRepo, pull: FakePull, sha: str | None, method: str
) -> Answer:
    """``PUT .../merge``: refused (405, 409) or done for real in the bare repository."""
    fake.refresh(repo, pull)
    if pull.merged or pull.issue.state != "open":
        return _error(405, NOT_MERGEABLE)
    if sha and sha != pull.head_sha:
        return _error(409, HEAD_MODIFIED)
    refusal = _protection_refusal(fake, repo, pull)
    if refusal is not None:
        return _error(405, refusal)
    n, title = pull.issue.number, pull.issue.title
    if method == "squash":
        commits = fake.bare.commits_between(repo.full_name, pull.base_sha, pull.head_sha)
        subjects = [fake.bare.must(repo.full_name, "log", "-1", "--format=%s", c) for c in commits]
        message = f"{title} (#{n})\n\n" + "\n".join(f"* {s}" for s in subjects)
    else:
        message = f"Merge pull request #{n} from {repo.owner}/{pull.head_ref}\n\n{title}"
    outcome = fake.bare.merge(
        repo.full_name,
        base=pull.base_ref,
        head_sha=pull.head_sha,
        method=method,
        message=message,
        author=fake.login,
    )
    if outcome.sha is None:
        return _error(405, outcome.reason)
    now = fake.tick()
    pull.merged, pull.merged_at, pull.merge_commit_sha = True, now, outcome.sha
    pull.issue.state, pull.issue.closed_at, pull.issue.updated_at = "closed", now, now
    fake.emit(
        "pull_request",
        hooks.pull_event(fake.url, repo, pull_json_now(fake, repo, pull), "closed", fake.login),
    )
    body = {"sha": outcome.sha, "merged": True, "message": "Pull Request successfully merged"}
    return Answer(200, body)


def pull_json_now(fake: FakeGitHub, repo: FakeRepo, pull: FakePull) -> Json:
    """A pull request's JSON, ``mergeable`` computed against its base now."""
    mergeable = None
    if pull.issue.state == "open":
        mergeable = fake.bare.mergeable(repo.full_name, pull.base_sha, pull.head_sha)
    return j.pull_json(fake.url, repo, pull, mergeable=mergeable)


# -- routes -----------------------------------------------------------------------------------
@_route("GET", "")
def _get_repo(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    return Answer(200, j.repo_json(fake.url, repo))


@_route("GET", "/issues")
def _list_issues(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    # As on GitHub, pull requests are issues too and are listed (with a pull_request key).
    state = req.query.get("state", "open")
    wanted = [x for x in req.query.get("labels", "").split(",") if x]
    found = [
        i
        for i in repo.issues.values()
        if state in ("all", i.state) and all(label in i.labels for label in wanted)
    ]
    return _page(fake, req, [j.issue_json(fake.url, repo, i) for i in _sort(found, req)])


def _issue_or_404(repo: FakeRepo, p: dict[str, str]) -> FakeIssue | Answer:
    issue = repo.issues.get(int(p["number"]))
    return issue if issue is not None else _error(404, "Not Found")


@_route("GET", r"/issues/(?P<number>\d+)")
def _get_issue(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    issue = _issue_or_404(repo, p)
    return issue if isinstance(issue, Answer) else Answer(200, j.issue_json(fake.url, repo, issue))


@_route("PATCH", r"/issues/(?P<number>\d+)")
def _patch_issue(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    issue = _issue_or_404(repo, p)
    if isinstance(issue, Answer):
        return issue
    state = (req.body or {}).get("state")
    if state not in (None, "open", "closed"):
        return _invalid([{"resource": "Issue", "field": "state", "code": "invalid"}])
    if state is not None:
        set_issue_state(fake, repo, issue, state, fake.login)
    return Answer(200, j.issue_json(fake.url, repo, issue))


@_route("GET", r"/issues/(?P<number>\d+)/comments")
def _list_comments(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    issue = _issue_or_404(repo, p)
    if isinstance(issue, Answer):
        return issue
    return _page(
        fake, req, [j.comment_json(fake.url, repo, issue.number, c) for c in issue.comments]
    )


@_route("POST", r"/issues/(?P<number>\d+)/comments")
def _post_comment(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    issue = _issue_or_404(repo, p)
    if isinstance(issue, Answer):
        return issue
    body = (req.body or {}).get("body")
    if not isinstance(body, str) or not body:
        return _invalid([{"resource": "IssueComment", "field": "body", "code": "missing_field"}])
    comment = add_comment(fake, repo, issue, body, fake.login)
    return Answer(201, j.comment_json(fake.url, repo, issue.number, comment))


@_route("GET", "/pulls")
def _list_pulls(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    state = req.query.get("state", "open")
    head = req.query.get("head", "")
    owner, _, ref = head.rpartition(":")
    found = []
    for pull in repo.pulls.values():
        fake.refresh(repo, pull)
        if state not in ("all", pull.issue.state):
            continue
        if head and (pull.head_ref != ref or (owner and owner != repo.owner)):
            continue
        if req.query.get("base") and pull.base_ref != req.query["base"]:
            continue
        found.append(pull)
    newest_first = req.query.get("direction", "desc") != "asc"
    found.sort(key=lambda x: x.issue.number, reverse=newest_first)
    return _page(fake, req, [pull_json_now(fake, repo, x) for x in found])


@_route("POST", "/pulls")
def _create_pull(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    body = req.body or {}
    head, base = body.get("head"), body.get("base")
    if not isinstance(head, str) or not isinstance(base, str):
        return _invalid([{"resource": "PullRequest", "field": "head", "code": "missing_field"}])
    title = body.get("title") or head
    made = new_pull(fake, repo, head, base, str(title), str(body.get("body") or ""), fake.login)
    if isinstance(made, str):
        field, _, why = made.partition(": ")
        if field in ("head", "base") and why:
            return _invalid([{"resource": "PullRequest", "field": field, "code": "invalid"}])
        return _invalid([{"resource": "PullRequest", "code": "custom", "message": made}])
    return Answer(201, pull_json_now(fake, repo, made))


def _pull_or_404(fake: FakeGitHub, repo: FakeRepo, p: dict[str, str]) -> FakePull | Answer:
    pull = repo.pulls.get(int(p["number"]))
    if pull is None:
        return _error(404, "Not Found")
    fake.refresh(repo, pull)
    return pull


@_route("GET", r"/pulls/(?P<number>\d+)")
def _get_pull(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    pull = _pull_or_404(fake, repo, p)
    return pull if isinstance(pull, Answer) else Answer(200, pull_json_now(fake, repo, pull))


@_route("PUT", r"/pulls/(?P<number>\d+)/merge")
def _merge(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    pull = _pull_or_404(fake, repo, p)
    if isinstance(pull, Answer):
        return pull
    body = req.body or {}
    method = body.get("merge_method", "merge")
    if method not in MERGE_METHODS:
        return _invalid([{"resource": "PullRequest", "field": "merge_method", "code": "invalid"}])
    sha = body.get("sha")
    return merge_pull(fake, repo, pull, sha if isinstance(sha, str) else None, str(method))


@_route("GET", r"/pulls/(?P<number>\d+)/reviews")
def _reviews(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    pull = _pull_or_404(fake, repo, p)
    if isinstance(pull, Answer):
        return pull
    found = [r for r in repo.reviews if r.number == pull.issue.number]
    return _page(fake, req, [j.review_json(fake.url, repo, r) for r in found])


@_route("GET", r"/pulls/(?P<number>\d+)/comments")
def _review_comments(
    fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]
) -> Answer:
    pull = _pull_or_404(fake, repo, p)
    if isinstance(pull, Answer):
        return pull
    n = pull.issue.number
    found = [c for r in repo.reviews if r.number == n for c in r.comments]
    found.sort(key=lambda c: c.id)
    return _page(fake, req, [j.review_comment_json(fake.url, repo, n, c) for c in found])


def _resolve(fake: FakeGitHub, repo: FakeRepo, ref: str) -> str | None:
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref
    return fake.bare.resolve(repo.full_name, ref)


@_route("GET", r"/commits/(?P<ref>.+)/status")
def _combined_status(
    fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]
) -> Answer:
    sha = _resolve(fake, repo, p["ref"])
    if sha is None:
        return _error(404, f"No commit found for SHA: {p['ref']}")
    newest: dict[str, m.FakeStatus] = {}
    for status in repo.statuses:
        if status.sha == sha:
            newest[status.context] = status
    statuses = sorted(newest.values(), key=lambda s: s.id)
    return Answer(
        200,
        {
            "state": j.combined_state([s.state for s in statuses]),
            "statuses": [j.status_json(fake.url, repo, s) for s in statuses],
            "sha": sha,
            "total_count": len(statuses),
            "repository": j.repo_json(fake.url, repo),
            "commit_url": f"{fake.url}/repos/{repo.full_name}/commits/{sha}",
            "url": f"{fake.url}/repos/{repo.full_name}/commits/{sha}/status",
        },
    )


@_route("GET", r"/commits/(?P<ref>.+)/check-runs")
def _check_runs(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    sha = _resolve(fake, repo, p["ref"])
    if sha is None:
        return _error(404, f"No commit found for SHA: {p['ref']}")
    runs = [r for r in repo.check_runs if r.sha == sha]
    if req.query.get("filter", "latest") == "latest":
        newest = {r.name: r for r in runs}
        runs = sorted(newest.values(), key=lambda r: r.id)
    runs.sort(key=lambda r: r.id, reverse=True)
    page = _page(fake, req, [j.check_run_json(fake.url, repo, r) for r in runs])
    if page.status != 200:
        return page
    body = {"total_count": len(runs), "check_runs": page.payload}
    return Answer(200, body, page.headers)


@_route("GET", r"/branches/(?P<branch>.+)/protection")
def _protection(fake: FakeGitHub, repo: FakeRepo, req: ApiRequest, p: dict[str, str]) -> Answer:
    prot = repo.protections.get(p["branch"])
    if prot is None:
        return _error(404, "Branch not protected")
    return Answer(200, j.protection_json(fake.url, repo, p["branch"], prot))
