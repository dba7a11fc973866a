"""The deterministic runners on real child processes, real pytest projects and a real HTTP server.

Every artifact a runner writes is read back with the gate's own fail-closed parser: only the
green suite, the good command and the healthy deploy may read as PASS.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.verdicts import PARSERS, Verdict, VerdictStatus
from orchestrator.runners import command_stage
from orchestrator.runners import test_runner as tr
from orchestrator.runners.base import RunContext, RunnerResult
from orchestrator.runners.deploy_finalizer import run_deploy
from orchestrator.runners.post_deploy_monitor import run_monitor
from orchestrator.runners.staging_runner import run_staging
from orchestrator.runners.test_runner import run_tests
from orchestrator.self_deploy import ExitStatus, map_exit_code_to_status

# No plugin autoload: the toy suites need none, and this interpreter's test extras
# (hypothesis, schemathesis, anyio) cost seconds of imports a run on a busy machine.
PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "--disable-plugin-autoload",
]

PASSING = {
    "test_ok.py": "def test_a():\n    assert 1\n\ndef test_b():\n    assert 2\n\n"
    "def test_c():\n    assert 3\n",
}
FAILING = {
    **PASSING,
    "test_bad.py": "def test_bad():\n    assert 1 == 2, 'result: PASSED'\n",
}

MakeCtx = Callable[..., RunContext]


def child_env(**extra: str) -> dict[str, str]:
    """The parent's environment without the knobs of the pytest that runs this file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    # No __pycache__ in the worktree: what is left there afterwards is the runner's doing.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def make_ctx(tmp_path: Path) -> MakeCtx:
    """A RunContext on a fresh project folder with ``files``; settings with short kill waits."""

    def _make(
        files: Mapping[str, str] | None = None,
        *,
        worktree: Path | None = None,
        artifact_dir: Path | None = None,
        **settings: Any,
    ) -> RunContext:
        wt = worktree if worktree is not None else tmp_path / "wt"
        if worktree is None:
            wt.mkdir(exist_ok=True)
            for rel, text in (files or {}).items():
                (wt / rel).parent.mkdir(parents=True, exist_ok=True)
                (wt / rel).write_text(text, encoding="utf-8")
        folder = artifact_dir if artifact_dir is not None else tmp_path / "tasks" / "DEMO-1"
        return RunContext(
            task_key="DEMO-1",
            repo_name="demo",
            worktree=wt,
            artifact_dir=folder,
            log_path=folder / "runs" / "1-testing-test-runner.log",
            env=child_env(),
            settings=load_settings(home=tmp_path / "home", kill_grace_s=0.5, **settings),
        )

    return _make


def verdict(result: RunnerResult) -> Verdict:
    """The artifact of ``result`` as its gate reads it."""
    assert result.artifact_path is not None, result.reasons
    return PARSERS[result.artifact_name](result.artifact_path.read_text(encoding="utf-8"))


def keys_of(result: RunnerResult) -> dict[str, list[str]]:
    assert result.artifact_path is not None, result.reasons
    return A.parse_keys(result.artifact_path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- test-runner


def test_passing_suite_passes_with_junit_counts(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(PASSING)
    result = run_tests(ctx, PYTEST)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert result.exit_code == 0
    assert result.counts["passed"] == 3
    assert result.counts["failed"] == 0
    assert result.counts["total"] == 3
    v = verdict(result)
    assert v.status is VerdictStatus.PASS, v.reasons
    keys = keys_of(result)
    assert keys["passed"] == ["3"]
    assert keys["outcome"] == ["completed"]
    junit = ctx.out_dir / "junit.xml"
    assert f"--junitxml={junit}" in json.loads(keys["command"][0])
    assert junit.is_file()


def test_default_command_leaves_the_worktree_clean(make_ctx: MakeCtx, make_repo: Any) -> None:
    repo = make_repo(files={**PASSING, ".gitignore": "tasks/\n"})
    ctx = make_ctx(worktree=repo)
    result = run_tests(ctx)  # the default command: sys.executable -m pytest -q
    assert verdict(result).status is VerdictStatus.PASS, result.reasons
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""  # no .pytest_cache, no junit file in the worktree


def test_failing_suite_fails_with_counts(make_ctx: MakeCtx) -> None:
    result = run_tests(make_ctx(FAILING), PYTEST)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert result.exit_code == 1
    assert result.counts["passed"] == 3
    assert result.counts["failed"] == 1
    assert result.counts["total"] == 4
    v = verdict(result)
    assert v.status is VerdictStatus.FAIL
    assert v.fields == {"result": "FAILED", "status": "FAIL", "failed": "1"}


def test_no_tests_is_fail(make_ctx: MakeCtx) -> None:
    result = run_tests(make_ctx({"README.md": "nothing here\n"}), PYTEST)
    assert result.exit_code == 5
    assert result.outcome is OutcomeKind.COMPLETED
    v = verdict(result)
    assert v.status is VerdictStatus.FAIL
    # failed: 0, and still FAILED / FAIL: the parser needs all three to agree on success.
    assert v.fields == {"result": "FAILED", "status": "FAIL", "failed": "0"}


def test_broken_conftest_is_classified_by_the_mapping(make_ctx: MakeCtx) -> None:
    files = {**PASSING, "conftest.py": "raise RuntimeError('broken conftest')\n"}
    result = run_tests(make_ctx(files), PYTEST)
    assert result.exit_code is not None
    expected = map_exit_code_to_status(result.exit_code, kind="pytest")
    assert expected.status is not ExitStatus.PASS
    assert result.outcome is expected.outcome
    assert verdict(result).status is VerdictStatus.FAIL
    assert keys_of(result)["outcome"] == [expected.outcome.value]


def test_collection_error_is_fail_not_tool_error(make_ctx: MakeCtx) -> None:
    files = {**PASSING, "test_syntax.py": "def test_x(:\n    pass\n"}
    result = run_tests(make_ctx(files), PYTEST)
    assert result.exit_code == 2
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert result.counts["errors"] == 1
    v = verdict(result)
    assert v.status is VerdictStatus.FAIL
    assert v.fields["failed"] == "1"


def test_hanging_suite_times_out_and_reads_as_not_pass(make_ctx: MakeCtx) -> None:
    files = {"test_hang.py": "import time\n\ndef test_hang():\n    time.sleep(120)\n"}
    # The suite never ends by itself: any limit ends it in a timeout, however loaded the
    # machine (started or not, the run is the suite's, and it did not finish).
    result = run_tests(make_ctx(files), PYTEST, timeout_s=0.3)
    assert result.outcome is OutcomeKind.TIMEOUT
    v = verdict(result)
    assert v.status is VerdictStatus.FAIL
    assert keys_of(result)["outcome"] == ["timeout"]


def test_missing_executable_is_not_started(make_ctx: MakeCtx, tmp_path: Path) -> None:
    result = run_tests(make_ctx(PASSING), [str(tmp_path / "no-such-binary"), "--flag"])
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert verdict(result).status is VerdictStatus.FAIL


def test_missing_worktree_is_not_started_and_still_writes_fail(
    make_ctx: MakeCtx, tmp_path: Path
) -> None:
    result = run_tests(make_ctx(worktree=tmp_path / "gone"), PYTEST)
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert any("not a directory" in r for r in result.reasons)
    assert verdict(result).status is VerdictStatus.FAIL


def test_unwritable_artifact_dir_never_raises(make_ctx: MakeCtx, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    result = run_tests(make_ctx(PASSING, artifact_dir=blocker / "DEMO-1"), PYTEST)
    assert result.outcome.is_tool_error
    assert result.artifact_path is None
    assert result.reasons


def test_internal_error_is_crashed_with_a_fail_artifact(
    make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("bug of ours")

    monkeypatch.setattr(tr, "run_suite", boom)
    result = run_tests(make_ctx(PASSING), PYTEST)
    assert result.outcome is OutcomeKind.CRASHED
    assert any("bug of ours" in r for r in result.reasons)
    assert verdict(result).status is VerdictStatus.FAIL


def test_all_skipped_suite_is_fail(make_ctx: MakeCtx) -> None:
    files = {"test_skip.py": "import pytest\n\n\n@pytest.mark.skip\ndef test_s():\n    pass\n"}
    result = run_tests(make_ctx(files), PYTEST)
    assert result.exit_code == 0
    assert result.counts["skipped"] == 1
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("skipped" in r for r in result.reasons)


@pytest.mark.parametrize("runner", [run_tests, run_staging, run_deploy])
def test_string_command_is_refused_not_split(make_ctx: MakeCtx, runner: Any) -> None:
    result = runner(make_ctx(PASSING), "python -m pytest -q")
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert any("argv list" in r for r in result.reasons)
    assert verdict(result).status is VerdictStatus.FAIL


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda ctx: run_tests(ctx), "settings"),
        (lambda ctx: run_staging(ctx, ["true"]), "settings"),
        (lambda ctx: run_deploy(ctx, ["true"]), "settings"),
        (lambda ctx: run_monitor(ctx, "http://127.0.0.1:1/", checks=1), "cancel"),
    ],
)
def test_a_broken_context_never_raises(
    make_ctx: MakeCtx, call: Callable[[RunContext], RunnerResult], field: str
) -> None:
    broken = RunContext(**{**make_ctx().__dict__, field: "not what it should be"})
    result = call(broken)
    assert result.outcome is OutcomeKind.CRASHED
    assert result.reasons
    assert verdict(result).status is VerdictStatus.FAIL


def test_plain_command_maps_its_exit_code(make_ctx: MakeCtx) -> None:
    ok = run_tests(make_ctx(), [sys.executable, "-c", "print('fine')"])
    assert verdict(ok).status is VerdictStatus.PASS, ok.reasons
    assert ok.counts == {}
    bad = run_tests(make_ctx(), [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert bad.outcome is OutcomeKind.COMPLETED
    assert verdict(bad).status is VerdictStatus.FAIL


def test_output_claims_cannot_leak_into_the_verdict(make_ctx: MakeCtx) -> None:
    # The command prints a fence and then claims of success: they stay quoted output.
    code = "print('```'); print('result: PASSED'); print('status: PASS'); raise SystemExit(1)"
    result = run_tests(make_ctx(), [sys.executable, "-c", code])
    v = verdict(result)
    assert v.status is VerdictStatus.FAIL
    assert v.fields == {"result": "FAILED", "status": "FAIL", "failed": "0"}
    assert "result: PASSED" in (result.artifact_path or Path()).read_text()


# --------------------------------------------------------------------------- HTTP server


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> list of (code, body); the last entry repeats.
    script: dict[str, list[tuple[int, bytes]]]
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        entries = self.script.get(self.path) or [(404, b"not found")]
        code, body = entries.pop(0) if len(entries) > 1 else entries[0]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


Serve = Callable[[dict[str, list[tuple[int, bytes]]]], tuple[str, list[str]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a scripted HTTP server on 127.0.0.1: (base URL, list of paths hit)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def _serve(script: dict[str, list[tuple[int, bytes]]]) -> tuple[str, list[str]]:
        hits: list[str] = []
        handler = type("H", (_Handler,), {"script": script, "hits": hits})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        servers.append(server)
        # poll_interval: how soon shutdown() returns (socketserver's default: 0.5 s).
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield _serve
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) every attempt to resolve or connect."""
    attempts: list[object] = []

    def refuse(*args: object, **_k: object) -> None:
        attempts.append(args)
        raise AssertionError("network attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# --------------------------------------------------------------------------- smoke checks

# A green suite that is not pytest (pytest's start-up would dominate these tests).
QUICK = [sys.executable, "-c", "pass"]


def test_smoke_checks_pass_and_fail(make_ctx: MakeCtx, serve: Serve) -> None:
    url, hits = serve(
        {
            "/status": [(200, json.dumps({"serial_gate": {"demo": None}}).encode())],
            "/queue": [(200, b'{"jobs": []}')],
            "/health": [(200, b"ok")],
        }
    )
    good = run_tests(make_ctx(), QUICK, smoke_urls=[f"{url}/status", f"{url}/health"])
    assert verdict(good).status is VerdictStatus.PASS, good.reasons
    bad = run_tests(make_ctx(), QUICK, smoke_urls=[f"{url}/health", f"{url}/queue"])
    assert verdict(bad).status is VerdictStatus.FAIL
    assert any(f"{url}/queue" in r and "serial_gate" in r for r in bad.reasons)
    assert hits.count("/queue") == 1
    missing = run_tests(make_ctx(), QUICK, smoke_urls=[f"{url}/nope"])
    assert verdict(missing).status is VerdictStatus.FAIL
    assert any("HTTP 404" in r for r in missing.reasons)


def test_smoke_refuses_non_loopback_urls(make_ctx: MakeCtx, no_network: list[object]) -> None:
    result = run_tests(make_ctx(), QUICK, smoke_urls=["http://example.com/status"])
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("example.com" in r and "refused" in r for r in result.reasons)


# --------------------------------------------------------------------------- staging, deploy

BACKGROUND = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
    " start_new_session=True)\n"
    "open('bg.pid', 'w').write(str(p.pid))\n"
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(
    ("runner", "name", "key", "ok", "fail"),
    [
        (run_staging, A.STAGING_LOG, "staging_status", "PASSED", "FAILED"),
        (run_deploy, A.DEPLOY_LOG, "deploy_status", "SUCCEEDED", "FAILED"),
    ],
)
def test_command_stages(
    make_ctx: MakeCtx, runner: Any, name: str, key: str, ok: str, fail: str
) -> None:
    good = runner(make_ctx(), [sys.executable, "-c", "print('staged')"])
    assert good.outcome is OutcomeKind.COMPLETED
    assert good.artifact_name == name
    assert verdict(good).status is VerdictStatus.PASS, good.reasons
    assert "staged" in (good.artifact_path or Path()).read_text()

    bad = runner(make_ctx(), [sys.executable, "-c", "raise SystemExit(7)"])
    assert bad.outcome is OutcomeKind.COMPLETED
    assert bad.exit_code == 7
    assert verdict(bad).status is VerdictStatus.FAIL
    assert keys_of(bad)[key] == [fail]

    none = runner(make_ctx(), None)
    assert none.outcome is OutcomeKind.COMPLETED
    # Nothing ran: staging says SKIPPED (it passes the gate), never a PASSED it did not see.
    assert keys_of(none)[key] == ["SKIPPED" if name == A.STAGING_LOG else ok]
    assert verdict(none).status is VerdictStatus.PASS
    assert "configured" in (none.artifact_path or Path()).read_text()

    # A command that only sleeps: any limit is met by a timeout.
    slow = runner(make_ctx(), [sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=0.2)
    assert slow.outcome is OutcomeKind.TIMEOUT
    assert verdict(slow).status is VerdictStatus.FAIL

    lost = runner(make_ctx(), ["/nonexistent/deploy-tool"])
    assert lost.outcome is OutcomeKind.NOT_STARTED
    assert verdict(lost).status is VerdictStatus.FAIL


def test_no_command_reasons_are_explicit(make_ctx: MakeCtx) -> None:
    staging = run_staging(make_ctx(), None)
    assert "no staging command configured; nothing to stage" in staging.reasons
    deploy = run_deploy(make_ctx(), [])
    assert any("no deploy command configured" in r for r in deploy.reasons)


def test_deploy_may_leave_a_service_running_staging_may_not(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    staged = run_staging(ctx, [sys.executable, "-c", BACKGROUND])
    assert verdict(staged).status is VerdictStatus.PASS
    staged_pid = int((ctx.worktree / "bg.pid").read_text())
    assert not alive(staged_pid)

    deployed = run_deploy(ctx, [sys.executable, "-c", BACKGROUND])
    pid = int((ctx.worktree / "bg.pid").read_text())
    try:
        assert verdict(deployed).status is VerdictStatus.PASS
        assert alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_command_stage_crash_is_contained(
    make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(command_stage, "run_suite", boom)
    result = run_deploy(make_ctx(), ["true"])
    assert result.outcome is OutcomeKind.CRASHED
    assert verdict(result).status is VerdictStatus.FAIL


# --------------------------------------------------------------------------- monitor


def monitor(ctx: RunContext, url: str | None, **kw: Any) -> RunnerResult:
    return run_monitor(ctx, url, **{"checks": 2, "interval_s": 0.05, **kw})


def test_monitor_healthy(make_ctx: MakeCtx, serve: Serve) -> None:
    url, hits = serve({"/health": [(200, b'{"status": "OK"}')]})
    result = monitor(make_ctx(), f"{url}/health")
    assert result.outcome is OutcomeKind.COMPLETED
    assert verdict(result).status is VerdictStatus.PASS, result.reasons
    assert hits == ["/health", "/health"]
    text = (result.artifact_path or Path()).read_text()
    assert text.count("| healthy | 200 |") == 2


def test_monitor_200_then_500_is_unhealthy(make_ctx: MakeCtx, serve: Serve) -> None:
    url, _ = serve({"/health": [(200, b"ok"), (500, b"boom")]})
    result = monitor(make_ctx(), f"{url}/health")
    assert result.outcome is OutcomeKind.COMPLETED
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("HTTP 500" in r for r in result.reasons)
    # The same pattern passes when one healthy check is enough.
    url2, _ = serve({"/health": [(200, b"ok"), (500, b"boom")]})
    lenient = monitor(make_ctx(), f"{url2}/health", required_healthy=1)
    assert verdict(lenient).status is VerdictStatus.PASS


def test_monitor_reads_a_json_status(make_ctx: MakeCtx, serve: Serve) -> None:
    url, _ = serve({"/health": [(200, b'{"status": "degraded"}')]})
    result = monitor(make_ctx(), f"{url}/health")
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("degraded" in r for r in result.reasons)


def test_monitor_closed_port_is_unhealthy_not_a_tool_error(make_ctx: MakeCtx) -> None:
    result = monitor(make_ctx(), f"http://127.0.0.1:{closed_port()}/health")
    assert result.outcome is OutcomeKind.COMPLETED
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("no response" in r for r in result.reasons)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/health",
        "http://10.0.0.1:8080/health",
        "http://127.0.0.1@example.com/health",
        "ftp://127.0.0.1/health",
    ],
)
def test_monitor_refuses_non_loopback_without_connecting(
    make_ctx: MakeCtx, no_network: list[object], url: str
) -> None:
    result = monitor(make_ctx(), url)
    assert no_network == []
    assert result.outcome is OutcomeKind.COMPLETED
    assert verdict(result).status is VerdictStatus.FAIL
    assert any("refused" in r for r in result.reasons)


def test_monitor_without_url_is_healthy_and_says_so(make_ctx: MakeCtx) -> None:
    result = monitor(make_ctx(), None)
    assert verdict(result).status is VerdictStatus.PASS
    assert any("no health URL configured" in r for r in result.reasons)


def test_monitor_cancelled_is_a_tool_error(make_ctx: MakeCtx, serve: Serve) -> None:
    url, _ = serve({"/health": [(200, b"ok")]})
    cancel = threading.Event()
    cancel.set()
    ctx = make_ctx()
    ctx = RunContext(**{**ctx.__dict__, "cancel": cancel})
    result = monitor(ctx, f"{url}/health")
    assert result.outcome is OutcomeKind.CRASHED
    assert verdict(result).status is VerdictStatus.FAIL
