"""A task's pull request made visible: stored as the landing read it, counted once.

The store's round trip runs on SQLite and, with ``ORCH_TEST_DATABASE_URL``, PostgreSQL.
The gate tests land through the fake GitHub as ``test_pull_land.py`` does, and read what
the landing recorded: the row `orch task show`, the API and the dashboard show, and the
events ``/metrics`` counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.api_client import api_client
from tests.integration.test_pull_land import REPO, PullBed
from typer.testing import CliRunner

from orchestrator.cli import app as cli_app
from orchestrator.config import load_settings
from orchestrator.forge.base import CheckResult, MergeResult, PullRequest, Review
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.gates.pull_record import seen_of
from orchestrator.store import metrics as figures
from orchestrator.store import pulls, queries
from orchestrator.store.rows import TaskRow
from orchestrator.store.schema import tasks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

URL = "https://github.example/acme/app/pull/7"


def _task(engine: sa.Engine, number: int = 1) -> TaskRow:
    with engine.begin() as conn:
        repo = queries.get_repo(conn, "demo") or queries.insert_repo(
            conn,
            name="demo",
            path="/srv/demo",
            key_prefix="DEMO",
            now=100.0,
            stages=["development", "testing", "deploy-staging"],
            agents={},
        )
        return queries.insert_task(
            conn, repo_id=repo.id, title=f"t{number}", body="", stage="deploy-staging", now=100.0
        )


def _seen(head: str = "a" * 40, state: str = "open", **changes: object) -> pulls.PullSeen:
    values: dict[str, object] = {
        "number": 7,
        "url": URL,
        "head_sha": head,
        "state": state,
        "checks": (
            pulls.PullCheck("ci", "failure", "1 test failed", True, "https://ci.example/1"),
            pulls.PullCheck("lint", "expected", "not reported yet", True),
            pulls.PullCheck("docs", "success", "", False),
        ),
        "reviews": (
            pulls.PullReview(11, "ada", "CHANGES_REQUESTED", "0" * 40),
            pulls.PullReview(12, "bob", "APPROVED", head),
        ),
    }
    values.update(changes)
    return pulls.PullSeen(**values)  # type: ignore[arg-type]


def _record(engine: sa.Engine, task: TaskRow, seen: pulls.PullSeen, now: float) -> pulls.PullRow:
    with engine.begin() as conn:
        return pulls.record_pull(conn, task.id, seen, now=now)


def _events(engine: sa.Engine, task: TaskRow) -> list[tuple[str, int, str, str]]:
    with engine.connect() as conn:
        return pulls.list_pull_events(conn, task.id)


# ---- the store ---------------------------------------------------------------------------


def test_a_pull_request_round_trips_with_its_checks_and_reviews(engine: sa.Engine) -> None:
    task = _task(engine)
    with engine.connect() as conn:
        assert pulls.get_pull(conn, task.id) is None
    stored = _record(engine, task, _seen(), now=1000.0)
    with engine.connect() as conn:
        read = pulls.get_pull(conn, task.id)
    assert read == stored
    assert read is not None
    assert (read.number, read.url, read.state, read.head_sha) == (7, URL, "open", "a" * 40)
    assert read.checks == _seen().checks
    assert read.reviews == _seen().reviews
    assert (read.opened_at, read.updated_at, read.merged_at, read.merged_sha) == (
        1000.0,
        1000.0,
        None,
        None,
    )
    view = read.view()
    assert view["checks"][0] == {
        "name": "ci",
        "state": "failure",
        "summary": "1 test failed",
        "required": True,
        "details_url": "https://ci.example/1",
    }
    # An approval counts for the head it saw: bob's is on this head, ada's on an older one.
    assert [(r["author"], r["on_head"]) for r in view["reviews"]] == [
        ("ada", False),
        ("bob", True),
    ]


def test_reading_again_updates_the_row_and_counts_each_thing_once(engine: sa.Engine) -> None:
    task = _task(engine)
    _record(engine, task, _seen(), now=1000.0)
    again = _record(engine, task, _seen(), now=1100.0)
    # Read again: the same pull request, first seen at 1000, read last at 1100.
    assert (again.opened_at, again.updated_at) == (1000.0, 1100.0)
    assert _events(engine, task) == [
        ("opened", 7, "", ""),
        ("check-failed", 7, "a" * 40, "ci"),
        ("changes-requested", 7, "11", "ada"),
    ]
    # A new head: ci failing there is one more failure; ada's review is the same review.
    _record(engine, task, _seen("b" * 40), now=1200.0)
    merged = _record(
        engine, task, _seen("b" * 40, "merged", checks=(), merged_sha="c" * 40), now=1300.0
    )
    assert (merged.state, merged.merged_sha, merged.merged_at) == ("merged", "c" * 40, 1300.0)
    assert merged.checks == ()
    # Read once more after the merge: the merge keeps its time and commit.
    later = _record(engine, task, _seen("b" * 40, "merged", checks=()), now=1400.0)
    assert (later.merged_sha, later.merged_at, later.opened_at) == ("c" * 40, 1300.0, 1000.0)
    kinds = [e[0] for e in _events(engine, task)]
    assert kinds == ["opened", "check-failed", "changes-requested", "check-failed", "merged"]
    with engine.connect() as conn:
        counted = figures.pull_events_by_kind(conn)
        states = figures.pull_requests_by_state(conn)
    assert counted == {
        ("opened", ""): 1,
        ("check-failed", "ci"): 2,
        ("changes-requested", ""): 1,
        ("merged", ""): 1,
    }
    assert states == {"merged": 1}


def test_a_pull_request_that_replaces_a_closed_one_is_a_new_row_and_counted(
    engine: sa.Engine,
) -> None:
    task, other = _task(engine, 1), _task(engine, 2)
    _record(engine, task, _seen(), now=1000.0)
    _record(engine, other, _seen(reviews=()), now=1000.0)
    replaced = _record(engine, task, _seen(number=9, reviews=()), now=2000.0)
    assert (replaced.number, replaced.opened_at) == (9, 2000.0)
    with engine.connect() as conn:
        counted = figures.pull_events_by_kind(conn)
        states = figures.pull_requests_by_state(conn)
    assert counted[("opened", "")] == 3
    # Each task's ci failure on the same head is its own: once per pull request and head.
    assert counted[("check-failed", "ci")] == 3
    assert states == {"open": 2}


# ---- what the landing reads, as it is stored ---------------------------------------------


def test_the_required_checks_come_first_and_one_not_reported_is_expected() -> None:
    pr = PullRequest(3, URL, "orch/DEMO-1", "h" * 40, "main")
    checks = [
        CheckResult("docs", "success"),
        CheckResult("ci", "failure", "red", "https://ci.example/9", log_tail="E   boom"),
    ]
    reviews = [Review(5, "ada", "APPROVED", "ok", "h" * 40)]
    seen = seen_of(pr, checks, reviews, required=["lint", "ci", "lint"])
    assert [(c.name, c.state, c.required) for c in seen.checks] == [
        ("lint", "expected", True),
        ("ci", "failure", True),
        ("docs", "success", False),
    ]
    assert seen.checks[1].details_url == "https://ci.example/9"
    assert seen.reviews == (pulls.PullReview(5, "ada", "APPROVED", "h" * 40),)
    assert (seen.state, seen.merged_sha) == ("open", None)
    merged = seen_of(pr, checks, reviews, merged=MergeResult(True, "m" * 40))
    assert (merged.state, merged.merged_sha) == ("merged", "m" * 40)
    refused = seen_of(pr, checks, reviews, merged=MergeResult(False, head_moved=True))
    assert (refused.state, refused.merged_sha) == ("open", None)


# ---- the gate records it -----------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "fake") as gh:
        yield gh


@pytest.fixture
def pb(tmp_path: Path, engine: sa.Engine, make_repo: Any, fake: FakeGitHub) -> PullBed:
    return PullBed(tmp_path, engine, make_repo, fake)


def _pull(pb: PullBed, task: TaskRow) -> pulls.PullRow:
    with pb.bed.engine.connect() as conn:
        row = pulls.get_pull(conn, task.id)
    assert row is not None
    return row


def test_the_landing_records_the_pull_request_it_waits_for(pb: PullBed) -> None:
    task = pb.tested_task()
    waiting = pb.gate(task)
    assert waiting.wait_s is not None, waiting.reasons
    row = _pull(pb, task)
    assert (row.number, row.state, row.head_sha) == (1, "open", pb.head())
    assert row.url.endswith(f"/{REPO}/pull/1")
    # Branch protection requires ci; nothing has reported it yet.
    assert [(c.name, c.state, c.required) for c in row.checks] == [("ci", "expected", True)]
    assert row.reviews == ()
    assert _events(pb.bed.engine, task) == [("opened", 1, "", "")]


def test_a_failing_check_and_changes_requested_are_recorded_and_counted_once(
    pb: PullBed,
) -> None:
    task = pb.tested_task()
    pb.gate(task)
    head = pb.head()
    pb.fake.set_check_run(REPO, head, "ci", conclusion="failure", summary="1 test failed")
    pb.fake.set_check_run(REPO, head, "lint", conclusion="success")
    pb.fake.submit_review(REPO, 1, "CHANGES_REQUESTED", author="ada", body="rename it")
    sent_back = pb.gate(task)
    assert not sent_back.passed
    assert sent_back.wait_s is None
    again = pb.gate(task)  # read again: nothing new to count
    assert not again.passed
    row = _pull(pb, task)
    assert [(c.name, c.state, c.required) for c in row.checks] == [
        ("ci", "failure", True),
        ("lint", "success", False),
    ]
    assert "1 test failed" in row.checks[0].summary
    assert [(r.author, r.state, r.commit_sha) for r in row.reviews] == [
        ("ada", "CHANGES_REQUESTED", head)
    ]
    assert [(k, seen, name) for k, _n, seen, name in _events(pb.bed.engine, task)] == [
        ("opened", "", ""),
        ("check-failed", head, "ci"),
        ("changes-requested", str(row.reviews[0].id), "ada"),
    ]


def test_a_merge_through_the_api_is_recorded_with_its_commit(pb: PullBed) -> None:
    task = pb.tested_task()
    pb.gate(task)
    pb.fake.set_check_run(REPO, pb.head(), "ci", conclusion="success")
    pb.fake.submit_review(REPO, 1, "APPROVED", author="ada")
    merged = pb.gate(task)
    assert merged.passed, merged.reasons
    row = _pull(pb, task)
    assert (row.state, row.merged_sha) == ("merged", merged.fields["merged_sha"])
    assert row.merged_sha == pb.forge_main()
    assert row.merged_at is not None
    assert row.merged_at >= row.opened_at
    assert row.view()["reviews"][0]["on_head"] is True
    assert [e[0] for e in _events(pb.bed.engine, task)] == ["opened", "merged"]


def test_a_database_error_while_recording_is_a_reason_and_the_decision_stands(
    pb: PullBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = pb.tested_task()

    def broken(*_args: object, **_kwargs: object) -> pulls.PullRow:
        raise sa.exc.OperationalError("INSERT INTO pull_requests", {}, Exception("disk I/O"))

    monkeypatch.setattr(pulls, "record_pull", broken)
    verdict = pb.gate(task)
    assert verdict.wait_s is not None, verdict.reasons
    assert any(
        "could not record pull request #1" in r and "disk I/O" in r for r in verdict.reasons
    ), verdict.reasons
    with pb.bed.engine.connect() as conn:
        assert pulls.get_pull(conn, task.id) is None


# ---- shown: `orch task show`, the API, the dashboard, /metrics ---------------------------

ISSUE = "https://github.example/acme/app/issues/12"


def _file_from_issue(engine: sa.Engine, task: TaskRow, url: str) -> None:
    # As intake files it (the columns are set once, when the task is filed).
    with engine.begin() as conn:
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.id == task.id)
            .values(requester="ada", forge_issue=12, forge_url=url)
        )


def _shown_task(pb: PullBed) -> TaskRow:
    """A task filed from issue 12 whose pull request failed ci and was asked to change."""
    task = pb.tested_task()
    _file_from_issue(pb.bed.engine, task, ISSUE)
    pb.gate(task)
    head = pb.head()
    pb.fake.set_check_run(REPO, head, "ci", conclusion="failure", summary="1 test <failed>")
    pb.fake.submit_review(REPO, 1, "CHANGES_REQUESTED", author="bob")
    assert not pb.gate(task).passed
    return task


def test_task_show_the_api_the_dashboard_and_metrics_show_the_pull_request(
    pb: PullBed, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _shown_task(pb)
    row = _pull(pb, task)
    monkeypatch.setenv("ORCH_HOME", str(pb.bed.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("COLUMNS", "200")
    shown = CliRunner().invoke(cli_app, ["task", "show", task.key, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert (data["forge_issue"], data["forge_url"]) == (12, ISSUE)
    pr = data["pull_request"]
    assert (pr["number"], pr["url"], pr["state"], pr["head_sha"]) == (
        1,
        row.url,
        "open",
        row.head_sha,
    )
    assert [(c["name"], c["state"], c["required"]) for c in pr["checks"]] == [
        ("ci", "failure", True)
    ]
    assert [(r["author"], r["state"], r["on_head"]) for r in pr["reviews"]] == [
        ("bob", "CHANGES_REQUESTED", True)
    ]
    text = CliRunner().invoke(cli_app, ["task", "show", task.key])
    assert text.exit_code == 0, text.output
    assert re.search(rf"pull request #1 open {re.escape(row.url)}", text.stdout), text.stdout
    assert re.search(r"│ ci\s+│ yes\s+│ failure\s+│", text.stdout), text.stdout
    assert "1 test <failed>" in text.stdout
    assert re.search(r"bob\s+│\s+CHANGES_REQUESTED\s+│\s+this head", text.stdout)
    assert f"in {ISSUE}" in text.stdout

    with api_client(pb.bed.settings, pb.bed.engine) as client:
        # The API says exactly what the CLI says.
        assert client.get(f"/tasks/{task.key}").json() == data
        html = client.get(f"/ui/tasks/{task.key}").text
        scraped = client.get("/metrics").text
    assert f'<a id="task-issue" href="{ISSUE}"' in html
    assert f'<a id="task-pull" href="{row.url}"' in html
    # ci links to its run on the forge, says it is required, and that it failed.
    assert re.search(
        r'<td><a href="http[^"]+/runs/\d+" rel="noopener noreferrer">ci</a></td>'
        r'<td>required</td>\s*<td><span class="badge failure">',
        html,
    ), html
    assert "1 test &lt;failed&gt;" in html
    assert re.search(r"<td>bob</td><td><span class=\"badge CHANGES_REQUESTED\">", html)
    families = {f.name: f for f in text_string_to_metric_families(scraped)}

    def sample(family: str, **labels: str) -> float:
        for s in families[family].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no {family} {labels} in {families[family].samples}")

    assert sample("orch_pull_requests_opened") == 1
    assert sample("orch_pull_requests_merged") == 0
    # Read twice on the same head, ci's failure is counted once.
    assert sample("orch_pull_request_checks_failed", check="ci") == 1
    assert sample("orch_pull_request_changes_requested") == 1
    assert sample("orch_pull_requests", state="open") == 1
    assert sample("orch_pull_requests", state="merged") == 0


def test_the_dashboard_links_only_web_addresses(
    engine: sa.Engine, migrated_db_url: str, tmp_path: Path
) -> None:
    task = _task(engine)
    evil = "javascript:alert(1)"
    _file_from_issue(engine, task, evil)
    _record(engine, task, _seen(url=evil), now=1000.0)
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    with api_client(settings, engine) as client:
        html = client.get(f"/ui/tasks/{task.key}").text
        assert client.get(f"/tasks/{task.key}").json()["pull_request"]["url"] == evil
    assert "javascript:" not in html
    assert "pull request #7" in html
    # The checks that gave a web page link to it.
    assert '<a href="https://ci.example/1" rel="noopener noreferrer">ci</a>' in html
