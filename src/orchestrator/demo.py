"""`orch demo`: a throwaway home and repo, four tasks through the whole pipeline.

Everything is deterministic and local: the `patch` developer, the test-runner, the
staging-runner, the merge gate, the deploy-finalizer and the post-deploy-monitor against a
tiny health server on a free loopback port. The demo checks its own outcome and says so.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator import repo_ops, sandbox, task_ops, taskdir
from orchestrator.config import Settings, load_settings
from orchestrator.domain import artifacts as A
from orchestrator.engine.worker import Worker
from orchestrator.gitops.git import git
from orchestrator.store import jobs as jobq
from orchestrator.store import queries
from orchestrator.store.bootstrap import open_engine

CALC = '''"""A tiny calculator for the orchestrator demo."""


def add(a, b):
    return a + b


# --- subtract ---


# --- multiply ---


# --- divide ---


# --- power ---
'''

TEST_ADD = """from calc import add


def test_add():
    assert add(2, 3) == 5
"""

STAGING = '''"""Staging smoke: import the package from this checkout and use it."""
import sys

import calc

names = [n for n in dir(calc) if not n.startswith("_")]
print("staging: calc exposes", ", ".join(names))
sys.exit(0 if calc.add(2, 2) == 4 else 1)
'''

DEPLOY = '''"""Deploy: record what is deployed where the health server can see it."""
import hashlib
import pathlib
import sys

target = pathlib.Path(sys.argv[1])
target.mkdir(parents=True, exist_ok=True)
source = pathlib.Path("calc/__init__.py").read_bytes()
(target / "VERSION").write_text(hashlib.sha256(source).hexdigest()[:12] + "\\n")
print("deployed", (target / "VERSION").read_text().strip())
'''


@dataclass(frozen=True)
class DemoTask:
    """A task of the demo: its title, its patches in order, and what must happen to it."""

    title: str
    edits: list[dict[str, str]]
    expect_rollbacks: int = 0


def _insert(marker: str, code: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text.replace(f"# --- {marker} ---\n", f"# --- {marker} ---\n{code}", 1)

    return edit


TASKS = [
    DemoTask(
        "Add subtract",
        [
            {
                "calc/__init__.py": "subtract|def sub(a, b):\n    return a - b\n",
                "tests/test_sub.py": "from calc import sub\n\n\ndef test_sub():\n"
                "    assert sub(5, 3) == 2\n",
            }
        ],
    ),
    DemoTask(
        "Add multiply",
        [
            # The first attempt has a bug the tests catch; the second fixes it.
            {
                "calc/__init__.py": "multiply|def mul(a, b):\n    return a + b\n",
                "tests/test_mul.py": "from calc import mul\n\n\ndef test_mul():\n"
                "    assert mul(3, 4) == 12\n",
            },
            {"calc/__init__.py": "fix|    return a + b\n|    return a * b\n"},
        ],
        expect_rollbacks=1,
    ),
    DemoTask(
        "Add divide",
        [
            {
                "calc/__init__.py": "divide|def div(a, b):\n    return a / b\n",
                "tests/test_div.py": "from calc import div\n\n\ndef test_div():\n"
                "    assert div(9, 3) == 3\n",
            }
        ],
    ),
    DemoTask(
        "Add power",
        [
            {
                "calc/__init__.py": "power|def power(a, b):\n    return a ** b\n",
                "tests/test_pow.py": "from calc import power\n\n\ndef test_power():\n"
                "    assert power(2, 5) == 32\n",
            }
        ],
    ),
]


def _apply_edit(root: Path, rel: str, spec: str) -> None:
    path = root / rel
    kind, _, rest = spec.partition("|")
    if rel.startswith("tests/"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec)
        return
    text = path.read_text()
    if kind == "fix":
        old, _, new = rest.partition("|")
        # The fix replaces the first occurrence after the multiply marker only.
        head, sep, tail = text.partition("# --- multiply ---\n")
        text = head + sep + tail.replace(old, new, 1)
    else:
        text = _insert(kind, rest)(text)
    path.write_text(text)


def run_git(args: list[str], cwd: Path) -> str:
    """``git args`` in ``cwd``; its output, or a RuntimeError saying why it failed."""
    res = git(args, cwd)
    if not res:
        msg = f"git {' '.join(args)} failed: {res.stderr.strip()}"
        raise RuntimeError(msg)
    return res.stdout


# The demo's suite needs no plugin: the ones this interpreter's environment would autoload
# (hypothesis, xdist, randomly ...) could only change what it shows, and cost seconds of
# imports on each of its suite runs.
PYTEST_INI = "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = --disable-plugin-autoload\n"


def make_repo(root: Path, files: Mapping[str, str] | None = None) -> Path:
    """The demo's git repository: a package, its pytest suite, staging and deploy scripts,
    and ``files`` (relative path: text) besides, all in its first commit."""
    repo = root / "calc-repo"
    (repo / "calc").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "calc" / "__init__.py").write_text(CALC)
    (repo / "tests" / "test_add.py").write_text(TEST_ADD)
    (repo / "staging.py").write_text(STAGING)
    (repo / "deploy.py").write_text(DEPLOY)
    (repo / "pytest.ini").write_text(PYTEST_INI)
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    for rel, text in (files or {}).items():
        (repo / rel).write_text(text)
    ident = ["-c", "user.name=demo", "-c", "user.email=demo@localhost"]
    run_git(["init", "-q", "-b", "main"], repo)
    run_git(["add", "-A"], repo)
    run_git([*ident, "commit", "-q", "-m", "calc: add()"], repo)
    return repo


def make_patches(repo: Path, task: DemoTask) -> list[bytes]:
    """Each of a task's patches as a diff on top of the ones before it."""
    ident = ["-c", "user.name=demo", "-c", "user.email=demo@localhost"]
    patches: list[bytes] = []
    run_git(["checkout", "-q", "-b", "scratch"], repo)
    try:
        for edits in task.edits:
            for rel, spec in edits.items():
                _apply_edit(repo, rel, spec)
            run_git(["add", "-A"], repo)
            patches.append(run_git(["diff", "--cached", "--binary"], repo).encode())
            run_git([*ident, "commit", "-q", "-m", "scratch"], repo)
    finally:
        run_git(["checkout", "-q", "main"], repo)
        run_git(["branch", "-q", "-D", "scratch"], repo)
    return patches


class HealthServer:
    """The deployed service's health endpoint: 200 with the deployed version."""

    def __init__(self, deploy_dir: Path) -> None:
        directory = deploy_dir

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                version_file = directory / "VERSION"
                version = version_file.read_text().strip() if version_file.exists() else "none"
                body = json.dumps({"status": "ok", "version": version}).encode()
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        # poll_interval: how soon close()'s shutdown() returns (socketserver's default: 0.5 s).
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class TaskReport:
    """One line of the summary."""

    key: str
    title: str
    stage: str
    state: str
    attempts: int
    rollbacks: int
    seconds: float
    verdicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """What the demo did and whether it went as expected."""

    home: Path
    repo: Path
    tasks: list[TaskReport]
    main_log: list[str]
    problems: list[str]
    seconds: float
    # "on", or "off" with why: the demo runs its own trusted code, so without bubblewrap it
    # runs bare and says so instead of refusing (a real repo's jobs are refused).
    sandbox: str = "on"

    @property
    def ok(self) -> bool:
        """True when every task ended as the demo expects."""
        return not self.problems and not any(t.problems for t in self.tasks)


def build(
    root: Path, *, files: Mapping[str, str] | None = None, **overrides: Any
) -> tuple[Settings, sa.Engine, Path, HealthServer]:
    """Home (settings with ``overrides``), database, repo (with ``files``), health server;
    the repo registered as ``demo``, no task filed yet."""
    home = root / "home"
    wanted = load_settings(home=home, database_url="").sandbox
    settings = load_settings(
        home=home,
        database_url="",
        sandbox=wanted and sandbox.probe().ok,
        max_parallel_jobs=4,
        max_parallel_jobs_per_repo=4,
        poll_interval_s=0.2,
        infra_retry_backoff_s=0.5,
        kill_grace_s=1.0,
        test_runner_timeout_s=120,
        staging_runner_timeout_s=60,
        merge_retest_timeout_s=120,
        agent_timeout_s=120,
        reaper_max_running_s=600,
        **overrides,
    )
    engine = open_engine(settings)
    repo = make_repo(root, files)
    deploy_dir = root / "deployed"
    server = HealthServer(deploy_dir)
    py = sys.executable
    repo_ops.add_repo(
        engine,
        "demo",
        repo,
        repo_ops.RepoInput(
            stages=["development", "testing", "deploy-staging", "deploy", "post-deploy-monitor"],
            agents=["development=patch"],
            staging_cmd=f"{py} staging.py",
            deploy_cmd=f"{py} deploy.py {deploy_dir}",
            health_url=server.url,
        ),
    )
    repo_ops.set_repo_options(engine, "demo", {"monitor": {"checks": 3, "interval_s": 0.05}})
    return settings, engine, repo, server


def setup(root: Path) -> tuple[Settings, sa.Engine, Path, HealthServer, list[str]]:
    """Home, database, repo, health server; registers the repo and files the tasks."""
    settings, engine, repo, server = build(root)
    keys = []
    for task in TASKS:
        patches = make_patches(repo, task)
        new = task_ops.add_task(
            engine, settings, "demo", task.title, f"{task.title} to calc.", patches[0]
        )
        for extra in patches[1:]:
            taskdir.add_patch(new.folder, extra)
        keys.append(new.task.key)
    return settings, engine, repo, server, keys


def snapshot(engine: sa.Engine) -> list[dict[str, object]]:
    """Each task's key, title, stage, state, jobs and rollbacks so far, for the live
    display."""
    with engine.connect() as conn:
        rows = []
        for t in queries.list_tasks(conn):
            jobs = queries.list_jobs(conn, task_id=t.id)
            running = [j for j in jobs if j.state == "running"]
            history = queries.list_transitions(conn, t.id)
            rows.append(
                {
                    "key": t.key,
                    "title": t.title,
                    "stage": t.stage,
                    "state": t.state,
                    "jobs": len(jobs),
                    "agent": running[0].agent.split(" ")[0] if running else "",
                    "reason": (t.reasons or [""])[-1],
                    "rollbacks": sum(1 for h in history if h.kind == "rollback"),
                }
            )
        return rows


def check(
    settings: Settings,
    engine: sa.Engine,
    repo: Path,
    keys: list[str],
    started: float,
    tasks: Sequence[DemoTask] | None = None,
) -> DemoResult:
    """Read back the DB, the artifacts and main; list anything that is not as expected.
    ``keys`` are the tasks filed from ``tasks`` (default ``TASKS``), in order."""
    problems: list[str] = []
    reports: list[TaskReport] = []
    rebased: list[str] = []
    main_log = run_git(["log", "--format=%h %s", "main"], repo).splitlines()
    with engine.connect() as conn:
        for key, spec in zip(keys, TASKS if tasks is None else tasks, strict=True):
            t = queries.get_task(conn, key)
            assert t is not None
            history = queries.list_transitions(conn, t.id)
            jobs = queries.list_jobs(conn, task_id=t.id)
            rollbacks = sum(1 for h in history if h.kind == "rollback")
            # Read in the history, not the merge report: a gate that waited for a pull
            # request rebased in an earlier run, and the report keeps only the last.
            if any("rebased onto" in r for h in history for r in h.reasons):
                rebased.append(key)
            folder = taskdir.task_dir(settings.tasks_dir, key)
            # Only what a job of this pipeline recorded is a result; any other file there
            # (forged, or left by hand) is shown as no result at all.
            ours, _ = taskdir.split_artifacts(folder, jobq.recorded_artifacts(conn, t.id))
            verdicts = []
            for name in (
                A.TEST_REPORT,
                A.STAGING_LOG,
                A.MERGE_REPORT,
                A.DEPLOY_LOG,
                A.MONITOR_REPORT,
            ):
                text = taskdir.read_artifact(folder, name) if name in ours else None
                found = A.parse_keys(text or "")
                key_name = A.ARTIFACTS[name].keys[0].name
                label = key_name.removesuffix("_status")
                verdicts.append(f"{label} {(found.get(key_name) or ['-'])[-1]}")
            report = TaskReport(
                key,
                t.title,
                t.stage,
                t.state,
                len(jobs),
                rollbacks,
                (t.updated_at - t.created_at),
                verdicts,
            )
            if t.state != "done":
                report.problems.append(f"ended {t.state} at {t.stage}: {t.reasons[-1:]}")
            if rollbacks != spec.expect_rollbacks:
                report.problems.append(f"{rollbacks} rollbacks, expected {spec.expect_rollbacks}")
            if not any(t.title in line for line in main_log):
                report.problems.append("its change is not on main")
            reports.append(report)
    # Tasks filed together start from one main: the later merges must have rebased.
    if not rebased:
        problems.append("no merge needed a rebase; the demo did not show the merge gate's rebase")
    calc = run_git(["show", "main:calc/__init__.py"], repo)
    for name in ("def sub", "def mul", "return a * b", "def div", "def power"):
        if name not in calc:
            problems.append(f"main's calc/__init__.py lacks {name!r}")
    state, detail = sandbox.sandbox_state(settings)
    shown = "on" if state == "on" else f"off ({detail})"
    if not settings.sandbox and not sandbox.probe().ok:
        shown = f"off: {sandbox.probe().detail}"
    return DemoResult(
        settings.home, repo, reports, main_log, problems, time.time() - started, shown
    )


def run_demo(
    root: Path | None = None,
    *,
    on_tick: Callable[[list[dict[str, object]]], None] | None = None,
    deadline_s: float = 300.0,
) -> DemoResult:
    """Build everything, run the tasks to the end, and check the outcome."""
    root = root or Path(tempfile.mkdtemp(prefix="orch-demo-"))
    started = time.time()
    settings, engine, repo, server, keys = setup(root)
    try:
        work(settings, engine, started, on_tick=on_tick, deadline_s=deadline_s)
        return check(settings, engine, repo, keys, started)
    finally:
        server.close()
        engine.dispose()


def work(
    settings: Settings,
    engine: sa.Engine,
    started: float,
    *,
    on_tick: Callable[[list[dict[str, object]]], None] | None = None,
    deadline_s: float = 300.0,
) -> None:
    """Run a worker until nothing can move, or ``deadline_s`` after ``started``; show the
    board on each turn."""
    worker = Worker(settings, engine, name="demo")
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True}, daemon=True)
    thread.start()
    while thread.is_alive():
        if on_tick is not None:
            on_tick(snapshot(engine))
        if time.time() - started > deadline_s:
            worker.stop()
            break
        thread.join(0.2)
    thread.join()
    if on_tick is not None:
        on_tick(snapshot(engine))


def remove(root: Path) -> None:
    """Delete the demo's folder."""
    shutil.rmtree(root, ignore_errors=True)
