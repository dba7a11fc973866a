"""The installed `orch` command, run as a newcomer runs it from the README."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ORCH = Path(sys.executable).with_name("orch")


def run_orch(home: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    assert ORCH.exists(), (
        f"orch is not installed next to {sys.executable}: pip install -e '.[test]'"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full_env.update({"ORCH_HOME": str(home), **(env or {})})
    proc = subprocess.run(
        [str(ORCH), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=home.parent,
    )
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def test_newcomer_flow(tmp_path: Path, make_repo: Callable[..., Path]) -> None:
    home = tmp_path / "home"
    repo = make_repo(files={"README.md": "hello\n"})
    assert "orchestrator home" in run_orch(home, "init")
    run_orch(home, "repo", "add", "demo", str(repo), "--test-cmd", "python -m pytest -q")
    out = run_orch(home, "task", "add", "demo", "Add a greeting; rm -rf / $(whoami)")
    assert out.strip() == "DEMO-1"
    tasks = json.loads(run_orch(home, "task", "list", "--json"))
    assert tasks[0]["key"] == "DEMO-1"
    # Shell metacharacters are stored as text, never run.
    assert tasks[0]["title"] == "Add a greeting; rm -rf / $(whoami)"
    assert (home / "orchestrator.db").exists()
    assert "unknown repo" in run_orch(home, "task", "add", "nope", "x", code=2)
    # python -m orchestrator is the same CLI.
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("orch ")


def test_usage_error_exit_code(tmp_path: Path) -> None:
    out = run_orch(tmp_path / "home", "task", "frobnicate", code=2)
    assert "No such command" in out
