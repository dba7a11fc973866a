"""Intake by polling (intake.py): labeled forge issues become tasks once, with who asked and
a link back; an issue closed or unlabeled cancels its task. An in-memory forge
(memory_forge.py) stands for GitHub; the database is real (SQLite, or PostgreSQL with
ORCH_TEST_DATABASE_URL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from memory_forge import MemoryForge
from typer.testing import CliRunner

from orchestrator import intake, repo_ops, task_ops, taskdir
from orchestrator.cli import app
from orchestrator.config import Settings, load_settings
from orchestrator.domain import artifacts as A
from orchestrator.forge.base import Forge, ForgeFault, ForgeFaultKind
from orchestrator.forge.settings import ForgeInput
from orchestrator.intake import IntakePoller, poll_intake
from orchestrator.store import queries
from orchestrator.store.rows import RepoRow, TaskRow

MakeRepo = Callable[..., Path]


class Bed:
    """A registered repo ``demo`` on forge repository octo/demo, and its in-memory forge."""

    def __init__(self, tmp_path: Path, db_url: str, engine: sa.Engine, make_repo: MakeRepo):
        self.engine = engine
        self.settings: Settings = load_settings(home=tmp_path / "home", database_url=db_url)
        self.forges: dict[str, MemoryForge] = {}
        self.make_repo = make_repo
        self.add_repo("demo", "octo/demo")

    def add_repo(self, name: str, forge_repo: str, **forge: Any) -> MemoryForge:
        repo_ops.add_repo(
            self.engine,
            name,
            self.make_repo(),
            repo_ops.RepoInput(
                stages=["development", "testing", "deploy-staging"],
                forge=ForgeInput(forge="github", repo=forge_repo, **forge),
            ),
        )
        self.forges[name] = MemoryForge(repo=forge_repo)
        return self.forges[name]

    @property
    def forge(self) -> MemoryForge:
        return self.forges["demo"]

    def forge_for(self, repo: RepoRow, environ: Mapping[str, str]) -> Forge | None:
        del environ
        return self.forges[repo.name]

    def poll(self) -> list[intake.IntakeReport]:
        return poll_intake(self.engine, self.settings, forge_for=self.forge_for)

    def tasks(self) -> list[TaskRow]:
        with self.engine.connect() as conn:
            return queries.list_tasks(conn)

    def task(self, key: str) -> TaskRow:
        with self.engine.connect() as conn:
            task = queries.get_task(conn, key)
        assert task is not None
        return task

    def last_transition(self, key: str) -> Any:
        with self.engine.connect() as conn:
            return queries.list_transitions(conn, self.task(key).id)[-1]


@pytest.fixture
def bed(tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: MakeRepo) -> Bed:
    return Bed(tmp_path, migrated_db_url, engine, make_repo)


def test_a_labeled_issue_is_filed_once_with_its_requester_and_link(bed: Bed) -> None:
    bed.forge.open("Fix the parser", "It breaks on empty input.", labels=("orch",), author="grace")
    bed.forge.open("Not for the agents", labels=("question",))
    reports = bed.poll()
    assert [(r.repo, r.filed, r.cancelled, r.problems) for r in reports] == [
        ("demo", ["DEMO-1"], [], [])
    ]
    # Polled again, and again: the same issue is the same task.
    assert bed.poll()[0].filed == []
    assert bed.poll()[0].filed == []
    [task] = bed.tasks()
    url = "https://github.com/octo/demo/issues/1"
    assert (task.key, task.title, task.requester, task.forge_issue, task.forge_url) == (
        "DEMO-1",
        "Fix the parser",
        "grace",
        1,
        url,
    )
    assert task.body.startswith("It breaks on empty input.")
    assert url in task.body
    # The agent reads the link back in the task's file; the history names the forge.
    text = (taskdir.task_dir(bed.settings.tasks_dir, "DEMO-1") / A.TASK).read_text()
    assert url in text
    assert "grace" in text
    with bed.engine.connect() as conn:
        history = queries.list_transitions(conn, task.id)
        jobs = queries.list_jobs(conn, task_id=task.id)
    assert [(h.kind, h.actor) for h in history] == [("create", "forge")]
    assert [(j.stage, j.state) for j in jobs] == [("development", "queued")]


def test_the_repo_s_own_label_is_matched_without_regard_to_case(bed: Bed) -> None:
    repo_ops.set_repo(
        bed.engine, "demo", repo_ops.RepoInput(forge=ForgeInput(intake_label="Agent"))
    )
    bed.forge.open("labeled orch, not agent", labels=("orch",))
    bed.forge.open("for the agent", labels=("bug", "agent"))
    assert bed.poll()[0].filed == ["DEMO-1"]
    assert [t.forge_issue for t in bed.tasks()] == [2]


def test_taking_the_label_off_cancels_the_task_and_labeling_again_files_none(bed: Bed) -> None:
    bed.forge.open("Fix it", labels=("orch",))
    assert bed.poll()[0].filed == ["DEMO-1"]
    bed.forge.unlabel(1, "orch")
    report = bed.poll()[0]
    assert (report.filed, report.cancelled) == ([], ["DEMO-1"])
    task = bed.task("DEMO-1")
    assert task.state == "cancelled"
    last = bed.last_transition("DEMO-1")
    assert (last.kind, last.actor) == ("cancel", "forge")
    assert last.reasons == ["cancelled by forge: label 'orch' was taken off issue #1"]
    # Labeled again: one task per issue; its cancelled task stays as it is.
    bed.forge.label(1, "orch")
    report = bed.poll()[0]
    assert (report.filed, report.cancelled) == ([], [])
    assert [t.state for t in bed.tasks()] == ["cancelled"]


def test_closing_the_issue_cancels_the_task(bed: Bed) -> None:
    bed.forge.open("Fix it", labels=("orch",))
    bed.forge.open("And this", labels=("orch",))
    bed.poll()
    bed.forge.close(2)
    assert bed.poll()[0].cancelled == ["DEMO-2"]
    assert [(t.key, t.state) for t in bed.tasks()] == [
        ("DEMO-1", "active"),
        ("DEMO-2", "cancelled"),
    ]
    assert bed.last_transition("DEMO-2").reasons == ["cancelled by forge: issue #2 was closed"]
    # Cancelled once: the next rounds leave it (and ask the forge about it no more).
    calls = len(bed.forge.calls)
    assert bed.poll()[0].cancelled == []
    assert bed.forge.calls[calls:] == ["labeled_issues"]


def test_a_done_task_is_left_as_it_is_when_its_issue_closes(bed: Bed) -> None:
    bed.forge.open("Fix it", labels=("orch",))
    bed.poll()
    task_id = bed.task("DEMO-1").id
    with bed.engine.begin() as conn:
        queries.update_task(conn, task_id, now=time.time(), state="done")
    bed.forge.close(1)
    assert bed.poll()[0].cancelled == []
    assert bed.task("DEMO-1").state == "done"


def test_a_forge_fault_is_reported_and_the_other_repos_still_polled(bed: Bed) -> None:
    other = bed.add_repo("other", "octo/other")
    other.open("Other's issue", labels=("orch",))
    bed.forge.open("Fix it", labels=("orch",))
    bed.forge.fault = ForgeFault(ForgeFaultKind.OUTAGE, "502 Bad Gateway", status=502)
    reports = {r.repo: r for r in bed.poll()}
    assert reports["other"].filed == ["OTHER-1"]
    assert reports["demo"].filed == []
    assert reports["demo"].problems == ["forge outage (HTTP 502): 502 Bad Gateway"]
    # Back up: the issue is filed on the next round.
    bed.forge.fault = None
    assert {r.repo: r.filed for r in bed.poll()} == {"demo": ["DEMO-1"], "other": []}


def test_an_outage_while_looking_up_an_issue_cancels_nothing(bed: Bed) -> None:
    bed.forge.open("Fix it", labels=("orch",))
    bed.poll()
    bed.forge.unlabel(1, "orch")

    def down(number: int) -> Any:
        raise ForgeFault(ForgeFaultKind.OUTAGE, "timeout")

    bed.forge.issue = down  # type: ignore[method-assign]
    report = bed.poll()[0]
    assert report.cancelled == []
    assert report.problems == ["issue #1: forge outage: timeout"]
    assert bed.task("DEMO-1").state == "active"


def test_a_missing_token_is_reported_by_its_variable(bed: Bed) -> None:
    reports = poll_intake(bed.engine, bed.settings, environ={"OTHER": "x"})
    assert len(reports) == 1
    assert reports[0].filed == []
    [problem] = reports[0].problems
    assert "GITHUB_TOKEN" in problem
    assert "not set" in problem


def test_a_title_no_task_could_have_is_made_one_line(bed: Bed) -> None:
    bed.forge.open(
        "first line\nsecond\x1b[31m red " + "x" * 300, "body\0with a NUL", labels=("orch",)
    )
    assert bed.poll()[0].filed == ["DEMO-1"]
    task = bed.task("DEMO-1")
    # Control characters gone (the escape's printable rest is plain text), one line.
    assert task.title.startswith("first line second [31m red xxx")
    assert len(task.title) == 200
    assert task.title.endswith("…")
    assert "\0" not in task.body


def test_the_poller_wakes_the_worker_only_after_filing(bed: Bed) -> None:
    woken = threading.Event()
    poller = IntakePoller(bed.engine, bed.settings, forge_for=bed.forge_for, on_filed=woken.set)
    assert poller.poll_once() == [intake.IntakeReport("demo")]
    assert not woken.is_set()
    bed.forge.open("Fix it", labels=("orch",))
    assert poller.poll_once()[0].filed == ["DEMO-1"]
    assert woken.is_set()


def test_the_poller_thread_polls_until_stopped(bed: Bed) -> None:
    bed.forge.open("Fix it", labels=("orch",))
    poller = IntakePoller(bed.engine, bed.settings, forge_for=bed.forge_for)
    filed = threading.Event()
    poller.on_filed = filed.set
    assert poller.start()
    assert filed.wait(30)
    poller.stop()
    assert poller.thread is not None
    assert not poller.thread.is_alive()
    assert [t.key for t in bed.tasks()] == ["DEMO-1"]


def test_polling_is_off_at_zero(bed: Bed) -> None:
    off = replace(bed.settings, forge_poll_s=0.0)
    poller = IntakePoller(bed.engine, off, forge_for=bed.forge_for)
    assert poller.start() is False
    assert poller.thread is None


def test_orch_run_until_idle_files_the_labeled_issues_first(
    bed: Bed, monkeypatch: pytest.MonkeyPatch, migrated_db_url: str
) -> None:
    """`orch run` hosts intake: with --until-idle, one round before the loop."""
    repo_ops.set_repo(bed.engine, "demo", repo_ops.RepoInput(agents=["development=manual"]))
    bed.forge.open("Fix it", labels=("orch",), author="grace")
    monkeypatch.setattr("orchestrator.forge.connect.forge_for", bed.forge_for)
    monkeypatch.setenv("ORCH_HOME", str(bed.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    result = CliRunner().invoke(app, ["run", "--until-idle"])
    assert result.exit_code == 0, (result.output, result.exception)
    task = bed.task("DEMO-1")
    assert task.requester == "grace"
    # The worker ran its first job: the manual agent waits for a human.
    assert task.state == "blocked"


def test_an_issue_filed_by_another_process_meanwhile_is_not_filed_twice(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the unique index settles: another poll or delivery files the issue after
    this one looked and before it inserts (on PostgreSQL both can look at once)."""
    issue = bed.forge.open("Fix it", labels=("orch",))
    origin = intake.origin_of(issue)
    first = task_ops.add_task(bed.engine, bed.settings, "demo", "Fix it", origin=origin)
    assert first.created
    real = task_ops._filed_before
    looks: list[bool] = []

    def looked_too_early(*args: Any) -> Any:
        looks.append(True)
        # The first look happens before the other filing commits: it finds nothing.
        return None if len(looks) == 1 else real(*args)

    monkeypatch.setattr(task_ops, "_filed_before", looked_too_early)
    again = task_ops.add_task(bed.engine, bed.settings, "demo", "Fix it", origin=origin)
    assert len(looks) == 2
    assert (again.created, again.task.key) == (False, "DEMO-1")
    assert [t.key for t in bed.tasks()] == ["DEMO-1"]
    # The refused insert left no folder and gave its key back.
    assert not taskdir.task_dir(bed.settings.tasks_dir, "DEMO-2").exists()
    later = task_ops.add_task(bed.engine, bed.settings, "demo", "by hand")
    assert later.task.key == "DEMO-2"
