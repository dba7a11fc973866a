"""The fake's JSON has GitHub's shapes: each answer (and each webhook payload) parses with
githubkit's models, generated from GitHub's own OpenAPI description, so a client that
works against the fake reads GitHub's answers the same way."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from githubkit import webhooks
from githubkit_schemas.latest import models
from pydantic import BaseModel, TypeAdapter, ValidationError

from orchestrator.forge.fake_github import FakeGitHub


def get(fake: FakeGitHub, path: str, **params: str) -> Any:
    answer = httpx.get(
        f"{fake.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {fake.token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def scene(fake: FakeGitHub, repo: str) -> dict[str, Any]:
    """A repository with one of everything: issue, comment, pull request, statuses, check
    runs, a review with a line comment, branch protection, a merge."""
    issue = fake.open_issue(repo, "Bug", body="b", labels=["orch"], author="alice")
    fake.comment(repo, issue, "me too", author="bob")
    head = fake.push_commit(repo, "topic", {"t.py": "t = 1\n"})
    pull = fake.open_pull(repo, "topic", title="Fix bug", body="Closes #1")
    fake.set_status(repo, head, "lint", "success", description="ok", target_url="http://ci/1")
    fake.set_check_run(repo, head, "tests", conclusion="failure", summary="s", text="log")
    fake.set_check_run(repo, head, "slow", status="in_progress")
    fake.submit_review(repo, pull, "APPROVED", body="ok", comments=[("t.py", 1, "nice")])
    fake.protect_branch(repo, "main", checks=["lint"], approvals=1)
    fake.push_commit(repo, "done", {"d.py": "d = 1\n"})
    merged = fake.open_pull(repo, "done", title="Done")
    return {"repo": repo, "issue": issue, "pull": pull, "head": head, "merged": merged}


def check(model: type[BaseModel] | Any, data: Any) -> Any:
    adapter = TypeAdapter(model)
    return adapter.validate_python(data)


def test_every_answer_parses_with_githubkits_models(
    fake: FakeGitHub, scene: dict[str, Any]
) -> None:
    repo, issue, pull, head = scene["repo"], scene["issue"], scene["pull"], scene["head"]
    base = f"/repos/{repo}"

    assert check(models.FullRepository, get(fake, base)).full_name == repo
    issues = check(list[models.Issue], get(fake, f"{base}/issues", state="all"))
    assert {i.number for i in issues} == {issue, pull, scene["merged"]}
    one = check(models.Issue, get(fake, f"{base}/issues/{issue}"))
    assert (one.title, one.user.login if one.user else None) == ("Bug", "alice")
    comments = check(list[models.IssueComment], get(fake, f"{base}/issues/{issue}/comments"))
    assert [c.body for c in comments] == ["me too"]

    pr = check(models.PullRequest, get(fake, f"{base}/pulls/{pull}"))
    assert (pr.head.ref, pr.head.sha, pr.base.ref, pr.mergeable) == ("topic", head, "main", True)
    listed = check(list[models.PullRequestSimple], get(fake, f"{base}/pulls", head="acme:topic"))
    assert [p.number for p in listed] == [pull]

    combined = check(models.CombinedCommitStatus, get(fake, f"{base}/commits/{head}/status"))
    assert (combined.state, [s.context for s in combined.statuses]) == ("success", ["lint"])
    runs = check(
        models.ReposOwnerRepoCommitsRefCheckRunsGetResponse200,
        get(fake, f"{base}/commits/{head}/check-runs"),
    )
    assert {(r.name, r.status, r.conclusion) for r in runs.check_runs} == {
        ("tests", "completed", "failure"),
        ("slow", "in_progress", None),
    }

    reviews = check(list[models.PullRequestReview], get(fake, f"{base}/pulls/{pull}/reviews"))
    assert [(r.state, r.commit_id) for r in reviews] == [("APPROVED", head)]
    lines = check(list[models.PullRequestReviewComment], get(fake, f"{base}/pulls/{pull}/comments"))
    assert [(c.path, c.line, c.pull_request_review_id) for c in lines] == [
        ("t.py", 1, reviews[0].id)
    ]
    prot = check(models.BranchProtection, get(fake, f"{base}/branches/main/protection"))
    assert prot.required_status_checks
    assert prot.required_status_checks.contexts == ["lint"]


def test_merge_and_error_answers_parse(fake: FakeGitHub, scene: dict[str, Any]) -> None:
    repo = scene["repo"]
    headers = {"Authorization": f"token {fake.token}"}
    url = f"{fake.url}/repos/{repo}/pulls/{scene['merged']}/merge"
    tip = fake.branch_sha(repo, "done")
    fake.unprotect_branch(repo, "main")
    done = httpx.put(url, json={"sha": tip, "merge_method": "squash"}, headers=headers)
    assert check(models.PullRequestMergeResult, done.json()).merged is True
    again = httpx.put(url, json={"sha": tip, "merge_method": "squash"}, headers=headers)
    assert again.status_code == 405
    assert check(models.BasicError, again.json()).message == "Pull Request is not mergeable"
    bad = httpx.get(f"{fake.url}/repos/{repo}/issues", headers={"Authorization": "token nope"})
    assert (bad.status_code, check(models.BasicError, bad.json()).message) == (
        401,
        "Bad credentials",
    )


def test_a_missing_required_field_would_be_caught() -> None:
    """The check above can fail: a pull request without its head does not parse."""
    with pytest.raises(ValidationError):
        check(models.PullRequest, {"number": 1, "state": "open"})


def test_every_webhook_payload_parses_with_githubkits_models(
    fake: FakeGitHub, scene: dict[str, Any]
) -> None:
    repo = scene["repo"]
    fake.unprotect_branch(repo, "main")
    fake.add_label(repo, scene["issue"], "bug")
    fake.remove_label(repo, scene["issue"], "bug")
    fake.close_issue(repo, scene["issue"])
    fake.push_commit(repo, "topic", {"t.py": "t = 2\n"})
    tip = fake.branch_sha(repo, "done")
    answer = httpx.put(
        f"{fake.url}/repos/{repo}/pulls/{scene['merged']}/merge",
        json={"sha": tip, "merge_method": "merge"},
        headers={"Authorization": f"Bearer {fake.token}"},
    )
    assert answer.status_code == 200
    seen = set()
    for delivery in fake.deliveries:
        if delivery.payload["repository"]["full_name"] != repo:
            continue
        webhooks.parse_obj(delivery.event, delivery.payload)  # type: ignore[arg-type]
        seen.add((delivery.event, delivery.action))
    assert seen >= {
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("issues", "closed"),
        ("issue_comment", "created"),
        ("pull_request", "opened"),
        ("pull_request", "synchronize"),
        ("pull_request", "closed"),
        ("pull_request_review", "submitted"),
        ("check_run", "completed"),
        ("check_run", "created"),
        ("status", None),
    }
