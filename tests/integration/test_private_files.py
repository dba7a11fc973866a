"""What the orchestrator writes under its home is its user's alone: folders 0700, files 0600.

A deploy's log holds what the deploy printed with the user's credentials in its
environment; an agent's log its CLI's output; a prompt the task's text. On a shared machine
another local user must read none of them. Each test sets the process umask to 0o022 (the
common default, which leaves what ``open``/``mkdir`` make readable by everyone) and restores
it, so the modes it checks are the ones the code asks for, on any machine.

Real parts: the real worker running real jobs (``test_engine.Harness``; agents and suites in
the sandbox, as the default settings run them), real git, a real SQLite file.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import proc_group, repo_ops, sandbox, task_ops
from orchestrator.config import load_settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.gitops import commits, worktrees
from orchestrator.store import make_engine

try:
    from test_engine import FULL, STAGES, Harness
    from test_llm_backends import make_job, offline_env
except ImportError:  # imported as tests.integration.test_private_files
    from tests.integration.test_engine import FULL, STAGES, Harness
    from tests.integration.test_llm_backends import make_job, offline_env  # noqa: F401

ORCH = Path(sys.executable).with_name("orch")
# CI installs bubblewrap and sets ORCH_TEST_REQUIRE_SANDBOX=1: there a missing bubblewrap
# fails the pipeline's test instead of skipping it.
NEEDS_BWRAP = pytest.mark.skipif(
    not sandbox.probe().ok and not os.environ.get("ORCH_TEST_REQUIRE_SANDBOX"),
    reason=f"bubblewrap cannot run here: {sandbox.probe().detail}",
)
PATCH = (
    b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    b"@@ -1 +1,2 @@\n demo\n+hello\n"
)


@pytest.fixture
def umask_022(set_umask: Callable[[int], int]) -> None:
    set_umask(0o022)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _agents_own(rel: tuple[str, ...]) -> bool:
    """Whether ``rel`` is what a job or git wrote itself, inside a folder given to it: a
    job's home or out folder (``runs/<job>-home/...``, ``runs/<job>-out/...``, a suite's
    ``runs/<log>.out/...``) or a workspace's checkout (``worktrees/<repo>/<KEY>/...``).
    Those modes are the job's or git's; the folders themselves are ours, and checked."""
    if rel[0] == "worktrees":
        return len(rel) > 3
    return len(rel) > 4 and rel[2] == "runs" and rel[3].endswith(("-home", "-out", ".out"))


def not_private(home: Path) -> list[str]:
    """Every folder under ``home`` (and itself) not 0700, every file not 0600, but those an
    agent or git made inside the folders given to them."""
    found = [] if _mode(home) == 0o700 else [f"{oct(_mode(home))} ."]
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).parts
        if _agents_own(rel):
            continue
        st = os.lstat(path)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            found.append(f"{oct(stat.S_IMODE(st.st_mode))} {'/'.join(rel)}")
    return found


@pytest.fixture
def h(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path], umask_022: None
) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


@NEEDS_BWRAP
def test_a_pipelines_logs_prompts_and_folders_are_the_users_alone(
    h: Harness, make_repo: Callable[..., Path]
) -> None:
    # Every agent and suite runs in the sandbox (the default): folders of 0700 must not
    # keep a job from writing its out folder, its home and its workspace.
    assert h.settings.sandbox
    # DEMO-1 runs every stage to done (the merge gate's re-test included); DEMO-2 is sent
    # back by its tests until its budget is spent, so its workspace stays; PATCHED-1's
    # developer is the patch backend, which writes its own lines to its log.
    h.plan = {"DEMO-2:testing:*": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo(FULL)
    repo_ops.add_repo(
        h.engine,
        "patched",
        make_repo(files={"README.md": "demo\n"}),
        h.repo_input(
            stages=STAGES,
            agents=["development=patch", *(f"{s}={h.agent()}" for s in STAGES[1:])],
            test_cmd=f"{sys.executable} -c pass",
        ),
    )
    done = h.add_task()
    blocked = h.add_task(patch=PATCH)
    patched = task_ops.add_task(h.engine, h.settings, "patched", "P", "body", PATCH).task.key
    h.run_until_idle()
    assert h.task(done).state == "done"
    assert (h.task(blocked).stage, h.task(blocked).state) == ("testing", "blocked")
    assert h.task(patched).state == "done"

    home = h.settings.home
    logs = sorted(home.glob("tasks/*/runs/*.log"))
    # What is checked is there: each job's log, the merge gate's re-test log, prompts, a
    # job's home and out folder, the attached patch, the kept workspace.
    assert any("deploy-command" in p.name for p in logs), logs
    assert any(p.name.startswith("merge-retest-") for p in logs), logs
    assert any(p.name.endswith("-development-patch.log") for p in logs), logs
    assert list(home.glob("tasks/*/runs/*-prompt.md"))
    assert list(home.glob("tasks/*/runs/*-home"))
    assert list(home.glob("tasks/*/runs/*-out"))
    assert (home / "tasks" / blocked / "patches" / "001.patch").is_file()
    assert (h.settings.worktrees_dir / "demo" / blocked / ".git").is_dir()
    assert not_private(home) == []


def test_a_new_home_its_database_and_token_are_the_users_alone(
    tmp_path: Path, umask_022: None
) -> None:
    # `orch init` on a home that is not there yet (nor its parent): the database (SQLite at
    # <home>/orchestrator.db), the tasks folder, the API token. Its own process, which
    # inherits the umask.
    home = tmp_path / "state" / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_HOME"] = str(home)
    done = subprocess.run(
        [str(ORCH), "init", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in home.iterdir()} >= {"orchestrator.db", "api-token", "tasks"}
    assert _mode(tmp_path / "state") == 0o700
    # SQLite makes the WAL and shared-memory files beside the database, with its mode,
    # while a connection has it open.
    engine = make_engine(load_settings(home=home).effective_database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA user_version = 7")
            assert {"orchestrator.db-wal", "orchestrator.db-shm"} <= {
                p.name for p in home.iterdir()
            }
            assert not_private(home) == []
    finally:
        engine.dispose()


def test_a_run_log_and_a_refused_runs_log_are_the_users_alone(
    tmp_path: Path, umask_022: None
) -> None:
    runs = tmp_path / "tasks" / "DEMO-1" / "runs"
    ran = proc_group.run(
        proc_group.ExecuteRequest(
            argv=[sys.executable, "-c", "print('deploy: token accepted')"],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", "")},
            log_path=runs / "1-deploy-deploy.log",
        )
    )
    assert ran, ran
    refused = proc_group.refuse(
        proc_group.ExecuteRequest(
            argv=["true"], cwd=tmp_path, env={}, log_path=runs / "2-testing-x.log"
        ),
        "no sandbox",
    )
    assert refused.start_error == "no sandbox"
    assert "token accepted" in (runs / "1-deploy-deploy.log").read_text()
    assert {p: oct(_mode(p)) for p in runs.iterdir()} == {
        runs / "1-deploy-deploy.log": "0o600",
        runs / "2-testing-x.log": "0o600",
    }
    assert [oct(_mode(p)) for p in (tmp_path / "tasks", runs.parent, runs)] == ["0o700"] * 3


def test_a_fresh_starts_carried_diff_is_the_users_alone(
    tmp_path: Path, make_repo: Callable[..., Path], umask_022: None
) -> None:
    # git writes the branch's old change (`git diff --output`): the task's code, kept in
    # runs/ for the next attempt. The workspaces' folder is made by the same call.
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "home" / "worktrees"
    made = worktrees.ensure_worktree(repo, "main", root, "demo", "DEMO-1")
    assert made.path is not None, made.error
    (made.path / "feature.txt").write_text("unpublished\n")
    assert commits.commit_all(made.path, "DEMO-1: work")
    carry = tmp_path / "home" / "tasks" / "DEMO-1" / "runs" / "3-carried.diff"
    fresh = worktrees.rebuild_from_main(repo, "main", root, "demo", "DEMO-1", carry_to=carry)
    assert fresh.error is None, fresh.error
    assert "+unpublished" in carry.read_text()
    assert not_private(tmp_path / "home") == []


def test_an_llm_jobs_prompt_config_and_log_are_the_users_alone(
    make_job: Callable[..., Any], umask_022: None
) -> None:
    # A Codex job: its prompt, the config the orchestrator writes in the job's home, its
    # out folder, and the log's lines of a CLI that could not start (none is installed
    # here: nothing but the orchestrator wrote in the job's home).
    job = make_job([], codex_command="/nonexistent/codex")
    result = job.run("codex")
    assert result.outcome is OutcomeKind.NOT_STARTED, result.reasons
    home = job.settings.home
    job_home = home / "tasks" / job.task.key / "runs" / f"{job.job.id}-home"
    assert (job_home / "codex" / "config.toml").is_file()
    assert "not started" in job.log_text
    assert not_private(home) == []
    inside = {str(p.relative_to(job_home)): oct(_mode(p)) for p in sorted(job_home.rglob("*"))}
    assert inside == {"codex": "0o700", "codex/config.toml": "0o600"}


# A row of docs/security.md's attack table (rendered by test_security_doc.py).
DEFENDED = [
    {
        "attack": "another local user of the machine reads a job's log (a deploy's output, "
        "printed with the user's credentials in its environment) or the orchestrator's "
        "database",
        "before": "with the usual umask (022) every job's log `runs/<job>-<stage>-<agent>.log`, "
        "the SQLite database with its `-wal` and `-shm` were 0644, and every folder (the "
        "home, `tasks/<KEY>/`, `runs/`, a job's home and out folder, `patches/`, "
        "`worktrees/`) 0755: readable by all (prompts, patches, artifacts and the API token "
        "were 0600 already)",
        "now": "every folder the orchestrator makes under its home is 0700 (a workspace's "
        "folder too; what git checks out in it has git's modes) and every file it writes "
        "0600, asked for when made (`orchestrator/private_files.py`), whatever the umask; a "
        "sandboxed job still writes its out folder, home and workspace (it runs as the same "
        "user)",
        "test": "tests/integration/test_private_files.py",
    },
]
