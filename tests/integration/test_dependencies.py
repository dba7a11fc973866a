"""Dependent tasks (`--after`) and task authors: filing, the claim, until-idle, what is shown.

Real git repos, a real database (SQLite, or PostgreSQL with ORCH_TEST_DATABASE_URL), the
`patch` developer and the fake agent as real child processes, as in test_engine.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestrator import repo_ops, task_ops
from orchestrator.api import create_app
from orchestrator.cli import app as cli_app
from orchestrator.config import Settings, load_settings
from orchestrator.engine.worker import Worker
from orchestrator.errors import UsageError
from orchestrator.store import control, dependencies, make_engine, queries, upgrade
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow, TaskRow, TransitionRow
from orchestrator.store.schema import task_deps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FAKE = Path(__file__).parent / "agents" / "fake_agent.py"
STAGES = ["development", "testing", "deploy-staging"]
AUTHOR = "Ada Lovelace <ada@example.org>"

# Against README.md "demo\n": A adds a line, B changes A's line (so B applies only on top
# of A), C adds a file of its own.
PATCH_A = (
    b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    b"@@ -1 +1,2 @@\n demo\n+hello\n"
)
PATCH_B = (
    b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    b"@@ -1,2 +1,2 @@\n demo\n-hello\n+hello world\n"
)
PATCH_C = (
    b"diff --git a/c.txt b/c.txt\nnew file mode 100644\n--- /dev/null\n+++ b/c.txt\n"
    b"@@ -0,0 +1 @@\n+c\n"
)


class Bed:
    """A home, the repo `demo` (prefix DEMO), fake agents driven by a plan, a worker."""

    def __init__(self, tmp_path: Path, db_url: str, repo: Path, **overrides: Any) -> None:
        self.plan_path = tmp_path / "plan" / "plan.json"
        self.plan_path.parent.mkdir()
        self.set_plan({})
        values: dict[str, Any] = dict(
            home=tmp_path / "home",
            database_url=db_url,
            developer_retry_budget=0,
            infra_retry_backoff_s=0.05,
            agent_timeout_s=60,
            kill_grace_s=0.5,
            poll_interval_s=0.2,
            heartbeat_interval_s=0.5,
            job_lease_s=5,
            max_parallel_jobs=4,
            max_parallel_jobs_per_repo=4,
        )
        values.update(overrides)
        self.settings: Settings = load_settings(**values)
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self.repo_path = repo
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None

    def set_plan(self, plan: dict[str, Any]) -> None:
        self.plan_path.write_text(json.dumps(plan))

    def fake(self) -> str:
        return (
            f"command:{sys.executable} {FAKE} {self.plan_path} {{task}} {{stage}} "
            f"{{artifact_dir}} {{worktree}}"
        )

    def add_repo(self, development: str | None = None) -> None:
        agents = [f"{s}={self.fake()}" for s in STAGES]
        if development is not None:
            agents[0] = f"development={development}"
        repo_ops.add_repo(
            self.engine,
            "demo",
            self.repo_path,
            repo_ops.RepoInput(
                stages=STAGES,
                agents=agents,
                test_cmd=f"{sys.executable} -c pass",
                sandbox_rw=[str(self.plan_path.parent)],  # the fake agents' plan and logs
            ),
        )

    def add(self, title: str = "T", patch: bytes | None = None, **kw: Any) -> str:
        new = task_ops.add_task(self.engine, self.settings, "demo", title, "body", patch, **kw)
        return new.task.key

    def task(self, key: str) -> TaskRow:
        with self.engine.connect() as conn:
            t = queries.get_task(conn, key)
        assert t is not None
        return t

    def set_state(self, key: str, state: str) -> None:
        task_id = self.task(key).id
        with self.engine.begin() as conn:
            queries.update_task(conn, task_id, now=time.time(), state=state)

    def jobs(self, key: str) -> list[JobRow]:
        with self.engine.connect() as conn:
            return queries.list_jobs(conn, task_id=self.task(key).id)

    def history(self, key: str) -> list[TransitionRow]:
        with self.engine.connect() as conn:
            return queries.list_transitions(conn, self.task(key).id)

    def starts(self) -> list[str]:
        log = self.plan_path.parent / "STARTS.log"
        return log.read_text().split() if log.exists() else []

    def release(self, key: str, stage: str, attempt: int = 1) -> None:
        (self.plan_path.parent / f"RELEASE-{key}-{stage}-{attempt}").write_text("go")

    def start(self, *, until_idle: bool = False) -> None:
        self.worker = Worker(self.settings, self.engine)
        self.thread = threading.Thread(
            target=self.worker.run, kwargs={"until_idle": until_idle}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.worker is not None and self.thread is not None:
            self.worker.stop()
            self.thread.join(timeout=60)

    def wait_for(self, what: Callable[[], bool], deadline_s: float = 90) -> None:
        end = time.monotonic() + deadline_s
        while not what():
            if time.monotonic() > end:
                pytest.fail("the condition was not reached")
            time.sleep(0.05)

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args],
            cwd=self.repo_path,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout


@pytest.fixture
def bed(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Bed]:
    b = Bed(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield b
    b.stop()
    b.engine.dispose()


def kinds(bed: Bed, key: str) -> list[str]:
    return [h.kind for h in bed.history(key)]


# ---- the engine: a dependent task waits, then lands on top ------------------------------


def test_a_dependent_task_waits_for_its_dependency_then_lands_on_top_of_it(bed: Bed) -> None:
    bed.add_repo(development="patch")
    bed.set_plan({"DEMO-1:testing:1": {"hold": True}})
    a = bed.add("greet", PATCH_A)
    bed.start()
    bed.wait_for(lambda: f"{a}:testing:1" in [s.rsplit(":", 1)[0] for s in bed.starts()])
    # A is in flight (held at testing). B, filed now, needs A's line; C needs nothing.
    b = bed.add("greet the world", PATCH_B, after=[a])
    c = bed.add("independent", PATCH_C)
    # C was filed after B, so a claim that does not leave B out takes B first: C going all
    # the way while B's job stays queued shows that B was passed over, not just not reached.
    bed.wait_for(lambda: bed.task(c).state in ("done", "blocked", "cancelled"))
    assert bed.task(c).state == "done"
    assert [(j.state, j.started_at) for j in bed.jobs(b)] == [("queued", None)]
    assert (bed.task(a).stage, bed.task(a).state) == ("testing", "active")
    bed.release(a, "testing")
    bed.wait_for(lambda: bed.task(b).state in ("done", "blocked", "cancelled"))
    assert [bed.task(k).state for k in (a, b)] == ["done", "done"]
    # B went straight through: its patch applied because its workspace began on A's change.
    assert kinds(bed, b) == ["create", "advance", "advance", "done"]
    a_done = bed.history(a)[-1].at
    b_dev = next(j for j in bed.jobs(b) if j.stage == "development")
    assert b_dev.started_at is not None
    assert b_dev.started_at >= a_done
    assert bed.git("show", "main:README.md") == "demo\nhello world\n"
    # Main moved C, A, B: B's commit is the child of A's.
    subjects = bed.git("log", "--format=%s", "main").splitlines()
    assert [s.split(":")[0] for s in subjects[:3]] == [b, a, c]


def test_a_blocked_dependency_leaves_dependents_waiting_and_until_idle_ends(bed: Bed) -> None:
    bed.add_repo()  # developer_retry_budget 0: the first red test run blocks
    bed.set_plan({"DEMO-1:testing:*": {"verdict": "FAIL"}})
    a = bed.add("fails its tests")
    b = bed.add("after a", after=[a])
    c = bed.add("after b", after=[b])  # waits on a live task that can never move
    free = bed.add("free")
    bed.start(until_idle=True)
    assert bed.thread is not None
    bed.thread.join(timeout=90)
    # Had until-idle counted the waiting jobs, the loop would still be turning.
    assert not bed.thread.is_alive(), "orch run --until-idle did not end"
    assert bed.task(a).state == "blocked"
    assert bed.task(free).state == "done"
    for key in (b, c):
        assert bed.task(key).state == "active"
        assert [(j.state, j.started_at) for j in bed.jobs(key)] == [("queued", None)]
    assert waiting(bed, b) == f"waiting on {a} (blocked)"
    assert waiting(bed, c) == f"waiting on {b} (active)"
    task_ops.cancel_task(bed.engine, a)
    assert waiting(bed, b) == f"waiting on {a} (cancelled)"
    with bed.engine.connect() as conn:
        assert not control.work_pending(conn)


def waiting(bed: Bed, key: str) -> str | None:
    task = bed.task(key)  # its own connection: on SQLite a second one would wait for this
    with bed.engine.connect() as conn:
        return task_ops.waiting_text(task_ops.task_waiting_on(conn, task))


# ---- the store: work_pending and the claim ------------------------------------------------


def test_work_pending_counts_a_dependency_s_work_not_the_waiting_job(bed: Bed) -> None:
    bed.add_repo()
    a = bed.add("a")
    b = bed.add("b", after=[a])
    with bed.engine.connect() as conn:
        assert control.work_pending(conn)  # A's job is free to run
    bed.set_state(a, "blocked")
    with bed.engine.connect() as conn:
        assert not control.work_pending(conn)  # only B is left, and B cannot move
    bed.set_state(a, "done")
    with bed.engine.connect() as conn:
        assert control.work_pending(conn)  # A done: B may go
    assert bed.task(b).state == "active"


def test_the_claim_leaves_waiting_jobs_out_before_its_limit(bed: Bed) -> None:
    bed.add_repo()
    a = bed.add("a")
    bed.set_state(a, "blocked")
    # More waiting jobs than the claim's window (max(room * 4, 16)), all ahead of the one
    # job that may run: left out after the LIMIT, they would starve it.
    waiters = [bed.add(f"w{i}", after=[a]) for i in range(20)]
    free = bed.add("free")

    def claim(task_id: int | None = None) -> list[str]:
        with bed.engine.begin() as conn:
            got = jobq.claim_jobs(
                conn,
                owner="probe",
                host="probe",
                now=time.time(),
                lease_s=60,
                limits=jobq.ClaimLimits(1, 1),
                task_id=task_id,
            )
            for job in got:  # frees the one slot again for the next claim
                queries.update_job(conn, job.id, state="finished")
            rows = [queries.get_task_by_id(conn, j.task_id) for j in got]
            return [t.key for t in rows if t is not None]

    assert claim(bed.task(waiters[0]).id) == []
    assert claim() == [free]
    bed.set_state(a, "done")
    assert claim() == [waiters[0]]


# ---- filing: what is refused, and nothing written then -----------------------------------


def test_refusals_write_nothing(bed: Bed, make_repo: Callable[..., Path]) -> None:
    bed.add_repo()
    a = bed.add("a")
    cases = [
        (["DEMO-9"], "unknown task DEMO-9"),
        (["demo-1"], "not a task key"),
        (["DEMO-1; rm -rf /"], "not a task key"),
        ([""], "not a task key"),
        (["DEMO-2"], "cannot wait for itself"),
        ([a, "DEMO-2"], "cannot wait for itself"),
    ]
    for after, words in cases:
        with pytest.raises(UsageError, match=words):
            bed.add("x", after=after)
    for author, words in [
        ("Ada Lovelace", "Name <email>"),
        ("<ada@example.org>", "Name <email>"),
        ("Ada <ada>", "Name <email>"),
        ("... <ada@example.org>", "Name <email>"),
        ("Ada <ada@ex ample.org>", "Name <email>"),
        ("Ada\n<ada@example.org>", "one line"),
        ("Ada\u2028 <ada@example.org>", "one line"),
        ("Ada\x1b[31m <ada@example.org>", "control characters"),
        ("A" * 190 + " <ada@example.org>", "at most 200"),
    ]:
        with pytest.raises(UsageError, match=words):
            bed.add("x", author=author)
    with bed.engine.connect() as conn:
        assert [t.key for t in queries.list_tasks(conn)] == [a]
        assert conn.execute(sa.select(sa.func.count()).select_from(task_deps)).scalar() == 0
    assert not (bed.settings.tasks_dir / "DEMO-2").exists()
    # The refused filings gave their numbers back, and a key of another repo is fine.
    assert bed.add("b", after=[a, a], author=f"  {AUTHOR} ") == "DEMO-2"
    repo_ops.add_repo(bed.engine, "other", make_repo(), repo_ops.RepoInput(stages=STAGES))
    other = task_ops.add_task(bed.engine, bed.settings, "other", "o", after=["DEMO-2"]).task.key
    ids = {k: bed.task(k).id for k in ("DEMO-2", other)}
    with bed.engine.connect() as conn:
        assert dependencies.deps_of(conn, ids["DEMO-2"]) == [dependencies.DepRow(a, "active")]
        assert dependencies.deps_of(conn, ids[other]) == [dependencies.DepRow("DEMO-2", "active")]
    assert bed.task("DEMO-2").author == AUTHOR


def test_the_cycle_check_walks_the_graph(bed: Bed) -> None:
    bed.add_repo()
    a = bed.add("a")
    b = bed.add("b", after=[a])
    c = bed.add("c", after=[b])
    rows = {k: bed.task(k) for k in (a, b, c)}
    ids = {k: t.id for k, t in rows.items()}
    with bed.engine.connect() as conn:
        # Were A edited to wait for C, it would wait for itself: C -> B -> A.
        assert dependencies.dependency_path(conn, [ids[c]], ids[a]) == [ids[c], ids[b], ids[a]]
        assert dependencies.dependency_path(conn, [ids[a]], ids[a]) == [ids[a]]
        assert dependencies.dependency_path(conn, [ids[a]], ids[c]) is None
        with pytest.raises(UsageError, match=f"cycle: {a} -> {c} -> {b} -> {a}"):
            task_ops._check_no_cycle(conn, rows[a], [rows[c]])


# ---- what the CLI, the API and the dashboard show ----------------------------------------


def test_cli_after_and_author(
    bed: Bed, migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bed.add_repo()
    monkeypatch.setenv("ORCH_HOME", str(bed.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def orch(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    for n in (1, 2, 3):
        orch("task", "add", "demo", f"t{n}")
    out = orch(
        "task", "add", "demo", "last", "--after", "DEMO-1,DEMO-2", "--after", "DEMO-3",
        "--author", AUTHOR, "--json",
    )  # fmt: skip
    made = json.loads(out.stdout)
    assert (made["key"], made["after"], made["author"]) == (
        "DEMO-4",
        ["DEMO-1", "DEMO-2", "DEMO-3"],
        AUTHOR,
    )
    task_ops.cancel_task(bed.engine, "DEMO-2")
    shown = json.loads(orch("task", "show", "DEMO-4", "--json").stdout)
    assert shown["after"] == [
        {"key": "DEMO-1", "state": "active"},
        {"key": "DEMO-2", "state": "cancelled"},
        {"key": "DEMO-3", "state": "active"},
    ]
    assert shown["waiting"] == "waiting on DEMO-1 (active), DEMO-2 (cancelled), DEMO-3 (active)"
    assert shown["author"] == AUTHOR
    text = orch("task", "show", "DEMO-4").stdout
    assert "waiting on DEMO-1 (active), DEMO-2 (cancelled)" in " ".join(text.split())
    assert AUTHOR in text
    assert "waiting" not in orch("task", "show", "DEMO-1").stdout
    for args, words in [
        (("--after", "DEMO-9"), "unknown task DEMO-9"),
        (("--after", "DEMO-1,"), "not a task key"),
        (("--after", "DEMO-5"), "cannot wait for itself"),
        (("--author", "nobody"), "Name <email>"),
    ]:
        bad = orch("task", "add", "demo", "x", *args, code=2)
        assert words in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    hostile = ["DEMO-1\n", "DEMO-1\u2028", "\x1b[31mred", "[/x]", "$(id)", "x" * 5000, "日本語"]
    for value in hostile:
        for option in ("--after", "--author"):
            bad = orch("task", "add", "demo", "x", option, value, code=2)
            assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    bad = orch("task", "add", "demo", "x", "--author", f"{AUTHOR}\n", code=2)
    assert "one line" in bad.stderr
    assert len(json.loads(orch("task", "list", "--json").stdout)) == 4


def test_api_after_and_author(bed: Bed) -> None:
    bed.add_repo()
    a = bed.add("a")
    app = create_app(bed.settings, bed.engine)
    token = (bed.settings.home / "api-token").read_text().strip()
    client = TestClient(
        app,
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
        raise_server_exceptions=False,
    )
    with client:
        r = client.post(
            "/tasks",
            json={"repo": "demo", "title": "b", "after": [a], "author": "R&D <rd@example.org>"},
        )
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["after"], made["author"]) == ([a], "R&D <rd@example.org>")
        detail = client.get(f"/tasks/{made['key']}").json()
        assert detail["after"] == [{"key": a, "state": "active"}]
        assert detail["waiting_on"] == [{"key": a, "state": "active"}]
        assert detail["waiting"] == f"waiting on {a} (active)"
        assert detail["author"] == "R&D <rd@example.org>"
        plain = client.get(f"/tasks/{a}").json()
        assert (plain["after"], plain["waiting"], plain["author"]) == ([], None, None)
        page = client.get(f"/ui/tasks/{made['key']}").text
        assert f"waiting on {a} (active)" in page
        assert "R&amp;D &lt;rd@example.org&gt;" in page
        for body, words in [
            ({"after": ["DEMO-9"]}, "unknown task DEMO-9"),
            ({"after": ["DEMO-3"]}, "cannot wait for itself"),
            ({"after": ["nope"]}, "not a task key"),
            ({"after": "DEMO-1"}, "after"),
            ({"author": "R&D"}, "Name <email>"),
        ]:
            r = client.post("/tasks", json={"repo": "demo", "title": "x", **body})
            assert r.status_code == 422, r.text
            assert words in r.json()["error"]
        assert len(client.get("/tasks").json()) == 2
