"""`orch demo --forge` as a user runs it; what the forge's git, the tasks and the CI's logs hold
is what its summary claims: issues in, pull requests out, one red check sent back and fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain import artifacts as A
from orchestrator.domain.verdicts import PARSERS

ORCH = Path(sys.executable).with_name("orch")
TITLES = {"DEMO-1": "Add subtract", "DEMO-2": "Add multiply", "DEMO-3": "Add divide"}
TITLES["DEMO-4"] = "Add power"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout


class Started:
    """Processes started at once and read later: the checks that start a process (CLI
    reads, a suite, the CI script) run side by side while the test asserts on the rest."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def kill_left(self) -> None:
        """Those a failed assert left running."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    yield s
    s.kill_left()


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A started process, waited for."""
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def orch_json(started: Started, env: dict[str, str], home: Path, *args: str) -> Any:
    """`orch ARGS --json` started now; call the result for its parsed answer."""
    proc = started.start([str(ORCH), *args, "--json"], env={**env, "ORCH_HOME": str(home)})

    def answer() -> Any:
        done = finish(proc, 60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return answer


def run_ci(started: Started, tree: Path) -> subprocess.Popen[str]:
    """The repo's own CI script on a checkout, as the demo's CI bot runs it; started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return started.start(
        [sys.executable, "ci.py"], cwd=tree, env={**env, "PYTHONDONTWRITEBYTECODE": "1"}
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_forge_demo_lands_every_task_by_pull_request_after_one_red_check(
    tmp_path: Path, started: Started
) -> None:
    assert ORCH.exists(), f"orch is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["TMPDIR"] = str(tmp_path)
    env.pop("DEMO_GITHUB_TOKEN", None)
    proc = subprocess.run(
        [str(ORCH), "demo", "--forge", "--keep", "--json"],
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
    # The fake's repositories are real bare git repositories; it kept them on disk.
    forge_git = home.parent / "forge" / "git" / "demo" / "calc.git"
    assert forge_git.is_dir()
    # What the checks below run (CLI reads, the red head's suite and CI, main's CI) is
    # started here, side by side; each answer is read where it is checked.
    listed_q = orch_json(started, env, home, "task", "list")
    history_q = orch_json(started, env, home, "task", "show", "DEMO-3")
    history2_q = orch_json(started, env, home, "task", "show", "DEMO-2")
    runs = result["ci_runs"]
    red = [r for r in runs if r["conclusion"] != "success"]
    assert red, runs
    first = red[0]["sha"]
    tree = tmp_path / "red-head"
    git(forge_git, "worktree", "add", "--detach", str(tree), first)
    suite_p = started.start(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tree
    )
    ci_p = run_ci(started, tree)
    forge_main = git(forge_git, "rev-parse", "main").strip()
    main_tree = tmp_path / "main"
    git(forge_git, "worktree", "add", "--detach", str(main_tree), forge_main)
    main_ci_p = run_ci(started, main_tree)

    tasks = {t["key"]: t for t in result["tasks"]}
    assert {k: t["title"] for k, t in tasks.items()} == TITLES
    assert all(t["state"] == "done" for t in tasks.values())
    assert {k: t["rollbacks"] for k, t in tasks.items()} == {
        "DEMO-1": 0,
        "DEMO-2": 1,
        "DEMO-3": 1,
        "DEMO-4": 0,
    }

    # Each task was filed from its issue by intake, and landed through its own pull request.
    pulls = {p["key"]: p for p in result["pulls"]}
    listed = {t["key"]: t for t in listed_q()}
    for key, pull in pulls.items():
        assert listed[key]["forge_issue"] == pull["issue"]
        assert listed[key]["requester"] == "ada"
        assert pull["merged"] is True, pull
    assert sorted(p["issue"] for p in pulls.values()) == [1, 2, 3, 4]
    assert len({p["pull"] for p in pulls.values()}) == 4

    # Main here is the forge's main, which the forge's squash merges made: one commit per
    # pull request, named after it, on top of the first commit.
    assert forge_main == result["forge_main"] == git(repo, "rev-parse", "main").strip()
    log = git(forge_git, "log", "--format=%h %s", "main").splitlines()
    assert log == result["main_log"]
    assert sorted(line.split(" ", 1)[1] for line in log[:-1]) == sorted(
        f"{key}: {TITLES[key]} (#{pulls[key]['pull']})" for key in TITLES
    )
    for key in TITLES:
        folder = home / "tasks" / key
        for name in (A.TEST_REPORT, A.STAGING_LOG, A.MERGE_REPORT, A.DEPLOY_LOG, A.MONITOR_REPORT):
            verdict = PARSERS[name]((folder / name).read_text())
            assert verdict.passed, (key, name, verdict.reasons)
        merge_report = (folder / A.MERGE_REPORT).read_text()
        assert f"merged pull request #{pulls[key]['pull']} (squash)" in merge_report

    # The CI: exactly one task's heads went red, DEMO-3's first; its merged head is green.
    assert {r["pull"] for r in red} == {pulls["DEMO-3"]["pull"]}
    assert pulls["DEMO-3"]["ci"][0] == "failure"
    assert pulls["DEMO-3"]["ci"][-1] == "success"
    assert all(p["ci"] and "failure" not in p["ci"] for k, p in pulls.items() if k != "DEMO-3")
    assert all("TODO" in r["summary"] for r in red)
    # The red head is real: in the forge's git, its tests pass and the CI's lint refuses the
    # TODO, which is why the local test stage let it through. Main passes both.
    suite = finish(suite_p)
    assert suite.returncode == 0, suite.stdout
    ci = finish(ci_p)
    assert ci.returncode == 1
    assert "no TODO in the code" in ci.stdout
    # The bot's own log of that run is where it said so.
    ci_log = home.parent / "ci" / f"{red[0]['pull']}-{first[:12]}" / "ci.log"
    assert "no TODO in the code" in ci_log.read_text()
    assert finish(main_ci_p).returncode == 0
    assert "TODO" not in (main_tree / "calc" / "__init__.py").read_text()

    # DEMO-3 went back from deploy-staging to development once, the check's log in the
    # reasons its next attempt reads; DEMO-2's rollback is the test stage's, as in `orch demo`.
    history = history_q()["history"]
    (back,) = [h for h in history if h["kind"] == "rollback"]
    assert (back["from_stage"], back["to_stage"]) == ("deploy-staging", "development")
    said = "\n".join(back["reasons"])
    assert "check ci failed" in said
    assert "no TODO in the code" in said
    # Waiting for the checks was a deferral that spent nothing, not a failure.
    assert any(h["kind"] == "defer" and h["to_state"] == "deferred" for h in history)
    history2 = history2_q()["history"]
    (back2,) = [h for h in history2 if h["kind"] == "rollback"]
    assert back2["from_stage"] == "testing"
