"""A fake GitHub the project ships, for its tests and its demo: a threaded HTTP server on
127.0.0.1 backed by real bare git repositories.

- git's smart HTTP at ``/{owner}/{repo}.git`` (``git http-backend``), so clone, fetch and
  push are real; Basic auth with the token as the password (GitHub's ``x-access-token``).
- the REST API's paths as on api.github.com (``fake_github_api``): issues, comments, pull
  requests and their merge, commit statuses, check runs, reviews, branch protection; the
  token in ``Authorization: Bearer|token``.
- faults on demand: ``fail_next``, ``secondary_rate_limit``, ``primary_rate_limit``,
  ``stall_next``, ``set_token``.
- test controls, Python methods: what people and CI do on GitHub (open and label issues,
  report checks, review, protect a branch, push), each sending the webhook GitHub would.

Usage::

    with FakeGitHub(tmp_path) as gh:
        gh.create_repo("acme/app", files={"README.md": "hi\\n"})
        number = gh.open_issue("acme/app", "Fix it", labels=["orchestrate"])
        forge = GitHubForge("acme/app", gh.token, base_url=gh.url)
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from orchestrator.errors import OrchestratorError
from orchestrator.forge import fake_github_api as api
from orchestrator.forge import fake_github_hooks as hooks
from orchestrator.forge.fake_git_http import BareRepos
from orchestrator.forge.fake_github_hooks import Delivery, WebhookSender
from orchestrator.forge.fake_github_http import FakeRequest, FakeServer, FaultInjection
from orchestrator.forge.fake_github_json import commit_json, user_json
from orchestrator.forge.fake_github_model import (
    FakeCheckRun,
    FakeComment,
    FakeIssue,
    FakeProtection,
    FakePull,
    FakeRepo,
    FakeReview,
    FakeReviewComment,
    FakeStatus,
    Json,
)

__all__ = ["FakeGitHub", "FakeGitHubError", "FakeRequest"]


REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "PENDING", "DISMISSED")


class FakeGitHubError(OrchestratorError):
    """A test control was asked for what is not there (an unknown repo, issue or pull)."""


class FakeGitHub(FaultInjection):
    """The fake GitHub: start it (or use it as a context manager), then point a client at
    ``url``. ``token`` is the one token it accepts; ``login`` is that token's user."""

    def __init__(self, root: Path, *, token: str | None = None, login: str = "orch-bot") -> None:
        super().__init__(token or f"ghp_fake{uuid.uuid4().hex}", login)
        self.bare = BareRepos(root / "git")
        self.bare.root.mkdir(parents=True, exist_ok=True)
        self.hooks = WebhookSender()
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[FakeRequest] = []
        self._outbox: list[Delivery] = []
        self._ids = itertools.count(1001)
        # A clock that moves one second per record, so "newest" is never a tie.
        self._clock = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self._server: FakeServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeGitHub:
        """Listen on a free port of 127.0.0.1, serving from a daemon thread."""
        server = FakeServer(self)
        self._server = server
        # poll_interval: how soon close()'s shutdown() returns (socketserver's default of
        # 0.5 s was a quarter of a second, on average, at every close).
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-github",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the API's base URL and the git host alike."""
        if self._server is None:
            msg = "the fake GitHub is not started"
            raise FakeGitHubError(msg)
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def clone_url(self, repo: str, *, token: str | None = None) -> str:
        """The HTTP clone URL of ``repo`` with a token in it (default: the good one)."""
        secret = self._token if token is None else token
        return self.url.replace("http://", f"http://x-access-token:{secret}@") + f"/{repo}.git"

    # -- records ---------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def tick(self) -> dt.datetime:
        """The fake clock's next second."""
        with self._lock:
            self._clock += dt.timedelta(seconds=1)
            return self._clock

    def repo(self, repo: str) -> FakeRepo:
        """The records of ``owner/name``."""
        found = self.repos.get(repo)
        if found is None:
            msg = f"no repository {repo} on the fake GitHub"
            raise FakeGitHubError(msg)
        return found

    def issue(self, repo: str, number: int) -> FakeIssue:
        """Issue (or pull request) ``number``'s record."""
        found = self.repo(repo).issues.get(number)
        if found is None:
            msg = f"no issue #{number} in {repo}"
            raise FakeGitHubError(msg)
        return found

    def pull(self, repo: str, number: int) -> FakePull:
        """Pull request ``number``'s record, its head read from the branch now."""
        with self._lock:
            found = self.repo(repo).pulls.get(number)
            if found is None:
                msg = f"no pull request #{number} in {repo}"
                raise FakeGitHubError(msg)
            self.refresh(self.repo(repo), found)
            return found

    def refresh(self, repo: FakeRepo, pull: FakePull) -> None:
        """An open pull request's head and base follow their branches in the bare repo."""
        if pull.issue.state != "open":
            return
        head = self.bare.branch_sha(repo.full_name, pull.head_ref)
        base = self.bare.branch_sha(repo.full_name, pull.base_ref)
        pull.head_sha = head or pull.head_sha
        pull.base_sha = base or pull.base_sha

    def comments(self, repo: str, number: int) -> list[FakeComment]:
        """The comments on issue or pull request ``number``, oldest first."""
        return list(self.issue(repo, number).comments)

    def api_requests(self, method: str | None = None, path_suffix: str = "") -> list[FakeRequest]:
        """The API requests received, filtered by method and the end of their path."""
        return [
            r
            for r in list(self.requests)
            if r.kind == "api"
            and (method is None or r.method == method)
            and r.path.endswith(path_suffix)
        ]

    # -- webhooks --------------------------------------------------------------------
    def set_webhook(self, url: str | None, secret: str | bytes = b"") -> None:
        """Send deliveries to ``url`` (None: stop), signed with ``secret``."""
        self.hooks.url = url
        self.hooks.secret = secret.encode() if isinstance(secret, str) else secret

    @property
    def deliveries(self) -> list[Delivery]:
        """Every delivery made, oldest first (also when no URL was set)."""
        return list(self.hooks.deliveries)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again, same id and body, as GitHub's "Redeliver" does."""
        delivery = self.hooks.find(delivery_id)
        if delivery is None:
            msg = f"no delivery {delivery_id}"
            raise FakeGitHubError(msg)
        self.hooks.send(delivery)
        return delivery

    def emit(self, event: str, payload: Json) -> None:
        """Queue a delivery; it is sent once the change that made it is done (the lock
        released), so a receiver that calls back into the fake cannot deadlock it."""
        fields = dict(payload)
        sender = fields.pop("_sender", self.login)
        fields["sender"] = user_json(self.url, str(sender))
        self._outbox.append(self.hooks.make(event, fields))

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the lock for one change, then send the deliveries it queued."""
        with self._lock:
            yield
        with self._lock:
            out, self._outbox = self._outbox, []
        for delivery in out:
            self.hooks.send(delivery)

    # -- test controls: repositories -------------------------------------------------
    def create_repo(
        self,
        repo: str,
        *,
        files: Mapping[str, str | bytes] | None = None,
        source: Path | None = None,
        default_branch: str = "main",
    ) -> str:
        """A repository ``owner/name``: a bare one with one commit of ``files`` on
        ``default_branch``, or a bare clone of the local repository ``source``. Returns the
        tip of ``default_branch``."""
        owner, _, name = repo.partition("/")
        with self.changing():
            sha = self.bare.create(
                repo, files=files, source=source, branch=default_branch, author=owner
            )
            self.repos[repo] = FakeRepo(owner, name, self.next_id(), default_branch, self.tick())
        return sha

    def branch_sha(self, repo: str, branch: str) -> str | None:
        """The tip of ``branch`` in ``repo``'s bare repository, or None."""
        return self.bare.branch_sha(self.repo(repo).full_name, branch)

    def push_commit(
        self,
        repo: str,
        branch: str,
        files: Mapping[str, str | bytes],
        *,
        message: str = "Update",
        author: str = "octocat",
        delete: Sequence[str] = (),
    ) -> str:
        """Commit ``files`` on ``branch`` as a push would (a missing branch starts at the
        default branch's tip): an open pull request of that branch moves to it
        (``pull_request`` ``synchronize``). Returns the new tip."""
        with self.changing():
            record = self.repo(repo)
            before = self.bare.refs(repo)
            start = before.get(record.default_branch)
            sha = self.bare.commit_files(
                repo, branch, files, message, author=author, delete=delete, start=start
            )
            self.branches_moved(record, before, author)
        return sha

    def branches_moved(self, repo: FakeRepo, before: Mapping[str, str], sender: str) -> None:
        """After a push: ``synchronize`` for each open pull request whose head moved."""
        after = self.bare.refs(repo.full_name)
        for pull in repo.pulls.values():
            ref = pull.head_ref
            if pull.issue.state == "open" and after.get(ref) and after.get(ref) != before.get(ref):
                old = pull.head_sha
                self.refresh(repo, pull)
                pull.issue.updated_at = self.tick()
                now = api.pull_json_now(self, repo, pull)
                event = hooks.pull_event(self.url, repo, now, "synchronize", sender, before=old)
                self.emit("pull_request", event)

    # -- test controls: issues ---------------------------------------------------------
    def open_issue(
        self,
        repo: str,
        title: str,
        *,
        body: str = "",
        labels: Sequence[str] = (),
        author: str = "octocat",
    ) -> int:
        """Open an issue; returns its number (``issues`` ``opened``)."""
        with self.changing():
            record = self.repo(repo)
            issue = api.new_issue(self, record, title, body, author, labels)
            self.emit("issues", hooks.issue_event(self.url, record, issue, "opened", author))
        return issue.number

    def add_label(self, repo: str, number: int, label: str, *, by: str = "octocat") -> None:
        """Put ``label`` on an issue (``issues`` ``labeled``)."""
        with self.changing():
            record, issue = self.repo(repo), self.issue(repo, number)
            if label not in issue.labels:
                issue.labels.append(label)
                issue.updated_at = self.tick()
            self.emit("issues", hooks.issue_event(self.url, record, issue, "labeled", by, label))

    def remove_label(self, repo: str, number: int, label: str, *, by: str = "octocat") -> None:
        """Take ``label`` off an issue (``issues`` ``unlabeled``)."""
        with self.changing():
            record, issue = self.repo(repo), self.issue(repo, number)
            if label in issue.labels:
                issue.labels.remove(label)
                issue.updated_at = self.tick()
            self.emit("issues", hooks.issue_event(self.url, record, issue, "unlabeled", by, label))

    def close_issue(self, repo: str, number: int, *, by: str = "octocat") -> None:
        """Close an issue (``issues`` ``closed``)."""
        with self.changing():
            record = self.repo(repo)
            api.set_issue_state(self, record, self.issue(repo, number), "closed", by)

    def comment(self, repo: str, number: int, body: str, *, author: str = "octocat") -> int:
        """A person comments on an issue or pull request; returns the comment's id."""
        with self.changing():
            record = self.repo(repo)
            return api.add_comment(self, record, self.issue(repo, number), body, author).id

    # -- test controls: pull requests, checks, reviews -----------------------------------
    def open_pull(
        self,
        repo: str,
        head: str,
        *,
        base: str = "main",
        title: str = "",
        body: str = "",
        author: str = "octocat",
    ) -> int:
        """Open a pull request of branch ``head`` into ``base`` as ``author``."""
        with self.changing():
            made = api.new_pull(self, self.repo(repo), head, base, title or head, body, author)
        if isinstance(made, str):
            raise FakeGitHubError(made)
        return made.issue.number

    def set_status(
        self,
        repo: str,
        sha: str,
        context: str,
        state: str,
        *,
        description: str = "",
        target_url: str | None = None,
    ) -> int:
        """A commit status on ``sha`` (state: pending, success, failure, error)."""
        with self.changing():
            record = self.repo(repo)
            status = FakeStatus(
                self.next_id(), sha, context, state, description, target_url, self.tick()
            )
            record.statuses.append(status)
            info = self.bare.commit_info(repo, sha)
            commit = commit_json(self.url, record, sha, info)
            self.emit("status", hooks.status_event(self.url, record, status, commit))
        return status.id

    def set_check_run(
        self,
        repo: str,
        sha: str,
        name: str,
        *,
        status: str = "completed",
        conclusion: str | None = "success",
        title: str | None = None,
        summary: str = "",
        text: str = "",
        details_url: str | None = None,
    ) -> int:
        """A check run on ``sha``; a newer one of the same name supersedes it. ``conclusion``
        only counts when ``status`` is completed (it is None otherwise)."""
        with self.changing():
            record = self.repo(repo)
            now = self.tick()
            done = status == "completed"
            run = FakeCheckRun(
                self.next_id(),
                sha,
                name,
                status,
                conclusion if done else None,
                title or name,
                summary,
                text,
                details_url,
                now,
                now if done else None,
            )
            record.check_runs.append(run)
            action = "completed" if done else "created"
            self.emit("check_run", hooks.check_run_event(self.url, record, run, action))
        return run.id

    def submit_review(
        self,
        repo: str,
        number: int,
        state: str,
        *,
        author: str = "reviewer",
        body: str = "",
        comments: Sequence[tuple[str, int | None, str]] = (),
    ) -> int:
        """A review on the pull request's current head: ``state`` APPROVED,
        CHANGES_REQUESTED, COMMENTED (or PENDING, DISMISSED: what a client must skip or
        discount), with line comments (path, line, body)."""
        if state not in REVIEW_STATES:
            msg = f"a review's state is one of {', '.join(REVIEW_STATES)}, not {state!r}"
            raise FakeGitHubError(msg)
        with self.changing():
            record, pull = self.repo(repo), self.pull(repo, number)
            review = FakeReview(
                self.next_id(), number, author, state, body, pull.head_sha, self.tick()
            )
            for path, line, text in comments:
                review.comments.append(
                    FakeReviewComment(
                        self.next_id(),
                        review.id,
                        path,
                        line,
                        text,
                        pull.head_sha,
                        review.submitted_at,
                    )
                )
            record.reviews.append(review)
            self.emit(
                "pull_request_review",
                hooks.review_event(self.url, record, api.pull_json_now(self, record, pull), review),
            )
        return review.id

    def protect_branch(
        self, repo: str, branch: str, *, checks: Sequence[str] = (), approvals: int = 0
    ) -> None:
        """Protect ``branch``: these checks must pass, this many approvals are needed."""
        with self._lock:
            self.repo(repo).protections[branch] = FakeProtection(list(checks), approvals)

    def unprotect_branch(self, repo: str, branch: str) -> None:
        """Remove ``branch``'s protection (its protection endpoint answers 404)."""
        with self._lock:
            self.repo(repo).protections.pop(branch, None)
