"""Landing by pull request, against the fake GitHub the project ships.

The repo's remote is a repository on the fake, served over git's smart HTTP, so the task
branch's push and the merge are real; the forge is the githubkit client. Each test plays the
testing stage, then runs the merge gate as a gate-only job would, and reads what the forge
and the domain make of it: the pull request opened once, a failing check's log in the
reasons the next prompt shows, changes requested then approved, a head that moved before
the merge, an outage and a rate limit that end in a merge with nothing spent, a bad token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.merge_helpers import (
    CALC,
    TESTS,
    MergeBed,
    decide,
    fill_slot,
    run_git,
)

from orchestrator import backend_ops, forge_notes
from orchestrator.domain.stages import Stage, State, Transition, TransitionKind
from orchestrator.domain.verdicts import Verdict
from orchestrator.forge.base import MergeResult
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.github import GitHubForge
from orchestrator.gates.registry import run_after_pass
from orchestrator.store import alert_rows, queries
from orchestrator.store.rows import TaskRow
from orchestrator.store.schema import tasks

REPO = "acme/app"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "fake") as gh:
        yield gh


class PullBed:
    """A ``MergeBed`` whose repo lands by pull request on the fake."""

    def __init__(self, tmp_path: Path, engine: sa.Engine, make_repo: Any, fake: FakeGitHub):
        self.fake = fake
        self.bed = MergeBed(tmp_path, engine, make_repo, forge_poll_s=30.0)
        fake.create_repo(REPO, source=self.bed.repo_path)
        # The user's clone reaches the forge with its own git credentials.
        run_git(self.bed.repo_path, "remote", "add", "origin", fake.clone_url(REPO))
        fake.protect_branch(REPO, "main", checks=["ci"], approvals=1)
        with engine.begin() as conn:
            queries.update_repo(
                conn,
                self.bed.name,
                now=time.time(),
                remote="origin",
                options={
                    "land": "pr",
                    "forge": {"kind": "github", "repo": REPO, "api_url": fake.url},
                },
            )
        self.forge = GitHubForge(REPO, fake.token, base_url=fake.url, timeout_s=5.0)

    def tested_task(self, slot: str = "a") -> TaskRow:
        task = self.bed.add_task(f"add {slot}")
        self.bed.develop(task, fill_slot(CALC, TESTS, slot, slot, 2), slot)
        ok, note = self.bed.run_testing_stage(task)
        assert ok, note
        return task

    def gate(self, task: TaskRow) -> Verdict:
        return self.bed.gate(task, forge=self.forge)

    def record(
        self, task: TaskRow, verdict: Verdict, *, kind: str, to_stage: str, to_state: str
    ) -> None:
        """Store the deploy-staging move the engine makes of ``verdict`` (its reasons)."""
        with self.bed.engine.begin() as conn:
            queries.insert_transition(
                conn,
                task_id=task.id,
                kind=kind,
                from_stage="deploy-staging",
                to_stage=to_stage,
                from_state="active",
                to_state=to_state,
                reasons=list(verdict.reasons),
                actor="engine",
                now=time.time(),
            )

    def head(self) -> str:
        return self.fake.pull(REPO, 1).head_sha

    def forge_main(self) -> str | None:
        return self.fake.branch_sha(REPO, "main")


@pytest.fixture
def pb(tmp_path: Path, engine: sa.Engine, make_repo: Any, fake: FakeGitHub) -> PullBed:
    return PullBed(tmp_path, engine, make_repo, fake)


def _spent(t: Transition) -> tuple[bool, bool, bool]:
    return (t.spends_developer_retry, t.spends_infra_retry, t.spends_gate_retry)


def _said(verdict: Verdict, text: str) -> bool:
    return any(text in r for r in verdict.reasons)


def test_the_pull_request_is_opened_once_and_waits_for_its_checks_and_approval(
    pb: PullBed,
) -> None:
    task = pb.tested_task()
    main_before = pb.forge_main()
    first = pb.gate(task)
    assert first.wait_s == 30.0, first.reasons
    assert _said(first, "checks not reported yet: ci")
    pull = pb.fake.pull(REPO, 1)
    assert pull.head_ref == f"orch/{task.key}"
    assert f"Task {task.key}" in pull.issue.body
    # Waiting spends nothing: a deferral that re-runs the gates alone.
    t = decide(first)
    assert (t.kind, t.to_state, t.rerun_gates) == (TransitionKind.DEFER, State.DEFERRED, True)
    assert _spent(t) == (False, False, False)
    # A second run finds the same pull request (no second one) and main is untouched.
    pb.fake.set_check_run(REPO, pb.head(), "ci", conclusion=None, status="in_progress")
    again = pb.gate(task)
    assert again.wait_s is not None
    assert _said(again, "checks pending: ci")
    assert list(pb.fake.repo(REPO).pulls) == [1]
    assert pb.forge_main() == main_before


def test_a_failing_check_sends_its_name_summary_and_log_tail_back_to_development(
    pb: PullBed,
) -> None:
    task = pb.tested_task()
    pb.gate(task)
    log = "collected 3 items\n" * 200 + "E   AssertionError: expected 3, got 2\n"
    pb.fake.set_check_run(
        REPO, pb.head(), "ci", conclusion="failure", summary="1 test failed", text=log
    )
    verdict = pb.gate(task)
    assert not verdict.passed
    assert verdict.wait_s is None
    assert _said(verdict, "check ci failed: "), verdict.reasons
    assert _said(verdict, "1 test failed")
    assert _said(verdict, "AssertionError: expected 3, got 2")
    t = decide(verdict)
    assert t.kind is TransitionKind.ROLLBACK
    assert t.spends_developer_retry
    # The reasons the next development prompt reads hold the log's tail.
    assert any("AssertionError: expected 3, got 2" in r for r in t.reasons)


def test_changes_requested_then_approved_merges_through_the_api(pb: PullBed) -> None:
    task = pb.tested_task()
    pb.gate(task)
    head = pb.head()
    pb.fake.set_check_run(REPO, head, "ci", conclusion="success")
    pb.fake.submit_review(
        REPO,
        1,
        "CHANGES_REQUESTED",
        author="ada",
        body="Name it after what it does",
        comments=[("calc.py", 12, "why 2?")],
    )
    sent_back = pb.gate(task)
    assert _said(sent_back, "review by ada: Name it after what it does")
    assert _said(sent_back, "comment: calc.py:12: why 2?")
    assert decide(sent_back).kind is TransitionKind.ROLLBACK

    pb.fake.submit_review(REPO, 1, "APPROVED", author="ada")
    merged = pb.gate(task)
    assert merged.passed, merged.reasons
    assert merged.fields["merge_status"] == "MERGED"
    assert pb.fake.pull(REPO, 1).merged
    # Main here follows the forge's main, which the forge's merge moved.
    assert pb.bed.main_sha() == pb.forge_main()
    assert merged.fields["merged_sha"] == pb.forge_main()
    # The merge named the head it was decided on.
    merges = pb.fake.api_requests("PUT", "/pulls/1/merge")
    assert len(merges) == 1
    assert head in str(merges[0].body)


def test_a_head_that_moved_between_the_approval_and_the_merge_is_never_merged_blind(
    pb: PullBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = pb.tested_task()
    pb.gate(task)
    approved = pb.head()
    pb.fake.set_check_run(REPO, approved, "ci", conclusion="success")
    pb.fake.submit_review(REPO, 1, "APPROVED", author="ada")
    real_merge = pb.forge.merge
    branch = f"orch/{task.key}"

    def someone_pushes_first(number: int, *, sha: str, method: str) -> MergeResult:
        # Between the gate's read (green, approved) and its merge call, the head moves.
        pb.fake.push_commit(REPO, branch, {"stray.txt": "x\n"}, message="stray")
        return real_merge(number, sha=sha, method=method)

    monkeypatch.setattr(pb.forge, "merge", someone_pushes_first)
    moved = pb.gate(task)
    assert moved.wait_s is not None, moved.reasons
    assert _said(moved, "its head moved before the merge")
    assert not pb.fake.pull(REPO, 1).merged
    # The merge named the approved head, and the forge refused it for the moved one.
    (call,) = pb.fake.api_requests("PUT", "/pulls/1/merge")
    assert approved in str(call.body)
    assert call.status in (405, 409)
    monkeypatch.setattr(pb.forge, "merge", real_merge)
    # Read again: the candidate goes back on the branch; approved for exactly that head, it
    # merges, and the stray commit is not in main.
    merged = pb.gate(task)
    assert merged.passed, merged.reasons
    assert pb.fake.pull(REPO, 1).merged
    assert "stray.txt" not in run_git(pb.bed.repo_path, "ls-tree", "--name-only", "main")


def test_an_outage_and_a_rate_limit_wait_and_end_in_a_merge_with_nothing_spent(
    pb: PullBed,
) -> None:
    task = pb.tested_task()
    pb.gate(task)
    pb.fake.set_check_run(REPO, pb.head(), "ci", conclusion="success")
    pb.fake.submit_review(REPO, 1, "APPROVED", author="ada")
    pb.fake.fail_next(5, status=503)
    storm = pb.gate(task)
    assert storm.wait_s is not None
    assert _said(storm, "forge outage")
    t = decide(storm)
    assert t.kind is TransitionKind.DEFER
    assert _spent(t) == (False, False, False)
    pb.fake.clear_faults()
    pb.fake.secondary_rate_limit(1, retry_after_s=42)
    limited = pb.gate(task)
    assert limited.wait_s == 42.0, limited.reasons
    assert _said(limited, "rate-limited")
    merged = pb.gate(task)
    assert merged.passed, merged.reasons
    assert pb.fake.pull(REPO, 1).merged


def test_a_bad_token_pauses_the_forge_with_one_alert_until_it_is_resumed(
    pb: PullBed,
) -> None:
    first, second = pb.tested_task("a"), pb.tested_task("b")
    pb.gate(first)
    pb.fake.set_token("a-new-token")
    verdict = pb.gate(first)
    # The forge's trouble, not the task's: it waits, and nothing is spent.
    assert verdict.wait_s is not None, verdict.reasons
    assert _said(verdict, "rejected the credentials")
    assert _spent(decide(verdict)) == (False, False, False)
    calls = len(pb.fake.requests)
    # Another task's landing waits for the paused forge without calling it or alerting again.
    other = pb.gate(second)
    assert other.wait_s is not None
    assert _said(other, "backend forge:127.0.0.1")
    assert len(pb.fake.requests) == calls
    with pb.bed.engine.connect() as conn:
        (alert,) = alert_rows.list_alerts(conn, limit=10, open_only=True)
    assert (alert.kind, alert.task_id) == ("forge-credentials", None)
    # The token is fixed and a human resumes the forge: the next landing is the probe.
    pb.forge = GitHubForge(REPO, pb.fake.token, base_url=pb.fake.url, timeout_s=5.0)
    run_git(pb.bed.repo_path, "remote", "set-url", "origin", pb.fake.clone_url(REPO))
    name = next(r.state.name for r in backend_ops.list_backends(pb.bed.engine))
    assert backend_ops.resume_backend(pb.bed.engine, name).state.health == "credentials"
    pb.fake.set_check_run(REPO, pb.head(), "ci", conclusion="success")
    pb.fake.submit_review(REPO, 1, "APPROVED", author="ada")
    merged = pb.gate(first)
    assert merged.passed, merged.reasons
    with pb.bed.engine.connect() as conn:
        kinds = sorted(a.kind for a in alert_rows.list_alerts(conn, limit=10, open_only=True))
    assert kinds == ["forge-recovered"]


def test_the_task_s_issue_hears_of_its_pull_request_once_and_is_closed_by_the_merge(
    pb: PullBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = pb.fake.open_issue(REPO, "Add a", labels=["orch"])
    task = pb.tested_task()
    with pb.bed.engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.id == task.id).values(forge_issue=issue))
    first = pb.gate(task)
    pb.record(task, first, kind="defer", to_stage="deploy-staging", to_state="deferred")
    opened = [c.body for c in pb.fake.comments(REPO, issue)]
    assert opened == [f"Task {task.key}: pull request #2 is open: {pb.fake.url}/acme/app/pull/2"]
    assert f"(for #{issue})" in pb.fake.pull(REPO, 2).issue.body
    pb.fake.set_check_run(REPO, pb.fake.pull(REPO, 2).head_sha, "ci", conclusion="success")
    pb.fake.submit_review(REPO, 2, "APPROVED", author="ada")
    merged = pb.gate(task)
    assert merged.passed, merged.reasons
    assert _said(merged, f"issue #{issue} closed")
    assert pb.fake.issue(REPO, issue).state == "closed"
    comments = [c.body for c in pb.fake.comments(REPO, issue)]
    # Opened once (the history named it), then merged.
    assert len(comments) == 2
    assert comments[1].startswith(f"Task {task.key}: merged pull request #2 (squash) as ")


def test_a_blocked_or_done_task_comments_on_its_issue(pb: PullBed, monkeypatch: Any) -> None:
    issue = pb.fake.open_issue(REPO, "Add a", labels=["orch"])
    task = pb.bed.add_task("add a")
    with pb.bed.engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.id == task.id).values(forge_issue=issue))
    monkeypatch.setenv("GITHUB_TOKEN", pb.fake.token)
    blocked = Transition(
        TransitionKind.BLOCK,
        Stage.TESTING,
        Stage.TESTING,
        State.BLOCKED,
        ["testing: FAIL", "3 tests failed\nand more"],
    )
    body = forge_notes.note_for(task.key, blocked)
    assert body is not None
    forge_notes._send(pb.bed.engine, task.id, body)
    (note,) = [c.body for c in pb.fake.comments(REPO, issue)]
    assert note.startswith(f"Task {task.key} is blocked at testing; a human must look:")
    assert "- 3 tests failed" in note
    assert "and more" not in note  # one line per reason
    advance = Transition(
        TransitionKind.ADVANCE, Stage.TESTING, Stage.DEPLOY_STAGING, State.ACTIVE, []
    )
    assert forge_notes.note_for(task.key, advance) is None


# What an agent writes to speak on the forge in the user's name: a line that closes a fence
# the text is put in, a mention (a notification to whoever it names), an image (fetched by
# every reader's browser) and a link. Inside a code block none of it is more than text.
SPEECH = "@octocat ![x](http://127.0.0.1:9/t.png) [approve it](http://127.0.0.1:9/ok)"


def _outside_code(markdown: str) -> tuple[str, list[str]]:
    """What CommonMark renders of ``markdown`` as text outside code, and its links and
    images: the part a forge would read mentions and addresses in."""
    from markdown_it import MarkdownIt

    text: list[str] = []
    kinds: list[str] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        for child in token.children or []:
            if child.type in ("link_open", "image"):
                kinds.append(child.type)
            elif child.type == "text":
                text.append(child.content)
    return " ".join(text), kinds


def test_a_blocked_note_quotes_the_agents_reasons_as_code(pb: PullBed, monkeypatch: Any) -> None:
    """A reason holds what an agent wrote (a CLI's error, a check's log): the issue's note
    shows it as code, so no mention, image or link of the agent's is sent in the user's
    name (before: the reasons were markdown of the comment)."""
    issue = pb.fake.open_issue(REPO, "Add a", labels=["orch"])
    task = pb.bed.add_task("add a")
    with pb.bed.engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.id == task.id).values(forge_issue=issue))
    monkeypatch.setenv("GITHUB_TOKEN", pb.fake.token)
    reasons = ["testing: FAIL", "```", f"claude: {SPEECH}", "````` " + SPEECH]
    blocked = Transition(TransitionKind.BLOCK, Stage.TESTING, Stage.TESTING, State.BLOCKED, reasons)
    body = forge_notes.note_for(task.key, blocked)
    assert body is not None
    forge_notes._send(pb.bed.engine, task.id, body)
    (note,) = [c.body for c in pb.fake.comments(REPO, issue)]
    shown, kinds = _outside_code(note)
    assert (kinds, "@" in shown, "http" in shown) == ([], False, False), (shown, note)
    assert f"- claude: {SPEECH}" in note  # quoted whole, one line per reason
    # A note cut to its cap still closes its code block.
    long = Transition(
        TransitionKind.BLOCK, Stage.TESTING, Stage.TESTING, State.BLOCKED, [SPEECH] * 200
    )
    cut = forge_notes.note_for(task.key, long)
    assert cut is not None
    assert len(cut) <= forge_notes.MAX_NOTE_CHARS
    shown, kinds = _outside_code(cut)
    assert (kinds, "@" in shown) == ([], False), cut


def test_the_pull_requests_body_quotes_the_test_report_as_code(pb: PullBed) -> None:
    """The test report may be an agent's (an LLM testing stage): the pull request's body
    shows its summary as code that no line of it can close (before: a line of three
    backticks ended the block, and what followed was markdown in the user's name)."""
    task = pb.tested_task()
    report = pb.bed.task_dir(task) / "13-test-report.md"
    report.write_text(f"---\nresult: PASSED\n---\nall good\n```\n{SPEECH}\n")
    pb.gate(task)
    body = pb.fake.pull(REPO, 1).issue.body
    assert SPEECH in body
    shown, kinds = _outside_code(body)
    assert (kinds, "@" in shown, "http" in shown) == ([], False, False), (shown, body)


def test_a_red_check_on_the_open_head_sends_it_back_before_any_rebase(pb: PullBed) -> None:
    task = pb.tested_task()
    first = pb.gate(task)
    pb.record(task, first, kind="defer", to_stage="deploy-staging", to_state="deferred")
    head = pb.head()
    pb.fake.set_check_run(REPO, head, "ci", conclusion="failure", summary="lint", text="E501")
    # Main moves on the forge meanwhile: a rebase would push a new head whose ci starts over.
    pb.fake.push_commit(REPO, "main", {"other.txt": "o\n"}, message="someone else")
    verdict = pb.gate(task)
    assert decide(verdict).kind is TransitionKind.ROLLBACK, verdict.reasons
    assert _said(verdict, "check ci failed")
    assert _said(verdict, "E501")
    # Read as it stood: nothing was rebased or pushed.
    assert pb.head() == head


def test_a_new_attempt_after_a_red_check_is_not_judged_by_the_old_head(pb: PullBed) -> None:
    task = pb.tested_task()
    first = pb.gate(task)
    pb.record(task, first, kind="rollback", to_stage="development", to_state="active")
    old = pb.head()
    pb.fake.set_check_run(REPO, old, "ci", conclusion="failure", summary="lint")
    # The developer's next attempt: new work on the branch, tested again.
    pb.bed.develop(task, {"extra.py": "y = 2\n"}, "fix")
    assert pb.bed.run_testing_stage(task)[0]
    again = pb.gate(task)
    # The new head is pushed and waits for its own checks; the old red is not read again.
    assert again.wait_s is not None, again.reasons
    assert pb.head() != old
    assert _said(again, "checks not reported yet: ci")


def test_the_pull_request_opens_right_after_testing_and_the_gate_pushes_the_rebased_head(
    pb: PullBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = pb.fake.open_issue(REPO, "Add a", labels=["orch"])
    task = pb.tested_task()
    with pb.bed.engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.id == task.id).values(forge_issue=issue))
    ctx = pb.bed.context(task, stage=Stage.TESTING, forge=pb.forge)
    # Only the deterministic test-runner's pass opens it early: an LLM's word does not.
    assert run_after_pass(ctx, agent="test-runner", llm_backend="claude", passed_tests=[]) == []
    assert pb.fake.repo(REPO).pulls == {}
    notes = run_after_pass(ctx, agent="test-runner", llm_backend=None, passed_tests=[])
    assert any("open_pull_request: pull request #2 open on" in n for n in notes), notes
    tested = pb.fake.pull(REPO, 2).head_sha
    assert tested == run_git(pb.bed.worktree(task), "rev-parse", "HEAD").strip()
    # Main moves: the merge gate rebases, pushes the rebased head, and waits for its checks.
    pb.fake.push_commit(REPO, "main", {"other.txt": "o\n"}, message="someone else")
    pb.fake.set_check_run(REPO, tested, "ci", conclusion="success")
    waiting = pb.gate(task)
    assert waiting.wait_s is not None, waiting.reasons
    assert pb.fake.pull(REPO, 2).head_sha != tested
    assert _said(waiting, "checks not reported yet: ci")
    # The issue heard of its pull request once.
    assert len(pb.fake.comments(REPO, issue)) == 1


HERE = "tests/integration/test_pull_land.py"

# Rows of docs/security.md (tests/integration/test_security_doc.py).
DEFENDED = [
    {
        "attack": "put a mention, an image or a link in text that reaches the forge (a "
        "blocked task's reason: a CLI's error, a check's log; a test report an LLM wrote), "
        "after a line of backticks that closes a code block",
        "before": "the issue's note and the pull request's body carried it as markdown in the "
        "user's name: the mention notified whoever it named, every reader's browser fetched "
        "the image",
        "now": "both quote the agent's text in one code block that no line of it can close "
        "(`domain/quoting.py`): to the forge it is text",
        "test": HERE,
    },
]
