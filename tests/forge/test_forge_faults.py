"""Trouble with GitHub is a ``ForgeFault`` by kind, never the task's fault: the mapping as
a pure function, then each fault as the fake serves it through githubkit. One call is one
request (githubkit's own retry is off), and the token is in no message, repr, traceback or
log record."""

from __future__ import annotations

import logging
import socket
import traceback

import httpx
import pytest

from orchestrator.forge.base import ForgeFault, ForgeFaultKind
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.github import (
    GitHubForge,
    check_run_state,
    fault_from_response,
    status_state,
)

OUTAGE, RATE, CREDS, REQUEST = (
    ForgeFaultKind.OUTAGE,
    ForgeFaultKind.RATE_LIMITED,
    ForgeFaultKind.CREDENTIALS,
    ForgeFaultKind.REQUEST,
)
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (500, {}, OUTAGE, None),
        (502, {}, OUTAGE, None),
        (503, {"retry-after": "5"}, OUTAGE, 5.0),
        (429, {}, RATE, None),
        (429, {"retry-after": "7"}, RATE, 7.0),
        (403, {"retry-after": "30"}, RATE, 30.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 90)}, RATE, 90.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 5)}, RATE, 0.0),
        (403, {"x-ratelimit-remaining": "12"}, CREDS, None),
        (403, {}, CREDS, None),
        (401, {}, CREDS, None),
        (404, {}, REQUEST, None),
        (422, {}, REQUEST, None),
        (409, {}, REQUEST, None),
    ],
)
def test_fault_from_response(
    status: int, headers: dict[str, str], kind: ForgeFaultKind, retry_after: float | None
) -> None:
    response = httpx.Response(status, headers=headers, json={"message": "said GitHub"})
    fault = fault_from_response("read issue #1", response, now=NOW)
    assert (fault.kind, fault.status, fault.retry_after_s) == (kind, status, retry_after)
    assert fault.message == "read issue #1: said GitHub"


def test_a_fault_without_a_json_body_keeps_the_reason() -> None:
    fault = fault_from_response("x", httpx.Response(502, text="<html>bad gateway</html>"))
    assert (fault.kind, fault.message) == (OUTAGE, "x: Bad Gateway")


@pytest.mark.parametrize(
    ("status", "conclusion", "state"),
    [
        ("queued", None, "pending"),
        ("in_progress", None, "pending"),
        ("completed", "success", "success"),
        ("completed", "neutral", "success"),
        ("completed", "skipped", "success"),
        ("completed", "failure", "failure"),
        ("completed", "cancelled", "failure"),
        ("completed", "timed_out", "failure"),
        ("completed", "action_required", "failure"),
        ("completed", "stale", "failure"),
        ("completed", "a-word-from-the-future", "failure"),
        ("completed", None, "failure"),
    ],
)
def test_check_run_state(status: str, conclusion: str | None, state: str) -> None:
    assert check_run_state(status, conclusion) == state


def test_status_state() -> None:
    assert [status_state(s) for s in ("pending", "success", "failure", "error", "odd")] == [
        "pending",
        "success",
        "failure",
        "failure",
        "failure",
    ]


def fault_of(forge: GitHubForge, number: int) -> ForgeFault:
    with pytest.raises(ForgeFault) as caught:
        forge.issue(number)
    return caught.value


def assert_no_token(fault: ForgeFault, token: str) -> None:
    text = "".join(traceback.format_exception(fault)) + repr(fault) + str(fault)
    assert token not in text


def test_an_outage_once_is_one_request_then_it_answers(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    number = fake.open_issue(repo, "Bug")
    fake.fail_next(1, status=503)
    fault = fault_of(forge, number)
    assert (fault.kind, fault.status) == (OUTAGE, 503)
    assert "Service Unavailable" in fault.message
    assert forge.issue(number).title == "Bug"
    assert [r.status for r in fake.api_requests("GET", f"/repos/{repo}/issues/{number}")] == [
        503,
        200,
    ]
    assert_no_token(fault, fake.token)


def test_429_with_retry_after(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    fake.fail_next(1, status=429, retry_after_s=7)
    fault = fault_of(forge, 1)
    assert (fault.kind, fault.status, fault.retry_after_s) == (RATE, 429, 7.0)


def test_the_secondary_rate_limit(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    fake.secondary_rate_limit(retry_after_s=45)
    fault = fault_of(forge, 1)
    assert (fault.kind, fault.status, fault.retry_after_s) == (RATE, 403, 45.0)
    assert "secondary rate limit" in fault.message
    # githubkit's own retry would sleep 45 s and ask again (a second request); it is
    # off, so the engine decides when to come back.
    assert len(fake.api_requests("GET", f"/repos/{repo}/issues/1")) == 1


def test_the_primary_rate_limit(fake: FakeGitHub, repo: str, forge: GitHubForge) -> None:
    fake.primary_rate_limit(reset_in_s=120)
    fault = fault_of(forge, 1)
    assert (fault.kind, fault.status) == (RATE, 403)
    assert fault.retry_after_s is not None
    assert 100 <= fault.retry_after_s <= 120


def test_a_bad_token(
    fake: FakeGitHub, repo: str, forge: GitHubForge, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake.token
    fake.set_token("ghp_rotated_by_someone")
    with caplog.at_level(logging.DEBUG):
        fault = fault_of(forge, 1)
    assert (fault.kind, fault.status) == (CREDS, 401)
    assert "Bad credentials" in fault.message
    assert_no_token(fault, token)
    assert all(token not in r.getMessage() for r in caplog.records)


def test_a_forbidden_without_rate_limit_signs(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    fake.fail_next(1, status=403, message="Resource not accessible by personal access token")
    fault = fault_of(forge, 1)
    assert (fault.kind, fault.status, fault.retry_after_s) == (CREDS, 403, None)


def test_a_missing_issue_is_a_refused_request(
    fake: FakeGitHub, repo: str, forge: GitHubForge
) -> None:
    fault = fault_of(forge, 999)
    assert (fault.kind, fault.status) == (REQUEST, 404)


def test_a_timeout_is_an_outage(fake: FakeGitHub, repo: str) -> None:
    quick = GitHubForge(repo, fake.token, base_url=fake.url, timeout_s=0.3)
    fake.stall_next(1, seconds=1.0)
    fault = fault_of(quick, 1)
    assert fault.kind is OUTAGE
    assert "timed out" in fault.message
    assert_no_token(fault, fake.token)


def test_a_refused_connection_is_an_outage() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "ghp_never_shown"
    nowhere = GitHubForge("acme/app", token, base_url=f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ForgeFault) as caught:
        nowhere.labeled_issues("orch")
    assert caught.value.kind is OUTAGE
    assert "unreachable" in caught.value.message
    assert_no_token(caught.value, token)


def test_an_answer_that_does_not_parse_is_an_outage(
    fake: FakeGitHub, repo: str, forge: GitHubForge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.forge import fake_github_json

    real = fake_github_json.issue_json

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        del out["number"]
        return out

    number = fake.open_issue(repo, "Bug")
    monkeypatch.setattr(fake_github_json, "issue_json", broken)
    fault = fault_of(forge, number)
    assert fault.kind is OUTAGE
    assert "not understood" in fault.message
