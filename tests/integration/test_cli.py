"""The `orch` CLI in-process: repos, tasks, history, bad input with exit 2 and nothing written."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import queries


def _cli(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    home = tmp_path / "home"
    monkeypatch.setenv("ORCH_HOME", str(home))
    monkeypatch.setenv("ORCH_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def call(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return call


@pytest.fixture
def orch(
    tmp_path: Path, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """`orch` in process, on a database at the newest migration."""
    return _cli(tmp_path, migrated_db_url, monkeypatch)


@pytest.fixture
def orch_on_empty(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """`orch` in process, on an empty database: the first command migrates it for real."""
    return _cli(tmp_path, db_url, monkeypatch)


def test_repo_add_list_show(orch: Callable[..., Any], make_repo: Callable[..., Path]) -> None:
    repo = make_repo(files={"app.py": "print('hi')\n"})
    orch("init")
    data = orch(
        "repo",
        "add",
        "demo",
        str(repo),
        "--test-cmd",
        "python -m pytest -q -x",
        "--agent",
        "development=patch",
        "--json",
    )
    assert data["key_prefix"] == "DEMO"
    assert data["test_cmd"] == ["python", "-m", "pytest", "-q", "-x"]
    assert data["agents"]["development"] == "patch"
    assert data["agents"]["testing"] == "test-runner"
    assert data["main_branch"] == "main"
    listed = orch("repo", "list", "--json")
    assert [r["name"] for r in listed] == ["demo"]
    shown = orch("repo", "show", "demo", "--json")
    assert shown["path"] == str(repo.resolve())


def test_repo_set_changes_only_given_fields(
    orch: Callable[..., Any], make_repo: Callable[..., Path]
) -> None:
    repo = make_repo()
    orch("repo", "add", "demo", str(repo), "--test-cmd", "pytest")
    data = orch(
        "repo",
        "set",
        "demo",
        "--staging-cmd",
        "sh -c 'echo $HOME'",
        "--agent",
        "development=command:python agent.py {task} {artifact_dir}",
        "--json",
    )
    # Split like a shell, never run through one: the $HOME stays literal.
    assert data["staging_cmd"] == ["sh", "-c", "echo $HOME"]
    assert data["test_cmd"] == ["pytest"]
    assert data["agents"]["development"].startswith("command:")
    orch("repo", "set", "demo", "--agent", "development=command:x {nope}", code=2)
    orch("repo", "set", "demo", code=2)


def test_task_add_writes_task_md_and_lists(
    orch: Callable[..., Any], make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo()
    orch("repo", "add", "demo", str(repo))
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    out = orch(
        "task", "add", "demo", "Add a greeting", "--body", "Say hello.", "--patch", str(patch)
    )
    assert out.stdout.strip() == "DEMO-1"
    assert orch("task", "add", "demo", "Second").stdout.strip() == "DEMO-2"
    folder = tmp_path / "home" / "tasks" / "DEMO-1"
    text = (folder / "00-task.md").read_text()
    assert "task: DEMO-1" in text
    assert "Say hello." in text
    assert (folder / "patches" / "001.patch").read_text() == patch.read_text()
    tasks = orch("task", "list", "--json")
    assert [(t["key"], t["stage"], t["state"]) for t in tasks] == [
        ("DEMO-1", "development", "active"),
        ("DEMO-2", "development", "active"),
    ]
    shown = orch("task", "show", "DEMO-1", "--json")
    assert shown["history"][0]["kind"] == "create"
    assert shown["jobs"][0]["stage"] == "development"
    assert shown["jobs"][0]["state"] == "queued"
    assert shown["artifacts"] == ["00-task.md"]


def test_cancel_retry_approve_record_history(
    orch: Callable[..., Any], make_repo: Callable[..., Path]
) -> None:
    repo = make_repo()
    orch("repo", "add", "demo", str(repo))
    orch("task", "add", "demo", "T")
    orch("task", "retry", "DEMO-1", code=2)  # active: nothing to retry
    orch("task", "approve", "DEMO-1", code=2)  # not blocked
    orch("task", "cancel", "DEMO-1", "--reason", "not needed")
    shown = orch("task", "show", "DEMO-1", "--json")
    assert shown["state"] == "cancelled"
    assert shown["history"][-1]["kind"] == "cancel"
    assert shown["history"][-1]["reasons"] == ["cancelled by cli: not needed"]
    orch("task", "cancel", "DEMO-1", code=2)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("task", "add", "nope", "T"), "unknown repo 'nope'"),
        (("task", "show", "demo-1"), "not a task key"),
        (("task", "show", "DEMO-99"), "unknown task DEMO-99"),
        (("task", "list", "--stage", "qa"), "unknown stage 'qa'"),
        (("task", "list", "--state", "sleeping"), "unknown state"),
        (("repo", "show", "nope"), "unknown repo"),
        (("task", "add", "demo", " "), "needs a title"),
        (("task", "add", "demo", "T", "--patch", "/no/such.patch"), "cannot read"),
        # ~user of no such user: expanduser raises RuntimeError, not OSError.
        (("task", "add", "demo", "T", "--patch", "~no-such-user-0/p"), "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    orch: Callable[..., Any], make_repo: Callable[..., Path], args: tuple[str, ...], needle: str
) -> None:
    orch("repo", "add", "demo", str(make_repo()))
    result = orch(*args, code=2)
    assert needle in result.output
    assert "Traceback" not in result.output
    # Nothing half-written: no task row and no task folder appeared.
    assert orch("task", "list", "--json") == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--stages", "development,qa"), "unknown stage 'qa'"),
        (("--stages", "development"), "cannot be left out"),
        (("--agent", "testing=patch"), "cannot do testing"),
        (("--agent", "deploy=staging-runner"), "only do the deploy-staging"),
        (("--agent", "development=gpt"), "unknown agent 'gpt'"),
        (("--health-url", "http://10.0.0.1/health"), "loopback"),
        (("--main", "trunk"), "does not exist"),
        (("--test-cmd", "pytest 'unterminated"), "cannot split"),
    ],
)
def test_repo_add_refuses_bad_input(
    orch: Callable[..., Any], make_repo: Callable[..., Path], extra: tuple[str, ...], needle: str
) -> None:
    result = orch("repo", "add", "demo", str(make_repo()), *extra, code=2)
    assert needle in result.output
    assert orch("repo", "list", "--json") == []


def test_repo_add_refuses_non_git_and_duplicates(
    orch: Callable[..., Any], make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not the top of a git repository" in orch("repo", "add", "x", str(plain), code=2).output
    assert "no such directory" in orch("repo", "add", "x", str(tmp_path / "nope"), code=2).output
    # A name the system refuses to look up (ENAMETOOLONG) is a usage error too.
    too_long = orch("repo", "add", "x", "x" * 5000, code=2).output
    assert "cannot be read" in too_long
    assert "File name too long" in too_long
    nobody = "~no-such-user-0/repo"
    assert "cannot be read" in orch("repo", "add", "x", nobody, code=2).output
    other = make_repo()
    for option in ("--sandbox-ro", "--sandbox-rw"):
        for bad in (nobody, "/" + "x" * 5000):
            said = orch("repo", "add", "x", str(other), option, bad, code=2).output
            assert "cannot be read" in said, (option, bad[:20], said)
    repo = make_repo()
    orch("repo", "add", "demo", str(repo))
    assert "already registered" in orch("repo", "add", "demo", str(repo), code=2).output
    assert (
        "prefix DEMO is used"
        in orch("repo", "add", "demo2", str(repo), "--prefix", "demo", code=2).output
    )


def test_status_and_db_upgrade(
    orch_on_empty: Callable[..., Any], make_repo: Callable[..., Path]
) -> None:
    orch = orch_on_empty
    up = orch("db", "upgrade", "--json")
    assert up["from"] is None
    assert up["to"]
    again = orch("db", "upgrade", "--json")
    assert again["from"] == again["to"] == up["to"]
    orch("repo", "add", "demo", str(make_repo()))
    orch("task", "add", "demo", "T")
    st = orch("status", "--json")
    assert st["tasks"] == [{"stage": "development", "state": "active", "count": 1}]
    assert st["repos"] == ["demo"]


def _spend(engine: sa.Engine, key: str, cost: float, *, days_ago: float = 0, **job: Any) -> None:
    """The task's one job finished ``days_ago``, having cost ``cost``."""
    with engine.begin() as conn:
        task = queries.get_task(conn, key)
        assert task is not None
        (first,) = queries.list_jobs(conn, task_id=task.id)
        finished = time.time() - days_ago * 86_400
        queries.update_job(
            conn,
            first.id,
            state="finished",
            outcome="completed",
            started_at=finished - 1,
            finished_at=finished,
            cost_usd=cost,
            **job,
        )


@pytest.fixture
def spent(
    orch: Callable[..., Any],
    make_repo: Callable[..., Path],
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> sa.Engine:
    """Budgets of $0.001; four tasks that spent $0.0004 and $0.001 today, $0.30 and (now
    cancelled) $0.50 two days ago."""
    monkeypatch.setenv("ORCH_LLM_BUDGET_PER_TASK_USD", "0.001")
    monkeypatch.setenv("ORCH_LLM_BUDGET_PER_DAY_USD", "0.001")
    orch("repo", "add", "demo", str(make_repo()))
    for title in ("cheap", "at the budget", "dear, long ago", "cancelled"):
        orch("task", "add", "demo", title)
    _spend(engine, "DEMO-1", 0.0004, tokens_in=1200, tokens_out=345)
    _spend(engine, "DEMO-2", 0.001, tokens_in=10, tokens_out=20)
    _spend(engine, "DEMO-3", 0.3, days_ago=2, tokens_in=1_000_000, tokens_out=2_000)
    _spend(engine, "DEMO-4", 0.5, days_ago=2)
    orch("task", "cancel", "DEMO-4")
    return engine


def test_task_show_has_each_jobs_cost_and_tokens(
    orch: Callable[..., Any], spent: sa.Engine
) -> None:
    shown = orch("task", "show", "DEMO-1", "--json")
    (job,) = shown["jobs"]
    assert (job["cost_usd"], job["tokens_in"], job["tokens_out"]) == (0.0004, 1200, 345)
    assert shown["spend"] == {
        "cost_usd": 0.0004,
        "tokens_in": 1200,
        "tokens_out": 345,
        "jobs_with_cost": 1,
        "budget_usd": 0.001,
    }
    text = orch("task", "show", "DEMO-1").stdout
    assert "LLM spend $0.0004 of $0.001 (40%), tokens 1,200 in / 345 out" in text
    assert "$0.0004" in text.split("jobs")[-1]
    assert "1,200/345" in text
    # At the budget is spent (the next LLM job would be refused): 100%.
    text = orch("task", "show", "DEMO-2").stdout
    assert "LLM spend $0.001 of $0.001 (100%), tokens 10 in / 20 out" in text
    text = orch("task", "show", "DEMO-3").stdout
    assert "LLM spend $0.30 of $0.001 (30000%), tokens 1,000,000 in / 2,000 out" in text
    # A job that reported nothing shows "-", not $0.00: the next task's job never ran.
    orch("task", "add", "demo", "not run yet")
    fresh = orch("task", "show", "DEMO-5", "--json")
    assert (fresh["jobs"][0]["cost_usd"], fresh["jobs"][0]["tokens_in"]) == (None, None)
    assert fresh["spend"]["cost_usd"] == 0
    assert (
        "LLM spend $0.00 of $0.001 (0%), tokens 0 in / 0 out"
        in orch("task", "show", "DEMO-5").stdout
    )
    assert "-/-" in orch("task", "show", "DEMO-5").stdout


def test_status_has_the_days_spend_and_the_top_tasks(
    orch: Callable[..., Any], spent: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = orch("status", "--json")["llm_spend"]
    # The day counts the jobs of the last 24 hours only: $0.0004 + $0.001.
    assert data["last_24h_usd"] == pytest.approx(0.0014)
    assert (data["last_24h_tokens_in"], data["last_24h_tokens_out"]) == (1210, 365)
    assert (data["day_budget_usd"], data["task_budget_usd"]) == (0.001, 0.001)
    # Live tasks only (not the cancelled one), most first, all their jobs.
    assert [(t["key"], t["cost_usd"]) for t in data["top_tasks"]] == [
        ("DEMO-3", 0.3),
        ("DEMO-2", 0.001),
        ("DEMO-1", 0.0004),
    ]
    assert data["top_tasks"][0]["tokens_in"] == 1_000_000
    text = orch("status").stdout
    assert "LLM spend, last 24 h: $0.0014 of $0.001 (140%), tokens 1,210 in / 365 out" in text
    assert (
        "live tasks by spend: DEMO-3 $0.30 of $0.001 (30000%), DEMO-2 $0.001 of $0.001 (100%), "
        "DEMO-1 $0.0004 of $0.001 (40%)"
    ) in text
    # A budget of 0 is no limit, and says so.
    monkeypatch.setenv("ORCH_LLM_BUDGET_PER_DAY_USD", "0")
    assert orch("status", "--json")["llm_spend"]["day_budget_usd"] is None
    assert "LLM spend, last 24 h: $0.0014 (no budget)" in orch("status").stdout


def test_bad_settings_exit_1_with_the_keys(
    orch: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_MERGE_RETEST_TIMEOUT_S", "99999")
    result = orch("status", code=1)
    assert "merge_retest_timeout_s" in result.output
