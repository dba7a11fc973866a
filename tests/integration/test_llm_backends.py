"""The LLM backends against the REAL coding-agent CLIs and a fake model server on 127.0.0.1.

``claude`` (Claude Code) and ``codex`` (Codex CLI) are the pinned npm packages that
``scripts/install-agent-clis.sh`` installs into ``.agent-clis/`` (or the directory named by
``ORCH_TEST_AGENT_CLI_DIR``); the tests skip with that instruction when they are missing.
aider is the pinned one the same script puts in a venv of its own (``.agent-clis/aider``),
or the one ``ORCH_TEST_AIDER_COMMAND`` names.

Each test drives ``agents.backends.run_llm_backend`` as the engine does, on a real git repo,
a real task folder and a real SQLite store, with the fake server scripted to make the agent
write a file and the artifact, fail with an API error, run out of turns, be denied a tool,
or hang. The CLIs reach the fake server through the repo's ``--agent-env`` names
(``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL`` ...), as a user would configure them. Every
other address is made unreachable: a proxy on a closed loopback port for anything that is
not 127.0.0.1, and the CLIs' own telemetry switched off.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fake_model_server as F
import pytest
import sqlalchemy as sa

from orchestrator import repo_ops, task_ops, taskdir
from orchestrator.agents import backends as agent_backends
from orchestrator.agents.backends import run_llm_backend
from orchestrator.agents.codex import codex_cost_usd
from orchestrator.agents.stall import MODEL_HANG, StallDetector
from orchestrator.config import Settings, load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.faults import FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage
from orchestrator.domain.verdicts import VerdictStatus, parse_artifact
from orchestrator.gates.context import GateContext
from orchestrator.gates.registry import run_gates
from orchestrator.gitops import commits, worktrees
from orchestrator.jobcontract import JobContext, JobResult
from orchestrator.store import alert_rows, queries, spend
from orchestrator.store.bootstrap import open_engine

ROOT = Path(__file__).resolve().parents[2]
CLI_DIR_ENV = "ORCH_TEST_AGENT_CLI_DIR"
AIDER_ENV = "ORCH_TEST_AIDER_COMMAND"
INSTALL_HINT = "run scripts/install-agent-clis.sh (or set ORCH_TEST_AGENT_CLI_DIR)"
# A loopback port nothing listens on: any request that tries to leave the machine through
# the proxy fails at once instead of reaching the internet.
DEAD_PROXY = "http://127.0.0.1:9"
TEST_KEY = "sk-orch-test-not-a-real-key"
# The stall timeout of the tests where claude or codex must stall (a hang of the model, a
# silent tool), counted from the CLI's first request (``stall_clock_from_first_request``).
# Before that request claude is silent some 1.2-1.5 s on an idle machine (it runs git a few
# times: nothing in its log, no file changed; measured with claude 2.1.330), longer on a
# loaded one, so a window counted from its start fired in its start-up now and then, before
# the hang it was meant to catch. From its first request on, each CLI shows activity (output,
# a model answer) within about 0.2 s while it works, so 1.5 s is spent waiting out the hang,
# also on a loaded machine. Not aider's: it is silent about 3 s at its start (importing
# litellm), see its hang test.
HANG_STALL_TIMEOUT_S = 1.5


def stall_clock_from_first_request(
    monkeypatch: pytest.MonkeyPatch, server: F.FakeModelServer
) -> None:
    """Give the job's stall detector a clock that stands still until ``server`` takes the
    CLI's first scripted request, then runs as ``time.monotonic`` does: the detector is the
    engine's, on real time, but the CLI's silent start-up is not part of the stall window."""
    started: list[float] = []

    def clock() -> float:
        if not started:
            if server.turns_taken == 0:
                return 0.0
            started.append(time.monotonic())
        return time.monotonic() - started[0]

    detector = functools.partial(StallDetector, clock=clock)
    monkeypatch.setattr(agent_backends, "StallDetector", detector)


def cli(name: str) -> Path:
    """The pinned CLI binary, or a skip that says how to install it."""
    base = Path(os.environ.get(CLI_DIR_ENV) or ROOT / ".agent-clis" / "node_modules" / ".bin")
    path = base / name
    if not path.exists():
        # CI installs the pinned CLIs and sets this, so a missing one fails there instead of
        # hiding behind a skip.
        if os.environ.get("ORCH_TEST_REQUIRE_AGENT_CLIS"):
            pytest.fail(f"{name} CLI not installed at {path}: {INSTALL_HINT}")
        pytest.skip(f"{name} CLI not installed at {path}: {INSTALL_HINT}")
    return path


def aider_command() -> str:
    """aider: ``ORCH_TEST_AIDER_COMMAND``, the pinned one the install script puts in
    ``.agent-clis/aider``, or one on PATH; else a skip (a failure where CI requires it)."""
    pinned = ROOT / ".agent-clis" / "aider" / "bin" / "aider"
    named = os.environ.get(AIDER_ENV) or (str(pinned) if pinned.exists() else None)
    named = named or shutil.which("aider")
    if not named:
        if os.environ.get("ORCH_TEST_REQUIRE_AGENT_CLIS"):
            pytest.fail(f"aider not installed at {pinned}: {INSTALL_HINT}")
        pytest.skip(f"aider is not installed: {INSTALL_HINT} (or set {AIDER_ENV})")
    return named


@dataclass
class Job:
    """A filed task's first job, ready to run as the engine would."""

    settings: Settings
    engine: sa.Engine
    repo: Any
    task: Any
    job: Any
    folder: Path
    worktree: Path

    def context(self, previous_failure: str | None = None) -> JobContext:
        log_path = taskdir.run_log_path(self.folder, self.job.id, self.job.stage, self.job.agent)
        if self.job.started_at is None:
            # As a claim would: the start time makes the job's process marker unique. Without
            # it every test's first job is `orch-job-1-1-0`, and one test's sweep of its own
            # marked processes SIGKILLs another test's CLI running at the same time.
            self.job = dataclasses.replace(self.job, started_at=time.time())
        return JobContext(
            self.job,
            self.task,
            self.repo,
            self.settings,
            self.folder,
            log_path,
            threading.Event(),
            None,
            previous_failure,
        )

    def run(
        self, backend: str, role: str = "developer", stage: Stage = Stage.DEVELOPMENT
    ) -> JobResult:
        return run_llm_backend(self.context(), backend, role, stage, self.worktree)

    @property
    def log_text(self) -> str:
        return self.context().log_path.read_text(errors="replace")

    def artifact(self, name: str) -> str | None:
        return taskdir.read_artifact(self.folder, name)

    @property
    def out(self) -> Path:
        """The job's own output folder: where the agent writes its artifact (the
        orchestrator moves it into the task folder after the run)."""
        return self.folder / "runs" / f"{self.job.id}-out"


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator's own environment: a secret it must not pass on, and a dead proxy."""
    monkeypatch.setenv("ORCH_API_TOKEN", "orch-secret-must-not-leak")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


PASS_ENV = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
]


@pytest.fixture
def make_job(
    tmp_path: Path, migrated_db_url: str, make_repo: Any, offline_env: None
) -> Iterator[Any]:
    engines: list[sa.Engine] = []

    def _make(agent_env: list[str], agents: tuple[str, ...] = (), **overrides: Any) -> Job:
        values: dict[str, Any] = dict(
            home=tmp_path / "home",
            database_url=migrated_db_url,
            agent_timeout_s=120,
            # Generous: a CLI starting on a loaded machine shows no activity for a while. The
            # hang tests set a short one, and only they may stall.
            agent_stall_timeout_s=60,
            kill_grace_s=1,
            claude_max_retries=0,
            codex_max_retries=0,
        )
        values.update(overrides)
        settings = load_settings(**values)
        engine = open_engine(settings)
        engines.append(engine)
        repo_path = make_repo(files={"README.md": "# demo\n", "app.py": "print('hi')\n"})
        repo = repo_ops.add_repo(
            engine,
            "demo",
            repo_path,
            repo_ops.RepoInput(agent_env=[*agent_env, *PASS_ENV], prefix="DEMO", agents=agents),
        )
        new = task_ops.add_task(engine, settings, "demo", "Add hello.txt", "Create hello.txt.")
        with engine.connect() as conn:
            job = queries.list_jobs(conn, task_id=new.task.id)[0]
        wt = worktrees.ensure_worktree(
            repo_path, repo.main_branch, settings.worktrees_dir, repo.name, new.task.key
        )
        assert wt.path is not None, wt.error
        return Job(settings, engine, repo, new.task, job, new.folder, wt.path)

    yield _make
    for engine in engines:
        engine.dispose()


def dev_report(status: str = "DONE") -> str:
    return A.render_artifact(A.DEV_REPORT, {"dev_status": status}, "scripted by the fake model")


# ------------------------------------------------------------------------------- claude


@pytest.fixture
def claude_job(make_job: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    binary = cli("claude")
    servers: list[F.FakeModelServer] = []

    def _make(
        turns: list[F.Turn], *, then: F.Turn | None = None, **overrides: Any
    ) -> tuple[Job, F.FakeModelServer]:
        server = F.FakeModelServer(turns, then=then).start()
        servers.append(server)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
        job = make_job(
            ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"],
            **{"claude_command": str(binary), **overrides},
        )
        return job, server

    yield _make
    for server in servers:
        server.stop()


def test_claude_writes_the_file_and_the_artifact(claude_job: Any) -> None:
    job, server = claude_job([])  # the paths need the job: scripted once it exists
    wt, art = job.worktree, job.out / A.DEV_REPORT
    server.script(
        [
            F.tool("Write", {"file_path": str(wt / "hello.txt"), "content": "hello\n"}),
            F.tool("Write", {"file_path": str(art), "content": dev_report("DONE")}),
            F.text("Done: hello.txt added."),
        ]
    )
    result = job.run("claude")

    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert (wt / "hello.txt").read_text() == "hello\n"
    assert parse_artifact(A.DEV_REPORT, job.artifact(A.DEV_REPORT)).status is VerdictStatus.PASS
    # Three scripted requests of 100 tokens in and 20 out each, as the fake server said.
    assert (result.tokens_in, result.tokens_out) == (300, 60)
    assert result.cost_usd is not None
    assert result.cost_usd > 0
    # Development: what the agent left uncommitted is committed on the task branch.
    assert commits.has_diff_vs(wt, job.repo.main_branch)[0]
    assert "committed what the agent left uncommitted" in " ".join(result.reasons)
    # What reached the model: our prompt, with the task and the exact artifact path, and
    # the key from the repo's --agent-env; nothing of the orchestrator's own secrets.
    first = server.scripted_requests(F.ANTHROPIC)[0]
    sent = json.dumps(first.body)
    assert job.task.key in sent
    assert str(art) in sent
    assert first.headers.get("x-api-key") == TEST_KEY
    log = job.log_text
    assert "ORCH_API_TOKEN" not in log
    assert "orch-secret-must-not-leak" not in log
    assert TEST_KEY not in log  # masked in the header
    assert '"--no-session-persistence"' in log


def test_claude_api_error_is_a_tool_error(claude_job: Any) -> None:
    job, _server = claude_job([F.http_error(500)], then=F.http_error(500))
    result = job.run("claude")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "API error (HTTP 500, outage)" in result.reasons[0]
    assert result.api_fault is not None
    assert result.api_fault.kind is FaultKind.OUTAGE
    assert job.artifact(A.DEV_REPORT) is None


def test_claude_overloaded_is_a_tool_error(claude_job: Any) -> None:
    job, _server = claude_job([], then=F.http_error(529, "Overloaded"))
    result = job.run("claude")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "HTTP 529" in result.reasons[0]


def test_claude_max_turns_fails_the_attempt_instead_of_an_infra_retry(claude_job: Any) -> None:
    # Issue 16: max turns was a tool error (`timeout`), so the identical prompt ran again
    # within the infra budget, with nothing added. It is the attempt's FAIL: the
    # orchestrator records `dev_status: FAILED` with the reason, whatever the agent wrote.
    job, server = claude_job([], claude_max_turns=2)
    wt, art = job.worktree, job.out / A.DEV_REPORT
    server.script(
        [F.tool("Write", {"file_path": str(art), "content": dev_report("DONE")})],
        then=F.tool("Write", {"file_path": str(wt / "again.txt"), "content": "x"}),
    )
    result = job.run("claude")

    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert "max turns reached (--max-turns 2)" in result.reasons[0]
    assert "error_max_turns" in result.reasons[0]
    assert result.tokens_in
    assert result.tokens_in > 0
    assert result.cost_usd is not None
    report = job.artifact(A.DEV_REPORT)
    verdict = parse_artifact(A.DEV_REPORT, report)
    assert verdict.status is VerdictStatus.FAIL, report
    assert report is not None
    assert "max turns reached" in report
    assert result.artifacts[A.DEV_REPORT] == report  # the record the gate reads
    # The agent's own DONE claim is not taken; it is kept beside the job for a human.
    assert "not taken" in " ".join(result.reasons)
    assert "dev_status: DONE" in (job.out / A.DEV_REPORT).read_text()
    # What it did get done is committed: the next attempt starts from it.
    assert commits.has_diff_vs(wt, job.repo.main_branch)[0]


def test_claude_budget_cap_fails_the_attempt(claude_job: Any) -> None:
    # The CLI's own budget cap (--max-budget-usd, through ORCH_CLAUDE_COMMAND here) is the
    # same kind of end as max turns.
    job, server = claude_job([], claude_command=f"{cli('claude')} --max-budget-usd 0.001")
    server.script(
        [], then=F.tool("Write", {"file_path": str(job.worktree / "again.txt"), "content": "x"})
    )
    result = job.run("claude")
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert "budget cap" in result.reasons[0]
    assert "error_max_budget_usd" in result.reasons[0]
    report = job.artifact(A.DEV_REPORT)
    assert parse_artifact(A.DEV_REPORT, report).status is VerdictStatus.FAIL


def test_claude_max_turns_of_a_tester_fails_its_gate(claude_job: Any) -> None:
    # Other roles: the artifact the cut-short run wrote is not taken, so the gate FAILs.
    job, server = claude_job([], claude_max_turns=2)
    art = job.out / A.TEST_REPORT
    passing = A.render_artifact(
        A.TEST_REPORT, {"result": "PASSED", "status": "PASS", "failed": 0}, "claimed"
    )
    server.script(
        [F.tool("Write", {"file_path": str(art), "content": passing})],
        then=F.tool("Write", {"file_path": str(job.worktree / "again.txt"), "content": "x"}),
    )
    result = job.run("claude", role="tester", stage=Stage.TESTING)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert "max turns reached" in result.reasons[0]
    assert A.TEST_REPORT not in result.artifacts
    assert job.artifact(A.TEST_REPORT) is None
    gates = GateContext(
        job.task,
        job.repo,
        Stage.TESTING,
        job.folder,
        job.worktree,
        job.settings,
        job.engine,
        produced=result.artifacts,
        recorded={},
    )
    verdict = run_gates(gates)
    assert verdict.status is VerdictStatus.FAIL
    assert verdict.tool_error is None
    assert "13-test-report.md is missing" in " ".join(verdict.reasons)


def test_claude_api_error_after_a_first_answer_is_a_tool_error(claude_job: Any) -> None:
    # A model error after the agent already did something is still the server's fault.
    job, server = claude_job([])
    wt = job.worktree
    server.script(
        [F.tool("Write", {"file_path": str(wt / "hello.txt"), "content": "hello\n"})],
        then=F.http_error(529, "Overloaded"),
    )
    result = job.run("claude")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "HTTP 529" in result.reasons[0]
    assert job.artifact(A.DEV_REPORT) is None
    # Nothing of a failed run is committed; the retry finds it in the worktree.
    assert not commits.has_diff_vs(wt, job.repo.main_branch)[0]
    assert (wt / "hello.txt").exists()


def test_claude_denied_tool_is_a_tool_error(claude_job: Any) -> None:
    job, server = claude_job([])
    marker = job.worktree / "ran-python"
    server.script(
        [
            F.tool(
                "Bash",
                {"command": f"python3 -c \"open('{marker}', 'w')\"", "description": "run python"},
            ),
            F.text("I could not run it."),
        ]
    )
    result = job.run("claude")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "denied 1 tool call(s) by permission mode acceptEdits" in result.reasons[0]
    assert "Bash(" in result.reasons[0]
    assert not marker.exists()


def test_claude_hang_is_stopped_by_stall_detection(
    claude_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, server = claude_job([F.hang()], agent_stall_timeout_s=HANG_STALL_TIMEOUT_S)
    stall_clock_from_first_request(monkeypatch, server)
    result = job.run("claude")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    stalled = f"stalled: no output and no file change for {HANG_STALL_TIMEOUT_S:g}s"
    assert stalled in result.reasons[0]
    # The stall is the hang: it came while the model owed claude its first answer.
    assert MODEL_HANG in result.reasons[0]
    assert server.turns_taken == 1
    assert "stopping: stalled" in job.log_text


def test_a_broken_repo_prompt_never_starts_the_agent(claude_job: Any) -> None:
    job, server = claude_job([F.text("never asked")])
    override = job.worktree / ".orchestrator" / "agents" / "developer.md"
    override.parent.mkdir(parents=True)
    override.write_text("Do {{ task_key }} and {{ no_such_variable }}\n")
    result = job.run("claude")
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert "no_such_variable" in result.reasons[0]
    assert server.requests == []


def test_a_repo_prompt_override_is_what_the_model_gets(claude_job: Any) -> None:
    job, server = claude_job([F.text("ok")])
    override = job.worktree / ".orchestrator" / "agents" / "developer.md"
    override.parent.mkdir(parents=True)
    override.write_text("HOUSE RULES for {{ task_key }}: write {{ artifact_path }}\n")
    job.run("claude")
    sent = json.dumps(server.scripted_requests(F.ANTHROPIC)[0].body)
    assert f"HOUSE RULES for {job.task.key}: write {job.out / A.DEV_REPORT}" in sent


# ------------------------------------------------------------------------------- codex


@pytest.fixture
def codex_job(make_job: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    binary = cli("codex")
    servers: list[F.FakeModelServer] = []

    def _make(
        turns: list[F.Turn],
        *,
        then: F.Turn | None = None,
        base_url: str | None = None,
        **overrides: Any,
    ) -> tuple[Job, F.FakeModelServer]:
        server = F.FakeModelServer(turns, then=then).start()
        servers.append(server)
        monkeypatch.setenv("OPENAI_BASE_URL", base_url or server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
        job = make_job(
            ["OPENAI_BASE_URL", "OPENAI_API_KEY"],
            codex_command=str(binary),
            **overrides,
        )
        return job, server

    yield _make
    for server in servers:
        server.stop()


def test_codex_writes_the_file_and_the_artifact(codex_job: Any) -> None:
    job, server = codex_job([])
    wt, art = job.worktree, job.out / A.DEV_REPORT
    report = dev_report("DONE").replace("'", "'\\''")
    server.script(
        [
            F.tool("exec_command", {"cmd": f"printf 'hello\\n' > {wt / 'hello.txt'}"}),
            F.tool("exec_command", {"cmd": f"printf '%s' '{report}' > {art}"}),
            F.text("Done."),
        ]
    )
    result = job.run("codex")

    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert (wt / "hello.txt").read_text() == "hello\n"
    assert parse_artifact(A.DEV_REPORT, job.artifact(A.DEV_REPORT)).status is VerdictStatus.PASS
    assert (result.tokens_in, result.tokens_out) == (300, 60)
    st = job.settings
    expected = codex_cost_usd(
        300, 60, st.codex_price_in_per_mtok_usd, st.codex_price_out_per_mtok_usd
    )
    assert result.cost_usd == pytest.approx(expected)
    assert commits.has_diff_vs(wt, job.repo.main_branch)[0]
    first = server.scripted_requests(F.RESPONSES)[0]
    assert first.headers.get("authorization") == f"Bearer {TEST_KEY}"
    assert job.task.key in json.dumps(first.body)
    # Its own CODEX_HOME, with the config we wrote.
    config = job.folder / "runs" / f"{job.job.id}-home" / "codex" / "config.toml"
    assert 'wire_api = "responses"' in config.read_text()


def test_codex_sandbox_refuses_a_write_outside_the_worktree(codex_job: Any) -> None:
    # Outside /tmp: codex's workspace-write sandbox lets agents write /tmp and $TMPDIR (a
    # test suite needs them), and every path of this test's own tree is under /tmp.
    outside = Path("/var/tmp") / f"orch-sandbox-{uuid.uuid4().hex}"
    job, server = codex_job([F.tool("exec_command", {"cmd": f"touch {outside}"}), F.text("ok")])
    try:
        result = job.run("codex")
        assert result.outcome is OutcomeKind.COMPLETED, result.reasons
        assert not outside.exists()
        # The refusal reached the agent as a failed command, not as a job failure.
        assert any("Read-only file system" in r for r in F.tool_results(server, F.RESPONSES))
    finally:
        outside.unlink(missing_ok=True)


def test_codex_default_model_offers_apply_patch_and_it_works_in_our_sandbox(
    codex_job: Any,
) -> None:
    # Issue 16: the default model was unknown to the pinned codex, which then offered no
    # apply_patch tool; and codex's own sandbox failed every command inside ours. The
    # default is one its catalog knows, and inside our sandbox codex's own is off.
    job, server = codex_job([])  # the settings' default model
    wt, art = job.worktree, job.out / A.DEV_REPORT
    report = dev_report("DONE").replace("'", "'\\''")
    server.script(
        [
            F.custom_tool(
                "apply_patch", "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
            ),
            F.tool("exec_command", {"cmd": f"printf '%s' '{report}' > {art}"}),
            F.text("Done."),
        ]
    )
    result = job.run("codex")

    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    first = server.scripted_requests(F.RESPONSES)[0]
    assert first.body is not None
    assert first.body["model"] == Settings().codex_model
    offered = [t.get("name") for t in first.body.get("tools", [])]
    assert "apply_patch" in offered, offered
    assert (wt / "hello.txt").read_text() == "hello\n"
    assert parse_artifact(A.DEV_REPORT, job.artifact(A.DEV_REPORT)).status is VerdictStatus.PASS
    config = job.folder / "runs" / f"{job.job.id}-home" / "codex" / "config.toml"
    assert 'sandbox_mode = "danger-full-access"' in config.read_text()
    assert "sandbox: off" not in job.log_text  # ours is what confines it
    assert not any("codex-linux-sandbox" in r for r in F.tool_results(server, F.RESPONSES))


def test_codex_own_sandbox_that_cannot_start_is_a_tool_error(
    codex_job: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Codex's own sandbox (ours off) needs a helper it links into CODEX_HOME; under the
    # temporary directory it refuses to, and every command fails with "bwrap: execvp
    # codex-linux-sandbox". The model sees that; the job must not be the code's FAIL.
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the job home lies under it
    job, server = codex_job(
        [F.tool("exec_command", {"cmd": "printf 'hello\\n' > hello.txt"}), F.text("Done.")],
        sandbox=False,
        codex_sandbox="workspace-write",
    )
    result = job.run("codex")

    assert any("codex-linux-sandbox" in r for r in F.tool_results(server, F.RESPONSES))
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "its own sandbox could not start (sandbox_mode workspace-write)" in result.reasons[0]
    assert "could not create PATH aliases" in result.reasons[0]
    assert not (job.worktree / "hello.txt").exists()


def test_codex_api_error_after_a_first_answer_is_a_tool_error(codex_job: Any) -> None:
    job, _server = codex_job(
        [F.tool("exec_command", {"cmd": "printf 'hello\\n' > hello.txt"})],
        then=F.http_error(500, "scripted overload"),
    )
    result = job.run("codex")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "API error" in result.reasons[0]
    assert "the model server failed" in result.reasons[0]
    assert result.api_fault is not None
    assert result.api_fault.kind is FaultKind.OUTAGE
    assert job.artifact(A.DEV_REPORT) is None


def test_codex_api_error_is_a_tool_error(codex_job: Any) -> None:
    job, _server = codex_job([], then=F.http_error(500))
    result = job.run("codex")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "API error" in result.reasons[0]
    assert result.api_fault is not None
    assert result.api_fault.kind is FaultKind.OUTAGE


def test_codex_stream_error_is_a_tool_error(codex_job: Any) -> None:
    job, _server = codex_job([], then=F.stream_error("scripted overload"))
    result = job.run("codex")
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "scripted overload" in " ".join(result.reasons)


def test_codex_hang_is_stopped_by_stall_detection(codex_job: Any) -> None:
    job, server = codex_job([F.hang()], agent_stall_timeout_s=HANG_STALL_TIMEOUT_S)
    result = job.run("codex")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    assert "stalled:" in result.reasons[0]
    assert server.turns_taken == 1


def test_codex_unreachable_server_is_owned_by_our_timeout(codex_job: Any) -> None:
    # Codex retries forever while the server is unreachable, printing a line now and then
    # (so the stall detector may not see it as stalled): the job timeout ends it. Its first
    # "Reconnecting" line comes some 0.3 s after its start (measured; the next one only
    # seconds later); the reason below, read from those lines, shows it was retrying when
    # the timeout (2 s, was 4 s and 8 s) stopped it.
    job, server = codex_job([], base_url="http://127.0.0.1:9/v1", agent_timeout_s=2)
    result = job.run("codex")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    assert any("codex could not reach the model server" in r for r in result.reasons), (
        result.reasons
    )
    assert server.requests == []


# ------------------------------------------------------------------------------- aider


@pytest.fixture
def aider_job(make_job: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    command = aider_command()
    servers: list[F.FakeModelServer] = []

    def _make(
        turns: list[F.Turn], *, then: F.Turn | None = None, **overrides: Any
    ) -> tuple[Job, F.FakeModelServer]:
        server = F.FakeModelServer(turns, then=then).start()
        servers.append(server)
        monkeypatch.setenv("OPENAI_API_BASE", server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
        job = make_job(
            ["OPENAI_API_BASE", "OPENAI_API_KEY"],
            **{"aider_command": command, "aider_model": "openai/gpt-fake", **overrides},
        )
        return job, server

    yield _make
    for server in servers:
        server.stop()


# aider's "whole" edit format, its default for a model it does not know: the file's path,
# then its whole new content in a fence.
AIDER_EDIT = "hello.txt\n```\nhello\n```\n"


def test_aider_edit_is_committed_and_reported(aider_job: Any) -> None:
    job, _server = aider_job([F.text(AIDER_EDIT)])
    result = job.run("aider")
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert (job.worktree / "hello.txt").read_text() == "hello\n"
    assert parse_artifact(A.DEV_REPORT, job.artifact(A.DEV_REPORT)).status is VerdictStatus.PASS
    assert (result.tokens_in, result.tokens_out) == (100, 20)
    assert commits.has_diff_vs(job.worktree, job.repo.main_branch)[0]
    # Its history and caches stay out of the repository.
    assert not list(job.worktree.glob(".aider*"))
    # Every job is aider's "first run" (a new home): it did not offer its release notes,
    # which --yes-always would open in whatever console browser is on PATH.
    assert "aider.chat/HISTORY.html" not in job.log_text


def test_aider_answer_without_edit_fails_the_report(aider_job: Any) -> None:
    job, _server = aider_job([F.text("I will not change anything.")])
    result = job.run("aider")
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert parse_artifact(A.DEV_REPORT, job.artifact(A.DEV_REPORT)).status is VerdictStatus.FAIL


# The model's first answer names a file aider then adds to the chat and asks again about:
# the second request is the one that fails.
ASKS_FOR_A_FILE = F.text("To do this I need to see app.py first.")


def test_aider_model_error_after_a_first_answer_is_a_tool_error(aider_job: Any) -> None:
    # Issue 16: aider exits 0 and its analytics show an answer, so this read as "changed
    # nothing" (a developer retry), and the model's error was in no reason. 401: aider does
    # not retry it, so the run is quick; the overloaded case below takes its retries.
    job, _server = aider_job([ASKS_FOR_A_FILE], then=F.http_error(401, "bad key"))
    result = job.run("aider")
    assert result.exit_code == 0
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "the model failed after 1 answer(s)" in result.reasons[0]
    assert "litellm.AuthenticationError" in result.reasons[0]
    assert job.artifact(A.DEV_REPORT) is None
    assert not commits.has_diff_vs(job.worktree, job.repo.main_branch)[0]


# aider's own back-off on a retryable model error (`Coder.send_message` and
# `Model.simple_send_with_retries`): the delay starts at 0.125 s and doubles before each
# retry, and it gives up once the doubled delay passes `aider.models.RETRY_TIMEOUT` (60 s,
# a constant with no setting: 8 retries, about 64 s of sleeping).
AIDER_FIRST_RETRY_DELAY_S = 0.125
AIDER_RETRY_TIMEOUT_S = 60.0
# The overload test's lowered give-up: still more than one retry (two: 0.25 s and 0.5 s of
# back-off), so a retry is shown. It was 1.0 s, three retries and 1.75 s of back-off.
SHORT_AIDER_RETRY_TIMEOUT_S = 0.5


def aider_retries(retry_timeout_s: float) -> int:
    """How many times aider retries one failing request before it gives up: its loop."""
    delay, retries = AIDER_FIRST_RETRY_DELAY_S, 0
    while True:
        delay *= 2
        if delay > retry_timeout_s:
            return retries
        retries += 1


def aider_python(command: str) -> str | None:
    """The interpreter of ``command`` when it is one python script (as the pinned aider's
    console script is), read from its ``#!`` line; None when it cannot be read."""
    argv = shlex.split(command)
    script = Path(shutil.which(argv[0]) or argv[0]) if len(argv) == 1 else None
    first = b""
    if script is not None:
        try:
            with script.open("rb") as fh:
                first = fh.readline(256).rstrip(b"\n")
        except OSError:
            pass
    interpreter = first[2:].decode(errors="replace").strip() if first.startswith(b"#!") else ""
    if not interpreter or " " in interpreter or "python" not in Path(interpreter).name:
        return None
    return interpreter


def aider_with_retry_timeout(command: str, retry_timeout_s: float) -> tuple[str, float]:
    """``command`` as a launcher that lowers aider's ``RETRY_TIMEOUT`` and then runs aider's
    real ``main``, with the give-up it will have; ``command`` itself and the full 60 s when
    its interpreter cannot be read from its ``#!`` line.

    Sound because the constant only bounds how long aider keeps retrying: the same aider, the
    same requests, the same litellm errors and "Retrying in" lines, the same give-up and exit
    0; only the number of retries before it is smaller. The launcher is ``<aider's python>
    -c <code>``, the way aider's own console script starts it: no file of ours, and the
    sandbox binds that python's install as it does for the script (its ``toolchain_paths``).
    ``base_coder`` imports the constant by name, so both modules get the new value."""
    interpreter = aider_python(command)
    if interpreter is None:
        return command, AIDER_RETRY_TIMEOUT_S
    code = (
        "import sys\n"
        "from aider.main import main\n"
        "import aider.models, aider.coders.base_coder as base_coder\n"
        f"aider.models.RETRY_TIMEOUT = base_coder.RETRY_TIMEOUT = {retry_timeout_s!r}\n"
        "sys.exit(main())\n"
    )
    return shlex.join([interpreter, "-c", code]), retry_timeout_s


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_aider_mid_run_overload_is_infra_with_the_error_in_the_reasons(
    aider_job: Any,
) -> None:
    # Issue 16: aider exits 0 after a 529 that followed its first answer; that was
    # "changed nothing", a developer retry, the 529 in no reason.
    from orchestrator.engine.worker import Worker

    # What is under test is the orchestrator's reading of aider's give-up (exit 0 after its
    # retries: infra, the 529 in the reasons, no developer retry), not how long aider backs
    # off: its give-up is lowered from 60 s to 0.5 s (see `aider_with_retry_timeout`).
    command, retry_timeout_s = aider_with_retry_timeout(
        aider_command(), SHORT_AIDER_RETRY_TIMEOUT_S
    )
    retries = aider_retries(retry_timeout_s)
    assert retries >= 1
    job, server = aider_job(
        [ASKS_FOR_A_FILE],
        # Retry-After as an overloaded API sends it: the OpenAI client under litellm retries
        # each of aider's requests twice and, told when, waits that instead of its own
        # back-off of about a second.
        then=F.http_error(529, "Overloaded", retry_after="0.01"),
        agents=("development=aider",),
        # aider retries a 529 itself (then gives up, and exits 0): one job is enough to
        # show it.
        infra_retry_budget=0,
        agent_timeout_s=300,
        aider_command=command,
    )
    Worker(job.settings, job.engine).run(until_idle=True)
    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        history = queries.list_transitions(conn, job.task.id)
    assert task is not None
    # One fault, below the breaker's threshold: the task's own infra budget (0 here), so
    # blocked for infra; never rolled back, no developer retry, the 529 in the reasons.
    assert (task.stage, task.state) == ("development", "blocked"), task.reasons
    kinds = [h.kind for h in history]
    assert "rollback" not in kinds, kinds
    assert task.developer_retries == 0
    block = history[-1]
    assert block.kind == "block"
    assert any("infra retry budget spent" in r for r in block.reasons), block.reasons
    assert any("litellm." in r and "Overloaded" in r for r in block.reasons), block.reasons
    assert any("API error (outage)" in r for r in block.reasons), block.reasons
    with job.engine.connect() as conn:
        (dev,) = queries.list_jobs(conn, task_id=job.task.id)
    assert (dev.exit_code, dev.outcome) == (0, "crashed")
    assert any(f"(after {retries} retries)" in r for r in dev.reasons), dev.reasons
    assert job.artifact(A.DEV_REPORT) is None
    # The first answer, then aider's tries of the failing request (the first and its
    # retries), each tried 3 times by the OpenAI client (which honoured the Retry-After):
    # the overload was retried, by aider and by the client under it.
    assert len(server.requests) == 1 + (1 + retries) * 3, len(server.requests)


def test_aider_rejected_key_is_a_tool_error_and_pauses_the_backend_with_one_alert(
    aider_job: Any,
) -> None:
    from orchestrator.engine.worker import Worker
    from orchestrator.store import breakers

    job, _server = aider_job([], then=F.http_error(401, "bad key"), agents=("development=aider",))
    worker = Worker(job.settings, job.engine)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with job.engine.connect() as conn:
            row = breakers.get(conn, "aider")
        if row is not None and row.state.paused:
            break
        time.sleep(0.1)
    worker.stop(drain=True)
    thread.join(60)
    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        alerts = alert_rows.list_alerts(conn)
        dev = queries.list_jobs(conn, task_id=job.task.id)[0]
    assert row is not None
    assert row.state.health.value == "credentials"
    assert [a.kind for a in alerts] == ["backend-credentials"]
    assert task is not None
    assert task.state in ("active", "deferred")
    assert (task.developer_retries, task.infra_retries) == (0, 0)
    # The job itself: the API error is a tool error. 401: litellm does not retry it, so the
    # run is quick; aider still exits 0. (Its own test once, with an aider start-up of its
    # own: the worker's job is the same run.)
    assert dev.outcome == OutcomeKind.CRASHED.value, dev.reasons
    assert "no message_send" in dev.reasons[0], dev.reasons
    assert dev.exit_code == 0
    assert job.artifact(A.DEV_REPORT) is None


# aider is silent about 2.5 s at its start (importing litellm: nothing in its log, no file
# changed), longer than HANG_STALL_TIMEOUT_S; a stall timeout above that silence was 4 s,
# spent waiting out the hang after it.
AIDER_SILENT_START_STALL_TIMEOUT_S = 4.0


def aider_reporting_imports(command: str) -> str | None:
    """``command`` as a launcher that runs aider's real ``main`` under ``python -X
    importtime``: the interpreter writes a line to stderr as each module's import ends, so
    aider's start-up shows in its log (its longest silence then was about 0.2 s, measured,
    as for claude and codex). None when its interpreter cannot be read.

    Sound for a stall test because the lines end with the imports: from its first request
    on, aider (the same code, the same requests) shows what it shows without them."""
    interpreter = aider_python(command)
    if interpreter is None:
        return None
    code = "import sys\nfrom aider.main import main\nsys.exit(main())\n"
    return shlex.join([interpreter, "-X", "importtime", "-c", code])


def test_aider_hang_is_stopped_by_stall_detection(aider_job: Any) -> None:
    launcher = aider_reporting_imports(aider_command())
    stall_s = HANG_STALL_TIMEOUT_S if launcher else AIDER_SILENT_START_STALL_TIMEOUT_S
    job, server = aider_job(
        [F.hang()], agent_stall_timeout_s=stall_s, aider_command=launcher or aider_command()
    )
    result = job.run("aider")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    assert "stalled:" in result.reasons[0]
    # The stall is the hang: it came while the model owed aider its first answer, not in
    # aider's start-up.
    assert MODEL_HANG in result.reasons[0]
    assert server.turns_taken == 1


def test_aider_cannot_take_a_role_it_cannot_report_for(make_job: Any) -> None:
    job = make_job([], aider_command="aider-not-needed")
    result = job.run("aider", role="analyst", stage=Stage.ANALYSIS)
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert "developer role" in result.reasons[0]


# ------------------------------------------------------------------------------- no CLI


def test_a_missing_cli_is_not_started(make_job: Any) -> None:
    job = make_job([], claude_command="/nonexistent/claude")
    result = job.run("claude")
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert "not started" in result.reasons[0]


# ------------------------------------------------------------------------------- spend


def test_spend_sums_job_costs(make_job: Any) -> None:
    job = make_job([])
    with job.engine.begin() as conn:
        queries.update_job(
            conn, job.job.id, cost_usd=0.25, tokens_in=1000, tokens_out=50, finished_at=1000.0
        )
    with job.engine.connect() as conn:
        assert spend.task_spend_usd(conn, job.task.id) == pytest.approx(0.25)
        assert spend.task_spend(conn, job.task.id).tokens_in == 1000
        assert spend.day_spend_usd(conn, since=999.0) == pytest.approx(0.25)
        assert spend.day_spend_usd(conn, since=1001.0) == 0.0
        assert spend.task_spend_usd(conn, job.task.id + 1) == 0.0


# ------------------------------------------------------------------- through the engine


def _hello_script(job: Job) -> list[F.Turn]:
    wt, art = job.worktree, job.out / A.DEV_REPORT
    return [
        F.tool("Write", {"file_path": str(wt / "hello.txt"), "content": "hello\n"}),
        F.tool("Write", {"file_path": str(art), "content": dev_report("DONE")}),
        F.text("Done: hello.txt added."),
    ]


def _deterministic_rest(job: Job) -> None:
    # The repo has no suite: its tests (and the merge gate's re-test) are a passing command.
    import sys

    repo_ops.set_repo(job.engine, "demo", repo_ops.RepoInput(test_cmd=f"{sys.executable} -c pass"))


def test_claude_developer_through_the_whole_pipeline(claude_job: Any) -> None:
    from orchestrator.engine.worker import Worker
    from orchestrator.gitops.git import git

    job, server = claude_job([])
    server.script(_hello_script(job))
    _deterministic_rest(job)
    Worker(job.settings, job.engine).run(until_idle=True)

    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        jobs = queries.list_jobs(conn, task_id=job.task.id)
    assert task is not None
    assert (task.stage, task.state) == ("post-deploy-monitor", "done"), task.reasons
    dev = next(j for j in jobs if j.stage == "development")
    assert dev.agent == "claude"
    assert (dev.tokens_in, dev.tokens_out) == (300, 60)
    assert dev.cost_usd is not None
    assert dev.cost_usd > 0
    shown = git(["show", "main:hello.txt"], Path(job.repo.path))
    assert shown.stdout == "hello\n"


def test_llm_budget_blocks_and_the_next_job_is_not_dispatched(claude_job: Any) -> None:
    from orchestrator.engine.worker import Worker

    job, server = claude_job([], llm_budget_per_task_usd=1e-9)
    server.script(_hello_script(job))
    _deterministic_rest(job)
    Worker(job.settings, job.engine).run(until_idle=True)
    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        alerts = alert_rows.list_alerts(conn)
    assert task is not None
    # The first job's spend reached its cap (all the task had): it was stopped after its
    # first answer, and the task blocked with an alert. Issue 16: it ran on to its end,
    # three model calls against a budget of a billionth of a dollar. Either stop will do,
    # and which comes first is the machine's timing: the watch's, from outside, once it
    # reads the streamed spend (its next poll), or the CLI's own --max-budget-usd, once it
    # has the answer (test_llm_spend.py holds each apart).
    assert (task.stage, task.state) == ("development", "blocked"), task.reasons
    assert any("LLM budget crossed" in r for r in task.reasons)
    stops = ("over budget: streamed spend", "(error_max_budget_usd)")
    assert any(stop in r for r in task.reasons for stop in stops), task.reasons
    assert not any(r.startswith("deferred ") for r in task.reasons), task.reasons
    assert [a.kind for a in alerts] == ["llm-budget-exhausted"]
    asked = len(server.scripted_requests(F.ANTHROPIC))
    assert asked == 1

    # A second LLM job of this task is refused before dispatch: the model is not asked.
    repo_ops.set_repo(
        job.engine, "demo", repo_ops.RepoInput(stages=["development", "testing", "deploy-staging"])
    )
    task_ops.retry_task(job.engine, job.settings, job.task.key, patch=b"unused")
    Worker(job.settings, job.engine).run(until_idle=True)
    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        dev = [j for j in queries.list_jobs(conn, task_id=job.task.id) if j.stage == "development"]
    assert task is not None
    assert (task.stage, task.state) == ("development", "blocked")
    assert any("not dispatched: LLM budget" in r for r in task.reasons)
    assert dev[-1].outcome == "not-started"
    assert len(server.scripted_requests(F.ANTHROPIC)) == asked


def test_claude_max_turns_is_rolled_back_with_its_context_not_retried_as_it_was(
    claude_job: Any,
) -> None:
    # Issue 16: max turns ran the identical prompt three more times as an infra retry. Now
    # the attempt FAILs: a developer retry, and the next prompt says why.
    from orchestrator.engine.worker import Worker

    # A human takes over at testing: the pipeline stops there, after development.
    job, server = claude_job([], claude_max_turns=3, agents=("testing=manual",))
    wt = job.worktree
    # The first attempt only ever writes files: it runs into --max-turns 3.
    first = [
        F.tool("Write", {"file_path": str(wt / f"step{i}.txt"), "content": f"{i}\n"})
        for i in range(3)
    ]
    # The next development job's output folder (job ids count up in this fresh database).
    second_out = job.folder / "runs" / f"{job.job.id + 1}-out"
    second = [
        F.tool("Write", {"file_path": str(wt / "hello.txt"), "content": "hello\n"}),
        F.tool("Write", {"file_path": str(second_out / A.DEV_REPORT), "content": dev_report()}),
        F.text("Done: hello.txt added."),
    ]
    server.script([*first, *second])
    Worker(job.settings, job.engine).run(until_idle=True)

    with job.engine.connect() as conn:
        task = queries.get_task(conn, job.task.key)
        jobs = queries.list_jobs(conn, task_id=job.task.id)
        history = queries.list_transitions(conn, job.task.id)
    assert task is not None
    assert (task.stage, task.state) == ("testing", "blocked"), task.reasons  # the human
    dev = [j for j in jobs if j.stage == "development"]
    assert [j.outcome for j in dev] == ["completed", "completed"]
    assert dev[1].id == job.job.id + 1
    kinds = [h.kind for h in history]
    assert "defer" not in kinds, kinds
    rollback = next(h for h in history if h.kind == "rollback")
    assert any("max turns reached" in r for r in rollback.reasons), rollback.reasons
    assert task.developer_retries == 1
    assert task.infra_retries == 0
    # The second attempt's prompt carries the first one's failure, not the same text again.
    asked = server.scripted_requests(F.ANTHROPIC)
    assert len(asked) == len(first) + len(second)
    first_prompt = json.dumps(asked[0].body)
    second_prompt = json.dumps(asked[len(first)].body)
    assert "max turns reached" not in first_prompt
    assert "max turns reached" in second_prompt
