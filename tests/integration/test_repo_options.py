"""Per-repo options set from the CLI, and each taking effect where it is read.

``--smoke-url`` (the test-runner's read-only checks after the suite), ``--regression-marker``
(symbols the merge gate keeps on main) and ``--keep-branches``: validated when given,
stored in ``repo.options``, shown by ``orch repo show``, and used by the engine.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from merge_helpers import CALC, MergeBed
from typer.testing import CliRunner

from orchestrator import repo_ops, task_ops
from orchestrator.cli import app
from orchestrator.config import load_settings
from orchestrator.domain import artifacts as A
from orchestrator.engine.worker import Worker
from orchestrator.errors import UsageError
from orchestrator.gates.markers import parse_markers
from orchestrator.store import queries
from orchestrator.store.bootstrap import open_engine

MakeRepo = Callable[..., Path]
Orch = Callable[..., Any]
SEED_MARKER = {
    "task": "ORCH-110",
    "symbol": "classify_retest_failure",
    "path": "src/orchestrator/gates/merge_gate.py",
}


@pytest.fixture
def orch(tmp_path: Path, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Orch:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def call(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return call


# --------------------------------------------------------------------------- smoke URLs


def test_smoke_urls_are_set_shown_replaced_and_cleared(orch: Orch, make_repo: MakeRepo) -> None:
    repo = make_repo()
    data = orch(
        "repo",
        "add",
        "demo",
        str(repo),
        "--smoke-url",
        "http://127.0.0.1:8080/health",
        "--smoke-url",
        "http://[::1]:8080/status",
        "--json",
    )
    assert data["smoke_urls"] == ["http://127.0.0.1:8080/health", "http://[::1]:8080/status"]
    shown = orch("repo", "show", "demo").output
    assert "http://127.0.0.1:8080/health" in shown
    assert "smoke_urls" in shown
    data = orch("repo", "set", "demo", "--smoke-url", "http://localhost:9/queue", "--json")
    assert data["smoke_urls"] == ["http://localhost:9/queue"]
    data = orch("repo", "set", "demo", "--smoke-url", "", "--json")
    assert data["smoke_urls"] == []
    assert orch("repo", "show", "demo", "--json")["smoke_urls"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/health",
        "http://10.0.0.1/status",
        "https://127.0.0.1/health",  # the smoke check speaks plain http only
        "ftp://127.0.0.1/x",
        "http://[::1",
    ],
)
def test_a_smoke_url_off_loopback_is_refused_and_nothing_written(
    orch: Orch, make_repo: MakeRepo, url: str
) -> None:
    repo = make_repo()
    result = orch("repo", "add", "demo", str(repo), "--smoke-url", url, code=2)
    assert "--smoke-url" in result.output
    assert orch("repo", "list", "--json") == []
    orch("repo", "add", "demo", str(repo), "--smoke-url", "http://127.0.0.1:1/health")
    orch("repo", "set", "demo", "--smoke-url", url, code=2)
    assert orch("repo", "show", "demo", "--json")["smoke_urls"] == ["http://127.0.0.1:1/health"]


Routes = dict[str, tuple[int, bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Routes], tuple[str, list[str]]]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(routes: Routes) -> tuple[str, list[str]]:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                code, body = routes.get(self.path, (404, b"no"))
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        # poll_interval: how soon shutdown() returns (socketserver's default: 0.5 s).
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _run_testing(tmp_path: Path, db_url: str, repo: Path, urls: list[str]) -> tuple[Any, str]:
    """A task through development (a patch) and the real test-runner with ``urls``."""
    settings = load_settings(
        home=tmp_path / "home",
        database_url=db_url,
        developer_retry_budget=0,
        kill_grace_s=0.5,
        poll_interval_s=0.2,
        heartbeat_interval_s=0.5,
    )
    engine = open_engine(settings)
    try:
        ok = f"{sys.executable} -c pass"
        repo_ops.add_repo(
            engine,
            "demo",
            repo,
            repo_ops.RepoInput(
                stages=["development", "testing", "deploy-staging"],
                agents=["development=patch"],
                test_cmd=ok,
                staging_cmd=ok,
            ),
        )
        # Stored the way `orch repo set --smoke-url` stores them; what is tested here is
        # that the engine hands them to the test-runner.
        repo_ops.set_repo_options(engine, "demo", {"smoke_urls": urls})
        patch = (
            b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
            b"@@ -1 +1,2 @@\n demo\n+hello\n"
        )
        key = task_ops.add_task(engine, settings, "demo", "T", "body", patch).task.key
        Worker(settings, engine).run(until_idle=True)
        with engine.connect() as conn:
            task = queries.get_task(conn, key)
        report = (settings.tasks_dir / key / A.TEST_REPORT).read_text(encoding="utf-8")
        return task, report
    finally:
        engine.dispose()


def test_the_test_stage_runs_the_repos_smoke_urls(
    tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo, serve: Callable[[Routes], Any]
) -> None:
    url, hits = serve(
        {"/health": (200, b"ok"), "/status": (200, json.dumps({"serial_gate": {}}).encode())}
    )
    repo = make_repo(files={"README.md": "demo\n"})

    task, report = _run_testing(tmp_path, migrated_db_url, repo, [f"{url}/health", f"{url}/status"])

    assert task.state == "done", task.reasons
    assert sorted(hits) == ["/health", "/status"]
    assert "## Smoke checks" in report
    assert f"| {url}/status | ok |" in report


def test_a_failing_smoke_url_fails_the_test_stage(
    tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo, serve: Callable[[Routes], Any]
) -> None:
    url, hits = serve({"/health": (200, b"ok"), "/queue": (200, b'{"jobs": []}')})
    repo = make_repo(files={"README.md": "demo\n"})

    task, report = _run_testing(tmp_path, migrated_db_url, repo, [f"{url}/health", f"{url}/queue"])

    # The suite passed, the smoke check did not: a rollback, with no developer retry left.
    assert (task.stage, task.state) == ("testing", "blocked"), task.reasons
    assert "testing: FAIL" in task.reasons
    assert "developer retry budget spent (0)" in task.reasons
    assert hits == ["/health", "/queue"]
    assert "result: FAILED" in report
    assert f"smoke check failed: {url}/queue" in report
    assert "serial_gate" in report


# --------------------------------------------------------------------------- markers


def test_markers_are_set_validated_shown_and_cleared(orch: Orch, make_repo: MakeRepo) -> None:
    repo = make_repo()
    orch("repo", "add", "demo", str(repo))
    assert orch("repo", "show", "demo", "--json")["regression_markers"] == []
    data = orch(
        "repo",
        "set",
        "demo",
        "--regression-marker",
        "DEMO-1:def keep_me:calc.py",
        "--regression-marker",
        "GH-7:Foo::bar:src/a b.cc",  # the symbol may hold ':', the path may not
        "--json",
    )
    expected = [
        {"task": "DEMO-1", "symbol": "def keep_me", "path": "calc.py"},
        {"task": "GH-7", "symbol": "Foo::bar", "path": "src/a b.cc"},
    ]
    assert data["regression_markers"] == expected
    # What the merge gate reads, without a complaint.
    markers, problems = parse_markers({"regression_markers": data["regression_markers"]})
    assert (len(markers), problems) == (2, [])
    shown = orch("repo", "show", "demo").output
    assert "DEMO-1:def keep_me:calc.py" in shown
    for bad in (
        "calc.py",
        "DEMO-1::calc.py",
        ":x:calc.py",
        "DEMO-1:x:",
        "DEMO-1:x:/etc/passwd",
        "DEMO-1:x:../up.py",
        "DEMO 1:x:calc.py",
    ):
        result = orch("repo", "set", "demo", "--regression-marker", bad, code=2)
        assert "--regression-marker" in result.output, bad
    assert orch("repo", "show", "demo", "--json")["regression_markers"] == expected
    assert (
        orch("repo", "set", "demo", "--regression-marker", "", "--json")["regression_markers"] == []
    )


def test_a_marker_set_with_the_cli_turns_a_dropping_merge_red(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo, orch: Orch
) -> None:
    bed = MergeBed(tmp_path, engine, make_repo)
    orch("repo", "set", "demo", "--regression-marker", "DEMO-0:def keep_me:calc.py")
    task = bed.add_task()
    old_main = bed.main_sha()
    bed.develop(task, {"calc.py": CALC.replace("def keep_me", "def renamed")}, "rename")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "RED", verdict.reasons
    assert any("regression marker DEMO-0: 'def keep_me' in calc.py" in r for r in verdict.reasons)
    assert bed.main_sha() == old_main


def test_the_self_hosting_repo_carries_the_seed_marker(orch: Orch, make_repo: MakeRepo) -> None:
    data = orch("repo", "add", "orch", str(make_repo()), "--self-hosting", "--json")
    assert data["regression_markers"] == [SEED_MARKER]
    # Markers the user gives replace the default; an empty value means none at all.
    given = orch(
        "repo",
        "add",
        "other",
        str(make_repo()),
        "--self-hosting",
        "--regression-marker",
        "X-1:y:z.py",
        "--json",
    )
    assert given["regression_markers"] == [{"task": "X-1", "symbol": "y", "path": "z.py"}]
    none = orch(
        "repo",
        "add",
        "bare",
        str(make_repo()),
        "--self-hosting",
        "--regression-marker",
        "",
        "--json",
    )
    assert none["regression_markers"] == []
    # Made self-hosting later: the default arrives, unless markers were chosen already.
    plain = orch("repo", "add", "late", str(make_repo()), "--json")
    assert plain["regression_markers"] == []
    late = orch("repo", "set", "late", "--self-hosting", "--json")
    assert late["regression_markers"] == [SEED_MARKER]
    assert orch("repo", "set", "bare", "--self-hosting", "--json")["regression_markers"] == []
    assert orch("repo", "add", "std", str(make_repo()), "--json")["regression_markers"] == []


# --------------------------------------------------------------------------- keep branches


def test_keep_branches_is_a_repo_setting(orch: Orch, make_repo: MakeRepo) -> None:
    assert orch("repo", "add", "demo", str(make_repo()), "--json")["keep_branches"] is False
    assert orch("repo", "set", "demo", "--keep-branches", "--json")["keep_branches"] is True
    assert "keep_branches" in orch("repo", "show", "demo").output
    assert orch("repo", "set", "demo", "--no-keep-branches", "--json")["keep_branches"] is False
    kept = orch("repo", "add", "kept", str(make_repo()), "--keep-branches", "--json")
    assert kept["keep_branches"] is True


def test_set_repo_options_refuses_malformed_known_options(
    engine: sa.Engine, make_repo: MakeRepo
) -> None:
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput())
    for options in (
        {"smoke_urls": ["http://example.com/"]},
        {"smoke_urls": "http://127.0.0.1/health"},
        {"regression_markers": [{"task": "X"}]},
        {"keep_branches": "yes"},
    ):
        with pytest.raises(UsageError):
            repo_ops.set_repo_options(engine, "demo", options)
    repo_ops.set_repo_options(engine, "demo", {"monitor": {"checks": 2}})
