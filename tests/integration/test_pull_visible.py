"""A task's pull request made visible: stored as the landing read it, counted once.

The store's round trip runs on SQLite and, with ``ORCH_TEST_DATABASE_URL``, PostgreSQL.
The gate tests land through the fake GitHub as ``test_pull_land.py`` does, and read what
the landing recorded: the row `orch task show`, the API and the dashboard show, and the
events ``/metrics`` counts.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.store import metrics as figures
from orchestrator.store import pulls, queries
from orchestrator.store.rows import TaskRow

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
