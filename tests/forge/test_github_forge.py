"""Every ``Forge`` method of ``GitHubForge``, through githubkit, against the fake GitHub."""

from __future__ import annotations

import ssl

import pytest

from orchestrator.forge import github
from orchestrator.forge.base import Forge, ForgeFault, ForgeFaultKind
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.github import LOG_TAIL_CHARS, GitHubForge


def test_it_is_a_forge(forge: GitHubForge) -> None:
    as_forge: Forge = forge  # mypy checks the protocol; this checks nothing is missing
    for name in [n for n in dir(Forge) if not n.startswith("_")]:
        assert callable(getattr(as_forge, name)), name
    assert "token" not in repr(forge).lower()


def test_forge_calls_read_the_ca_bundle_once_per_process(
    fake: FakeGitHub, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # githubkit makes an HTTP client per call; each used to build its own TLS context,
    # reading the CA bundle again (~20 ms). Certificates are still checked: the one
    # context is httpx's own default, built once.
    loaded: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: object, **kw: object) -> None:
        loaded.append(args or kw)
        real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    github.tls_context.cache_clear()
    for _ in range(2):
        forge = GitHubForge(repo, fake.token, base_url=fake.url, timeout_s=5.0)
        for _ in range(3):
            forge.labeled_issues("orch")
    assert len(loaded) == 1
    context = github.tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_labeled_issues_are_open_oldest_first_without_pull_requests(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    first = fake.open_issue(repo, "First", body="do a", labels=["orch", "bug"], author="alice")
    fake.open_issue(repo, "Unlabeled")
    closed = fake.open_issue(repo, "Closed", labels=["orch"])
    fake.close_issue(repo, closed)
    third = fake.open_issue(repo, "Third", labels=["orch"])
    fake.push_commit(repo, "topic", {"t.txt": "t\n"})
    pull = fake.open_pull(repo, "topic")
    fake.add_label(repo, pull, "orch")  # GitHub lists pull requests as issues too

    found = forge.labeled_issues("orch")

    assert [i.number for i in found] == [first, third]
    issue = found[0]
    assert (issue.title, issue.body, issue.author, issue.state) == (
        "First",
        "do a",
        "alice",
        "open",
    )
    assert set(issue.labels) == {"orch", "bug"}
    assert issue.url == f"{fake.url}/{repo}/issues/{first}"
    # The client asked for oldest first: GitHub's default is newest first.
    listed = fake.api_requests("GET", f"/repos/{repo}/issues")[-1]
    assert "direction=asc" in listed.query


def test_labeled_issues_follow_every_page(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    numbers = [fake.open_issue(repo, f"Issue {i}", labels=["many"]) for i in range(105)]
    assert [i.number for i in forge.labeled_issues("many")] == numbers
    assert len(fake.api_requests("GET", f"/repos/{repo}/issues")) == 2


def test_issue_comment_and_close(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    number = fake.open_issue(repo, "Bug", body="it breaks", labels=["orch"])
    assert forge.issue(number).state == "open"
    forge.comment(number, "Working on it.")
    forge.close_issue(number)
    after = forge.issue(number)
    assert after.state == "closed"
    assert after.labels == ("orch",)
    assert [(c.author, c.body) for c in fake.comments(repo, number)] == [
        (fake.login, "Working on it.")
    ]


def test_open_pull_twice_is_one_pull_request(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    head = fake.push_commit(repo, "orch/task-1", {"x.py": "x = 2\n"})
    made = forge.open_pull(head="orch/task-1", base="main", title="Task 1", body="Closes #1")
    again = forge.open_pull(head="orch/task-1", base="main", title="Task 1", body="Closes #1")
    assert again == made
    assert (made.head_ref, made.head_sha, made.base_ref, made.state) == (
        "orch/task-1",
        head,
        "main",
        "open",
    )
    assert made.url == f"{fake.url}/{repo}/pull/{made.number}"
    assert len(fake.api_requests("POST", f"/repos/{repo}/pulls")) == 1


def test_open_pull_that_loses_a_race_returns_the_winner(
    fake: FakeGitHub, repo: str, forge: GitHubForge, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.push_commit(repo, "raced", {"r.py": "r = 1\n"})
    winner = fake.open_pull(repo, "raced", title="Opened by the other worker")
    real = forge._open_pull_of
    calls = []

    def blind_first(head: str, base: str):  # type: ignore[no-untyped-def]
        calls.append(head)
        return None if len(calls) == 1 else real(head, base)

    monkeypatch.setattr(forge, "_open_pull_of", blind_first)
    got = forge.open_pull(head="raced", base="main", title="Mine", body="")
    assert got.number == winner
    assert fake.api_requests("POST", f"/repos/{repo}/pulls")[-1].status == 422


def test_open_pull_of_a_missing_branch_is_a_refused_request(forge: GitHubForge) -> None:
    with pytest.raises(ForgeFault) as caught:
        forge.open_pull(head="no-such-branch", base="main", title="t", body="")
    assert caught.value.kind is ForgeFaultKind.REQUEST
    assert caught.value.status == 422
    assert caught.value.message.endswith("Validation Failed (head invalid)")


def test_pull_head_follows_the_branch(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    fake.push_commit(repo, "topic", {"a.txt": "1\n"})
    made = forge.open_pull(head="topic", base="main", title="t", body="")
    moved = fake.push_commit(repo, "topic", {"a.txt": "2\n"})
    now = forge.pull(made.number)
    assert now.head_sha == moved != made.head_sha
    assert (now.state, now.merged) == ("open", False)


def test_branch_protection(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    assert forge.required_checks("main") == []
    assert forge.required_approvals("main") == 0
    fake.protect_branch(repo, "main", checks=["ci", "lint"], approvals=2)
    assert forge.required_checks("main") == ["ci", "lint"]
    assert forge.required_approvals("main") == 2
    fake.protect_branch(repo, "main", checks=["ci"])
    assert forge.required_approvals("main") == 0


def test_protection_of_a_repo_that_is_not_there_is_a_fault(fake: FakeGitHub, repo: str) -> None:
    missing = GitHubForge("acme/not-there", fake.token, base_url=fake.url, timeout_s=5)
    with pytest.raises(ForgeFault) as caught:
        missing.required_checks("main")
    assert (caught.value.kind, caught.value.status) == (ForgeFaultKind.REQUEST, 404)


def test_checks_merge_statuses_and_check_runs_newest_per_name(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    sha = fake.push_commit(repo, "topic", {"c.txt": "c\n"})
    log = "".join(f"line {i}\n" for i in range(2000))
    fake.set_status(repo, sha, "lint", "pending", description="queued")
    fake.set_status(repo, sha, "lint", "success", description="clean", target_url="http://ci/1")
    fake.set_status(repo, sha, "deploy-preview", "error", description="boom")
    fake.set_check_run(repo, sha, "tests", conclusion="success")
    fake.set_check_run(
        repo,
        sha,
        "tests",
        conclusion="failure",
        title="2 failed",
        summary="test_a, test_b",
        text=log,
        details_url="http://ci/tests",
    )
    fake.set_check_run(repo, sha, "docs", conclusion="neutral")
    fake.set_check_run(repo, sha, "optional", conclusion="skipped")
    fake.set_check_run(repo, sha, "slow", status="in_progress")
    fake.set_check_run(repo, sha, "flaky", conclusion="cancelled")
    fake.set_check_run(repo, sha, "limit", conclusion="timed_out")
    fake.set_check_run(repo, sha, "gate", conclusion="action_required")
    # The same name as a status then as a check run: the newer one counts.
    fake.set_status(repo, sha, "build", "failure")
    fake.set_check_run(repo, sha, "build", conclusion="success")

    got = {c.name: c for c in forge.checks(sha)}

    assert {n: c.state for n, c in got.items()} == {
        "lint": "success",
        "deploy-preview": "failure",
        "tests": "failure",
        "docs": "success",
        "optional": "success",
        "slow": "pending",
        "flaky": "failure",
        "limit": "failure",
        "gate": "failure",
        "build": "success",
    }
    assert (got["lint"].summary, got["lint"].details_url) == ("clean", "http://ci/1")
    tests = got["tests"]
    assert tests.summary == "2 failed\ntest_a, test_b"
    assert tests.details_url == "http://ci/tests"
    assert tests.log_tail == log[-LOG_TAIL_CHARS:]
    assert tests.log_tail.endswith("line 1999\n")
    fake.set_status(repo, sha, "build", "failure")
    assert {c.name: c.state for c in forge.checks(sha)}["build"] == "failure"


def test_checks_of_a_commit_with_none(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    sha = fake.branch_sha(repo, "main")
    assert sha is not None
    assert forge.checks(sha) == []


def test_reviews_with_their_line_comments(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    fake.push_commit(repo, "topic", {"r.py": "r = 1\n"})
    pull = forge.open_pull(head="topic", base="main", title="t", body="")
    fake.submit_review(
        repo,
        pull.number,
        "CHANGES_REQUESTED",
        author="carol",
        body="Please fix",
        comments=[("r.py", 1, "r is a bad name"), ("README.md", None, "and the docs")],
    )
    fake.submit_review(repo, pull.number, "PENDING", author="dave", body="draft")
    moved = fake.push_commit(repo, "topic", {"r.py": "rate = 1\n"})
    fake.submit_review(repo, pull.number, "APPROVED", author="carol", body="Thanks")

    got = forge.reviews(pull.number)

    assert [(r.author, r.state, r.commit_sha) for r in got] == [
        ("carol", "CHANGES_REQUESTED", pull.head_sha),
        ("carol", "APPROVED", moved),
    ]
    assert got[0].body == "Please fix"
    assert [(c.path, c.line, c.body) for c in got[0].comments] == [
        ("r.py", 1, "r is a bad name"),
        ("README.md", None, "and the docs"),
    ]
    assert got[1].comments == ()


@pytest.mark.parametrize("method", ["squash", "merge", "rebase"])
def test_merge_moves_main(fake: FakeGitHub, repo: str, forge: GitHubForge, method: str) -> None:
    fake.push_commit(repo, "topic", {"m.py": "m = 1\n"}, message="add m")
    head = fake.push_commit(repo, "topic", {"m.py": "m = 2\n"}, message="change m")
    pull = forge.open_pull(head="topic", base="main", title="Add m", body="")
    before = fake.branch_sha(repo, "main")

    result = forge.merge(pull.number, sha=head, method=method)

    assert result.merged
    assert not result.head_moved
    assert result.sha == fake.branch_sha(repo, "main") != before
    assert fake.bare.must(repo, "show", f"{result.sha}:m.py") == "m = 2"
    after = forge.pull(pull.number)
    assert (after.state, after.merged, after.head_sha) == ("closed", True, head)


def test_a_moved_head_is_refused_never_merged_blind(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    read = fake.push_commit(repo, "topic", {"h.py": "h = 1\n"})
    pull = forge.open_pull(head="topic", base="main", title="t", body="")
    fake.push_commit(repo, "topic", {"h.py": "h = 'pushed since'\n"})
    before = fake.branch_sha(repo, "main")

    result = forge.merge(pull.number, sha=read, method="squash")

    assert (result.merged, result.head_moved) == (False, True)
    assert "Head branch was modified" in result.message
    assert fake.branch_sha(repo, "main") == before
    assert forge.pull(pull.number).merged is False


def test_a_merge_the_forge_refuses_is_a_value(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    head = fake.push_commit(repo, "topic", {"p.py": "p = 1\n"})
    pull = forge.open_pull(head="topic", base="main", title="t", body="")
    fake.protect_branch(repo, "main", checks=["ci"], approvals=1)

    refused = forge.merge(pull.number, sha=head, method="merge")
    assert (refused.merged, refused.head_moved) == (False, False)
    assert '"ci"' in refused.message

    fake.set_check_run(repo, head, "ci", conclusion="success")
    assert "approving review" in forge.merge(pull.number, sha=head, method="merge").message
    fake.submit_review(repo, pull.number, "APPROVED")
    assert forge.merge(pull.number, sha=head, method="merge").merged


def test_a_conflicting_pull_request_is_not_merged(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    head = fake.push_commit(repo, "topic", {"app.py": "x = 'topic'\n"})
    pull = forge.open_pull(head="topic", base="main", title="t", body="")
    fake.push_commit(repo, "main", {"app.py": "x = 'main'\n"})
    result = forge.merge(pull.number, sha=head, method="squash")
    assert (result.merged, result.head_moved) == (False, False)
    assert "not mergeable" in result.message


def test_an_unknown_merge_method_is_refused_before_any_call(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    before = len(fake.requests)
    with pytest.raises(ForgeFault) as caught:
        forge.merge(1, sha="0" * 40, method="fast-forward")
    assert caught.value.kind is ForgeFaultKind.REQUEST
    assert len(fake.requests) == before
