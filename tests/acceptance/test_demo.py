"""`orch demo` as a newcomer runs it; its artifacts and main show what its summary claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.domain import artifacts as A
from orchestrator.domain.verdicts import PARSERS

ORCH = Path(sys.executable).with_name("orch")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.mark.timeout(300)
def test_demo_summary_matches_artifacts_and_main(tmp_path: Path) -> None:
    assert ORCH.exists(), f"orch is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [str(ORCH), "demo", "--keep", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["problems"] == []
    home, repo = Path(result["home"]), Path(result["repo"])
    assert home.is_relative_to(tmp_path)

    tasks = {t["key"]: t for t in result["tasks"]}
    assert sorted(tasks) == ["DEMO-1", "DEMO-2", "DEMO-3", "DEMO-4"]
    assert all(t["state"] == "done" for t in tasks.values())
    assert tasks["DEMO-2"]["rollbacks"] == 1
    assert [t["rollbacks"] for k, t in sorted(tasks.items()) if k != "DEMO-2"] == [0, 0, 0]

    # Every artifact the summary names is on disk and its verdict parses as PASS.
    for key in tasks:
        folder = home / "tasks" / key
        for name in (A.TEST_REPORT, A.STAGING_LOG, A.MERGE_REPORT, A.DEPLOY_LOG, A.MONITOR_REPORT):
            verdict = PARSERS[name]((folder / name).read_text())
            assert verdict.passed, (key, name, verdict.reasons)
    # DEMO-2's first test report was red: its rollback's reasons say so.
    shown = subprocess.run(
        [str(ORCH), "task", "show", "DEMO-2", "--json"],
        env={**env, "ORCH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    history = json.loads(shown.stdout)["history"]
    rollback = next(h for h in history if h["kind"] == "rollback")
    assert rollback["from_stage"] == "testing"
    assert any("result=FAILED" in r for r in rollback["reasons"])

    # Main holds one commit per task on top of the first, as the summary's log says, and
    # each commit's tree passes the suite.
    log = git(repo, "log", "--format=%h %s", "main").splitlines()
    assert log == result["main_log"]
    subjects = sorted(line.split(" ", 1)[1] for line in log[:-1])
    assert subjects == [
        "DEMO-1: Add subtract",
        "DEMO-2: Add multiply",
        "DEMO-3: Add divide",
        "DEMO-4: Add power",
    ]
    calc = git(repo, "show", "main:calc/__init__.py")
    assert "return a * b" in calc
    assert "return a + b\n\n\n# --- subtract" in calc  # add() untouched, mul fixed
    for line in log[:-1]:
        sha = line.split()[0]
        check = tmp_path / f"check-{sha}"
        git(repo, "worktree", "add", "--detach", str(check), sha)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=check,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, (sha, run.stdout)


def test_demo_reports_what_did_not_go_as_expected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator import demo

    # One task whose patch breaks the tests every time, while the demo expects a clean run.
    broken = demo.DemoTask(
        "Break add",
        [{"calc/__init__.py": "subtract|def add(a, b):\n    return 0\n"}],
        expect_rollbacks=0,
    )
    monkeypatch.setattr(demo, "TASKS", [broken])
    result = demo.run_demo(tmp_path / "demo", deadline_s=120)
    assert not result.ok
    (task,) = result.tasks
    assert task.state == "blocked"
    assert any("rollbacks, expected 0" in p for p in task.problems)
    assert any("not on main" in p for p in task.problems)
