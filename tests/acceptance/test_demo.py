"""`orch demo` as a newcomer runs it; its artifacts and main show what its summary claims."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.domain import artifacts as A
from orchestrator.domain.verdicts import PARSERS

ORCH = Path(sys.executable).with_name("orch")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts and reads later: killed at teardown if a failed assert left
    them running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_summary_matches_artifacts_and_main(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
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
    # The checks that start processes (a CLI read, each commit's suite) are started here
    # and run side by side while the in-process checks run; their answers are read below.
    shown = subprocess.Popen(
        [str(ORCH), "task", "show", "DEMO-2", "--json"],
        env={**env, "ORCH_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(shown)
    log = git(repo, "log", "--format=%h %s", "main").splitlines()
    suites = {}
    for line in log[:-1]:
        sha = line.split()[0]
        check = tmp_path / f"check-{sha}"
        git(repo, "worktree", "add", "--detach", str(check), sha)
        suites[sha] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=check,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(suites[sha])

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
    out, err = shown.communicate(timeout=60)
    assert shown.returncode == 0, err
    history = json.loads(out)["history"]
    rollback = next(h for h in history if h["kind"] == "rollback")
    assert rollback["from_stage"] == "testing"
    assert any("result=FAILED" in r for r in rollback["reasons"])

    # Main holds one commit per task on top of the first, as the summary's log says, and
    # each commit's tree passes the suite.
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
    rendered_cleanly_at_80_columns(home, result)
    for sha, run in suites.items():
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, (sha, out)


def rendered_cleanly_at_80_columns(home: Path, shown: dict[str, Any]) -> None:
    """The real demo's final board (read back from its kept database) and its summary, as
    `orch demo` prints them into a file at 80 columns: each title on a line of its own,
    each suggested command whole, the tables within the width, the rollback on the board."""
    from orchestrator import demo
    from orchestrator.cli import demo_board
    from orchestrator.config import load_settings
    from orchestrator.store.bootstrap import open_engine

    engine = open_engine(load_settings(home=home, database_url=""))
    try:
        rows = demo.snapshot(engine)
    finally:
        engine.dispose()
    tasks = [demo.TaskReport(**t) for t in shown["tasks"]]
    fields = ("main_log", "problems", "seconds", "sandbox")
    result = demo.DemoResult(
        Path(shown["home"]), Path(shown["repo"]), tasks, **{f: shown[f] for f in fields}
    )
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    board = demo_board.LiveBoard(console.width, started=0.0)
    console.print(board.frame(rows))
    demo_board.print_summary(console, result, keep=True)
    lines = out.getvalue().splitlines()
    borders = set("─━│┃┏┓┗┛┌┐└┘├┤┬┴┼╇")
    for title in ("orch demo ", "summary"):
        assert any(ln.startswith(title) for ln in lines), (title, lines)
        assert not any(title in ln and borders & set(ln) for ln in lines), (title, lines)
    for _, command in demo_board.suggested_commands(result):
        assert any(command in ln for ln in lines), (command, lines)
    assert all(len(ln) <= 80 for ln in lines if borders & set(ln) or ln.startswith("DEMO-"))
    header = next(ln for ln in lines if ln.startswith("task ") and "stage" in ln)
    at = header.index("rollbacks") + len("rollbacks")
    row = next(ln for ln in lines if ln.startswith("DEMO-2 ") and "Add multiply" in ln)
    assert row[:at].split()[-1] == "1", row


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
