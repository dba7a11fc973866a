"""A test bed for the merge gate: a real repo (and bare remote), a real database, real suites.

``MergeBed`` registers the repo and its tasks in the database, makes each task's worktree
the way the engine does, lets a test play the developer (commit files in the worktree),
the testing stage (run the test-runner, record the validated tree) and the engine (run
the gate with a ``GateContext``), and reads back main, the remote and the merge report.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator.config import Settings, load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Budgets, Stage, TaskView, Transition, next_transition
from orchestrator.domain.verdicts import Verdict
from orchestrator.gates import merge_gate, validated
from orchestrator.gates.context import GateContext
from orchestrator.gitops import worktrees
from orchestrator.runners.base import RunContext
from orchestrator.runners.test_runner import run_tests
from orchestrator.store import merges, queries
from orchestrator.store.rows import RepoRow, TaskRow

# The project's suite needs no plugin; this interpreter's test extras (hypothesis,
# schemathesis, anyio) would be imported on every run of it, seconds each on a busy machine.
PYTEST = [sys.executable, "-m", "pytest", "-q", "--disable-plugin-autoload"]
PIPELINE = (Stage.DEVELOPMENT, Stage.TESTING, Stage.DEPLOY_STAGING)

# A small project whose files the tasks edit: each task has its own slot in the same two
# files, far enough apart that git merges them without a conflict.
_FILLER = "\n".join(f"# filler {i}" for i in range(4))
CALC = f'''"""A tiny library that tasks extend, each in its own slot."""


def base():
    return 1


def keep_me():
    return "marker"


# slot-a
{_FILLER}

# slot-b
{_FILLER}

# slot-c
{_FILLER}

# slot-d
'''
TESTS = f"""import calc


def test_base():
    assert calc.base() == 1


# slot-a
{_FILLER}

# slot-b
{_FILLER}

# slot-c
{_FILLER}

# slot-d
"""
PROJECT: dict[str, str] = {
    ".gitignore": "__pycache__/\n",
    "calc.py": CALC,
    "test_calc.py": TESTS,
}


def fill_slot(calc: str, tests: str, slot: str, name: str, value: int) -> dict[str, str]:
    """The project's two files with ``slot`` holding function ``name`` and its test."""
    code = f"def {name}():\n    return {value}\n"
    test = f"def test_{name}():\n    assert calc.{name}() == {value}\n"
    return {
        "calc.py": calc.replace(f"# slot-{slot}\n", code, 1),
        "test_calc.py": tests.replace(f"# slot-{slot}\n", test, 1),
    }


# Set in the environment of every git the tests themselves run, so a spy on process starts
# can tell them from the git calls of the code under test.
HELPER_MARK = "ORCH_TEST_HELPER_GIT"


def git_env() -> dict[str, str]:
    """Our environment without GIT_* (a hook's GIT_DIR would redirect us) plus an identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {HELPER_MARK: "1"},
        GIT_AUTHOR_NAME="Test Developer",
        GIT_AUTHOR_EMAIL="dev@tests.invalid",
        GIT_COMMITTER_NAME="Test Developer",
        GIT_COMMITTER_EMAIL="dev@tests.invalid",
    )
    return env


def run_git(cwd: Path, *args: str, check: bool = True) -> str:
    """``git <args>`` in ``cwd``; its stdout."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        msg = f"git {' '.join(args)} failed in {cwd}: {proc.stderr}"
        raise AssertionError(msg)
    return proc.stdout


def commit_files(cwd: Path, files: Mapping[str, str | None], message: str) -> str:
    """Write (or, for None, delete) ``files`` and commit them; the new HEAD."""
    for rel, text in files.items():
        target = cwd / rel
        if text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    run_git(cwd, "add", "-A")
    run_git(cwd, "commit", "-q", "-m", message)
    return run_git(cwd, "rev-parse", "HEAD").strip()


def read_at(cwd: Path, rev: str, path: str) -> str:
    """The text of ``path`` at ``rev``."""
    return run_git(cwd, "show", f"{rev}:{path}")


def status_porcelain(cwd: Path) -> str:
    """``git status --porcelain`` (untracked included)."""
    return run_git(cwd, "status", "--porcelain", "--untracked-files=all")


def suite_passes_at(repo: Path, rev: str, scratch: Path) -> tuple[bool, str]:
    """Extract ``rev``'s tree into ``scratch`` and run its suite there: (passed?, output)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev],
        cwd=repo,
        env=git_env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    scratch.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch, filter="data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [*PYTEST, "-p", "no:cacheprovider"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


class MergeBed:
    """One managed repo in a real database, with tasks, worktrees and the merge gate."""

    def __init__(
        self,
        tmp_path: Path,
        engine: sa.Engine,
        make_repo: Callable[..., Path],
        *,
        remote: bool = False,
        files: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        test_cmd: list[str] | None = None,
        name: str = "demo",
        prefix: str = "DEMO",
        **settings: Any,
    ) -> None:
        self.tmp = tmp_path
        self.engine = engine
        self.name = name
        self.repo_path = make_repo(tmp_path / "repo", files=dict(files or PROJECT))
        self.remote_path: Path | None = None
        if remote:
            self.remote_path = tmp_path / "remote.git"
            run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(self.remote_path))
            run_git(self.repo_path, "remote", "add", "origin", str(self.remote_path))
            run_git(self.repo_path, "push", "-q", "origin", "main")
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "kill_grace_s": 0.5,
            "merge_retest_timeout_s": 60,
        }
        values.update(settings)
        self.settings: Settings = load_settings(**values)
        with engine.begin() as conn:
            self.repo: RepoRow = queries.insert_repo(
                conn,
                name=name,
                path=str(self.repo_path),
                key_prefix=prefix,
                now=time.time(),
                stages=[s.value for s in PIPELINE],
                agents={},
                main_branch="main",
                remote="origin" if remote else None,
                test_cmd=test_cmd if test_cmd is not None else PYTEST,
                options=dict(options or {}),
            )

    # ---- tasks and their worktrees ----------------------------------------------------

    def add_task(self, title: str = "a task") -> TaskRow:
        with self.engine.begin() as conn:
            return queries.insert_task(
                conn,
                repo_id=self.repo.id,
                title=title,
                body="body",
                stage=Stage.DEPLOY_STAGING.value,
                now=time.time(),
            )

    def worktree(self, task: TaskRow) -> Path:
        made = worktrees.ensure_worktree(
            self.repo_path,
            "main",
            self.settings.worktrees_dir,
            self.name,
            task.key,
            remote=self.repo.remote,
        )
        assert made.path is not None, made.error
        return made.path

    def develop(self, task: TaskRow, files: Mapping[str, str | None], message: str) -> str:
        """Play the developer: commit ``files`` on the task branch, and publish it to the
        user's clone as a development job's end does."""
        workspace = self.worktree(task)
        sha = commit_files(workspace, files, f"{task.key}: {message}")
        published, detail = worktrees.publish_branch(self.repo_path, workspace, task.key)
        assert published, detail
        return sha

    def run_testing_stage(self, task: TaskRow) -> tuple[bool, str]:
        """Play the testing stage: the test-runner, then the validated-tree record."""
        wt = self.worktree(task)
        folder = self.task_dir(task)
        ctx = RunContext(
            task_key=task.key,
            repo_name=self.name,
            worktree=wt,
            artifact_dir=folder,
            log_path=folder / "runs" / f"{time.time_ns()}-testing-test-runner.log",
            env={"PATH": os.environ.get("PATH", os.defpath), "PYTHONDONTWRITEBYTECODE": "1"},
            settings=self.settings,
        )
        result = run_tests(ctx, self.repo.test_cmd)
        assert result.outcome is OutcomeKind.COMPLETED, result.reasons
        assert result.counts.get("failed") == 0, result.reasons
        return validated.record_validated_tree(
            self.engine, self.repo, wt, self.repo.test_cmd, passed_tests=result.passed_tests
        )

    # ---- the gate ---------------------------------------------------------------------

    def task_dir(self, task: TaskRow) -> Path:
        return self.settings.tasks_dir / task.key

    def context(self, task: TaskRow, **changes: Any) -> GateContext:
        with self.engine.connect() as conn:
            repo = queries.get_repo(conn, self.name)
            fresh = queries.get_task(conn, task.key)
        assert repo is not None
        assert fresh is not None
        values: dict[str, Any] = {
            "task": fresh,
            "repo": repo,
            "stage": Stage.DEPLOY_STAGING,
            "task_dir": self.task_dir(task),
            "worktree": self.worktree(task),
            "settings": self.settings,
            "engine": self.engine,
        }
        values.update(changes)
        return GateContext(**values)

    def gate(self, task: TaskRow, **changes: Any) -> Verdict:
        return merge_gate.check_branch_mergeable(self.context(task, **changes))

    def set_options(self, options: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            queries.update_repo(conn, self.name, now=time.time(), options=dict(options))

    # ---- what happened ----------------------------------------------------------------

    def main_sha(self) -> str:
        return run_git(self.repo_path, "rev-parse", "refs/heads/main").strip()

    def remote_sha(self) -> str:
        assert self.remote_path is not None
        return run_git(self.remote_path, "rev-parse", "refs/heads/main").strip()

    def main_log(self) -> list[str]:
        return run_git(self.repo_path, "rev-list", "refs/heads/main").split()

    def report(self, task: TaskRow) -> dict[str, list[str]]:
        text = (self.task_dir(task) / A.MERGE_REPORT).read_text(encoding="utf-8")
        return A.parse_keys(text)

    def results(self, task: TaskRow | None = None) -> list[merges.MergeResultRow]:
        with self.engine.connect() as conn:
            return merges.list_merge_results(conn, task_id=None if task is None else task.id)

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return merges.merge_counters(conn)

    def retest_logs(self, task: TaskRow) -> list[Path]:
        return sorted((self.task_dir(task) / "runs").glob("merge-retest-*.log"))


def decide(verdict: Verdict, *, gate_retries: int = 0, gate_budget: int = 2) -> Transition:
    """What the domain makes of a deploy-staging job that completed with ``verdict``: a
    gate's infra trouble spends the gate's own budget (gate-only retries)."""
    view = TaskView("DEMO-1", PIPELINE, developer_retries=0, gate_retries=gate_retries)
    budgets = Budgets(
        developer_retry_budget=3,
        infra_retry_budget=0,
        infra_retry_backoff_s=1.0,
        gate_retry_budget=gate_budget,
        gate_retry_backoff_s=1.0,
    )
    return next_transition(view, Stage.DEPLOY_STAGING, OutcomeKind.COMPLETED, verdict, budgets)
