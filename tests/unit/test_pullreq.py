"""``domain.pullreq.judge_pull``: a pull request's checks and reviews, decided as values."""

from __future__ import annotations

from typing import Any

from orchestrator.domain.pullreq import CheckView, PullJudgement, ReviewView, judge_pull

HEAD = "a" * 40
OLD = "b" * 40


def _judge(**kw: Any) -> PullJudgement:
    base: dict[str, Any] = {
        "number": 7,
        "head_sha": HEAD,
        "candidate": HEAD,
        "checks": [CheckView("ci", "success")],
        "required_checks": ["ci"],
        "reviews": [ReviewView("ada", "APPROVED", HEAD)],
        "required_approvals": 1,
        "waited_s": 0.0,
        "timeout_s": 600.0,
        "poll_s": 30.0,
    }
    base.update(kw)
    return judge_pull(**base)


def test_green_and_approved_on_this_head_merges() -> None:
    got = _judge()
    assert got.kind == "merge"
    assert "approved by ada" in got.reasons[0]


def test_a_failing_required_check_sends_back_its_name_summary_and_log_tail() -> None:
    log = "line\n" * 1000 + "AssertionError: 2 != 3"
    got = _judge(checks=[CheckView("ci", "failure", "1 test failed", log)])
    assert got.kind == "fail"
    assert "check ci failed: 1 test failed" in got.reasons
    tail = got.reasons[-1]
    assert tail.endswith("AssertionError: 2 != 3")
    assert len(tail) < 2100  # the tail, not the whole log


def test_a_failing_check_that_is_not_required_does_not_send_it_back() -> None:
    checks = [CheckView("ci", "success"), CheckView("lint", "failure", "style")]
    assert _judge(checks=checks).kind == "merge"
    # With no check named as required, every reported check counts.
    assert _judge(checks=checks, required_checks=[]).kind == "fail"


def test_changes_requested_on_this_head_send_it_back_with_the_review_and_its_comments() -> None:
    review = ReviewView("bob", "CHANGES_REQUESTED", HEAD, "Please rename", ("a.py:3: say why",))
    got = _judge(reviews=[review])
    assert got.kind == "fail"
    assert "review by bob: Please rename" in got.reasons
    assert "comment: a.py:3: say why" in got.reasons


def test_an_old_request_for_changes_waits_for_the_reviewer_s_new_word() -> None:
    # After the developer's new push, the old request does not send the task back again.
    old = ReviewView("bob", "CHANGES_REQUESTED", OLD, "Please rename")
    got = _judge(reviews=[old])
    assert got.kind == "wait"
    assert any("approvals" in r for r in got.reasons)
    # Then bob approves the new head: it merges.
    assert _judge(reviews=[old, ReviewView("bob", "APPROVED", HEAD)]).kind == "merge"


def test_an_approval_of_an_older_head_does_not_count() -> None:
    got = _judge(reviews=[ReviewView("ada", "APPROVED", OLD)])
    assert (got.kind, got.wait_s) == ("wait", 30.0)


def test_pending_or_missing_checks_wait_then_block_past_the_limit() -> None:
    assert _judge(checks=[CheckView("ci", "pending")]).kind == "wait"
    missing = _judge(checks=[])
    assert missing.kind == "wait"
    assert "checks not reported yet: ci" in missing.reasons
    late = _judge(checks=[CheckView("ci", "pending")], waited_s=601.0)
    assert (late.kind, late.alert) == ("block", "forge-checks-timeout")


def test_a_head_that_is_not_the_candidate_is_read_again_never_merged() -> None:
    got = _judge(head_sha=OLD)
    assert got.kind == "wait"
    assert got.wait_s == 5.0
