"""The `orch` CLI in-process: repos, tasks, history, bad input with exit 2 and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app


@pytest.fixture
def orch(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    home = tmp_path / "home"
    monkeypatch.setenv("ORCH_HOME", str(home))
    monkeypatch.setenv("ORCH_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def call(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return call


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
    repo = make_repo()
    orch("repo", "add", "demo", str(repo))
    assert "already registered" in orch("repo", "add", "demo", str(repo), code=2).output
    assert (
        "prefix DEMO is used"
        in orch("repo", "add", "demo2", str(repo), "--prefix", "demo", code=2).output
    )


def test_status_and_db_upgrade(orch: Callable[..., Any], make_repo: Callable[..., Path]) -> None:
    up = orch("db", "upgrade", "--json")
    assert up["to"]
    again = orch("db", "upgrade", "--json")
    assert again["from"] == again["to"] == up["to"]
    orch("repo", "add", "demo", str(make_repo()))
    orch("task", "add", "demo", "T")
    st = orch("status", "--json")
    assert st["tasks"] == [{"stage": "development", "state": "active", "count": 1}]
    assert st["repos"] == ["demo"]


def test_bad_settings_exit_1_with_the_keys(
    orch: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_MERGE_RETEST_TIMEOUT_S", "99999")
    result = orch("status", code=1)
    assert "merge_retest_timeout_s" in result.output
