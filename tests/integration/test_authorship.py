"""Who the task's commit on main is by, and what becomes of ``orch/<KEY>`` once it is done.

The merge gate's commit is authored by the task's author when the task names one, else by
the git user configured in the user's clone, else (neither exists) by the branch's first
author. The agents that wrote the branch stay in ``Co-authored-by:`` trailers; the
committer is the orchestrator; ``Orch-Task: <KEY>`` is the last trailer. A done task's
branch is deleted from the user's clone when main holds it, and only then.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from merge_helpers import CALC, TESTS, MergeBed, fill_slot, run_git

from orchestrator import repo_ops, task_ops
from orchestrator.config import Settings, load_settings
from orchestrator.engine.worker import Worker
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops import merge as gm
from orchestrator.gitops import squash, worktrees
from orchestrator.store import make_engine, queries, upgrade
from orchestrator.store.rows import TaskRow

MakeRepo = Callable[..., Path]
# The identity merge_helpers.git_env gives every commit the tests make: the "agent".
AGENT = "Test Developer <dev@tests.invalid>"
# The identity conftest.make_repo configures in the user's clone.
REPO_USER = "Orchestrator Tests <tests@orchestrator.invalid>"


def slot(slot_name: str, name: str, value: int) -> dict[str, str]:
    return fill_slot(CALC, TESTS, slot_name, name, value)


def add_task(bed: MergeBed, title: str = "a task", author: str | None = None) -> TaskRow:
    with bed.engine.begin() as conn:
        return queries.insert_task(
            conn,
            repo_id=bed.repo.id,
            title=title,
            body="body",
            stage="deploy-staging",
            now=time.time(),
            author=author,
        )


def who(repo: Path, sha: str) -> dict[str, Any]:
    """Author, committer and trailers of ``sha``, as git itself parses them."""
    fmt = "%an <%ae>%n%cn <%ce>"
    author, committer = run_git(repo, "log", "-1", f"--format={fmt}", sha).splitlines()
    trailers = run_git(repo, "log", "-1", "--format=%(trailers:only,unfold)", sha)
    return {
        "author": author,
        "committer": committer,
        "trailers": [t for t in trailers.splitlines() if t.strip()],
    }


@pytest.fixture
def bed(tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo) -> MergeBed:
    return MergeBed(tmp_path, engine, make_repo)


# --------------------------------------------------------------------------- the author


def test_the_tasks_author_authors_main_and_the_agent_co_authors(bed: MergeBed) -> None:
    task = add_task(bed, author="Ada Lovelace <ada@example.invalid>")
    bed.develop(task, slot("a", "a", 2), "a")
    bed.develop(task, {"notes.txt": "why\n"}, "notes")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    merged = bed.main_sha()
    got = who(bed.repo_path, merged)
    assert got["author"] == "Ada Lovelace <ada@example.invalid>"
    assert got["committer"] == "orchestrator <orchestrator@localhost>"
    # One trailer per distinct branch author; the task's key stays the last trailer.
    assert got["trailers"] == [f"Co-authored-by: {AGENT}", f"Orch-Task: {task.key}"]
    assert gm.task_of_commit(bed.repo_path, merged) == task.key


def test_without_a_task_author_the_repos_git_user_authors_main(bed: MergeBed) -> None:
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")

    assert bed.gate(task).fields["merge_status"] == "MERGED"

    got = who(bed.repo_path, bed.main_sha())
    assert got["author"] == REPO_USER
    assert got["committer"] == "orchestrator <orchestrator@localhost>"
    assert got["trailers"] == [f"Co-authored-by: {AGENT}", f"Orch-Task: {task.key}"]


def test_each_distinct_agent_is_one_trailer_and_the_author_is_none(bed: MergeBed) -> None:
    task = add_task(bed, author=AGENT)
    wt = bed.worktree(task)
    bed.develop(task, slot("a", "a", 2), "a")
    for i, ident in enumerate(("Codex <codex@agents.invalid>", "Codex <CODEX@agents.invalid>")):
        name, email = ident[:-1].split(" <")
        (wt / f"n{i}.txt").write_text(f"{i}\n")
        run_git(wt, "add", "-A")
        run_git(wt, "-c", f"user.name={name}", "-c", f"user.email={email}", "commit", "-qm", "n")
        # git_env's GIT_AUTHOR_* would win over -c user.*: amend the author explicitly.
        run_git(wt, "commit", "-q", "--amend", "--no-edit", f"--author={ident}")

    assert bed.gate(task).fields["merge_status"] == "MERGED"

    got = who(bed.repo_path, bed.main_sha())
    assert got["author"] == AGENT
    # The author is not their own co-author; one address (any case) is one trailer.
    assert got["trailers"] == [
        "Co-authored-by: Codex <codex@agents.invalid>",
        f"Orch-Task: {task.key}",
    ]


def test_with_no_user_anywhere_the_first_branch_author_stays(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No global or system configuration, and the clone's own user removed: git would make
    # an address up from the host name; the gate must not use one.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    run_git(bed.repo_path, "config", "--unset", "user.name")
    run_git(bed.repo_path, "config", "--unset", "user.email")
    assert squash.configured_user(bed.repo_path) is None
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")

    assert bed.gate(task).fields["merge_status"] == "MERGED"

    got = who(bed.repo_path, bed.main_sha())
    assert got["author"] == AGENT
    assert got["trailers"] == [f"Orch-Task: {task.key}"]


def test_a_malformed_task_author_is_refused_not_guessed(bed: MergeBed) -> None:
    task = add_task(bed, author="no address here")
    bed.develop(task, slot("a", "a", 2), "a")
    old_main = bed.main_sha()

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "INFRA"
    assert any("Name <email>" in r for r in verdict.reasons), verdict.reasons
    assert bed.main_sha() == old_main


# --------------------------------------------------------------------------- the branch


def branches(repo: Path) -> set[str]:
    return set(run_git(repo, "branch", "--format=%(refname:short)").split())


def test_a_merged_branch_is_deleted_with_its_worktree(bed: MergeBed) -> None:
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.gate(task).fields["merge_status"] == "MERGED"
    assert f"orch/{task.key}" in branches(bed.repo_path)

    done = worktrees.remove_worktree(
        bed.repo_path, bed.settings.worktrees_dir, "demo", task.key, merged_into="main"
    )

    assert done is not None
    assert done.status == "deleted", done.detail
    assert branches(bed.repo_path) == {"main"}
    assert not worktrees.worktree_path(bed.settings.worktrees_dir, "demo", task.key).exists()


def test_a_branch_with_work_main_lacks_is_never_deleted(bed: MergeBed) -> None:
    task = add_task(bed)
    tip = bed.develop(task, slot("a", "a", 2), "a")  # never merged

    kept = worktrees.remove_worktree(
        bed.repo_path, bed.settings.worktrees_dir, "demo", task.key, merged_into="main"
    )

    assert kept is not None
    assert kept.status == "kept"
    assert "not on main" in kept.detail
    assert run_git(bed.repo_path, "rev-parse", f"refs/heads/orch/{task.key}").strip() == tip


def test_a_branch_moved_after_the_checks_is_not_deleted(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.gate(task).fields["merge_status"] == "MERGED"
    worktrees.remove_worktree(bed.repo_path, bed.settings.worktrees_dir, "demo", task.key)
    real_git = gitcmd.git
    late: list[str] = []

    def someone_commits_first(args: Sequence[str], cwd: Path, **kwargs: Any) -> Any:
        if list(args[:2]) == ["update-ref", "--stdin"] and not late:
            # Between the "is it on main?" check and the deletion, someone commits on it.
            tree = run_git(bed.repo_path, "rev-parse", "main^{tree}").strip()
            parent = f"refs/heads/orch/{task.key}"
            sha = run_git(bed.repo_path, "commit-tree", tree, "-p", parent, "-m", "late").strip()
            run_git(bed.repo_path, "update-ref", parent, sha)
            late.append(sha)
        return real_git(args, cwd, **kwargs)

    monkeypatch.setattr(gitcmd, "git", someone_commits_first)
    result = worktrees.remove_worktree(
        bed.repo_path, bed.settings.worktrees_dir, "demo", task.key, merged_into="main"
    )

    assert result is not None
    assert result.status == "error", result.detail
    assert run_git(bed.repo_path, "rev-parse", f"refs/heads/orch/{task.key}").strip() == late[0]


def test_a_merged_branch_that_is_checked_out_is_kept(bed: MergeBed) -> None:
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.gate(task).fields["merge_status"] == "MERGED"
    other = bed.tmp / "elsewhere"
    worktrees.remove_worktree(bed.repo_path, bed.settings.worktrees_dir, "demo", task.key)
    run_git(bed.repo_path, "worktree", "add", "-q", str(other), f"orch/{task.key}")

    kept = worktrees.remove_worktree(
        bed.repo_path, bed.settings.worktrees_dir, "demo", task.key, merged_into="main"
    )

    assert kept is not None
    assert kept.status == "kept"
    assert "checked out" in kept.detail
    assert f"orch/{task.key}" in branches(bed.repo_path)


def test_without_merged_into_the_branch_stays(bed: MergeBed) -> None:
    task = add_task(bed)
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.gate(task).fields["merge_status"] == "MERGED"

    assert (
        worktrees.remove_worktree(bed.repo_path, bed.settings.worktrees_dir, "demo", task.key)
        is None
    )
    assert f"orch/{task.key}" in branches(bed.repo_path)


# --------------------------------------------------------------------------- the engine

PATCH = (
    b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    b"@@ -1 +1,2 @@\n demo\n+hello\n"
)


class Pipeline:
    """A repo run by the real worker: patch developer, test-runner, staging-runner, gate."""

    def __init__(self, tmp_path: Path, db_url: str, repo: Path, developer: str = "patch") -> None:
        self.settings: Settings = load_settings(
            home=tmp_path / "home",
            database_url=db_url,
            infra_retry_backoff_s=0.05,
            developer_retry_budget=0,
            agent_timeout_s=60,
            kill_grace_s=0.5,
            poll_interval_s=0.2,
            heartbeat_interval_s=0.5,
            job_lease_s=10,
        )
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self.repo_path = repo
        ok = f"{sys.executable} -c pass"
        repo_ops.add_repo(
            self.engine,
            "demo",
            repo,
            repo_ops.RepoInput(
                stages=["development", "testing", "deploy-staging"],
                agents=[f"development={developer}"],
                test_cmd=ok,
                staging_cmd=ok,
            ),
        )

    def add_task(self, patch: bytes = PATCH) -> str:
        return task_ops.add_task(self.engine, self.settings, "demo", "T", "body", patch).task.key

    def run_until_idle(self) -> None:
        Worker(self.settings, self.engine).run(until_idle=True)

    def jobs(self, key: str) -> list[Any]:
        with self.engine.connect() as conn:
            return queries.list_jobs(conn, task_id=self.task(key).id)

    def task(self, key: str) -> TaskRow:
        with self.engine.connect() as conn:
            got = queries.get_task(conn, key)
        assert got is not None
        return got


@pytest.fixture
def pipe(tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield p
    p.engine.dispose()


def test_a_done_task_leaves_no_branch_behind(pipe: Pipeline) -> None:
    key = pipe.add_task()
    pipe.run_until_idle()
    assert pipe.task(key).state == "done", pipe.task(key).reasons
    assert branches(pipe.repo_path) == {"main"}
    assert run_git(pipe.repo_path, "show", "main:README.md") == "demo\nhello\n"


def test_keep_branches_keeps_a_done_tasks_branch(pipe: Pipeline) -> None:
    repo_ops.set_repo(pipe.engine, "demo", repo_ops.RepoInput(keep_branches=True))
    key = pipe.add_task()
    pipe.run_until_idle()
    assert pipe.task(key).state == "done"
    assert branches(pipe.repo_path) == {"main", f"orch/{key}"}
    tip = run_git(pipe.repo_path, "rev-parse", f"orch/{key}").strip()
    assert tip == run_git(pipe.repo_path, "rev-parse", "main").strip()


def test_a_blocked_tasks_branch_stays(pipe: Pipeline) -> None:
    bad = pipe.add_task(PATCH.replace(b" demo\n", b" nothing like this\n"))
    pipe.run_until_idle()
    assert pipe.task(bad).state == "blocked"
    assert branches(pipe.repo_path) == {"main", f"orch/{bad}"}


def test_a_cancelled_tasks_branch_stays(
    tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo
) -> None:
    # A developer that works until it is killed: the task is cancelled while it runs, and
    # the worker removes its worktree. Its branch is still main's tip, so "on main" alone
    # would let it go; only a done task's branch is deleted.
    sleeper = f"command:{sys.executable} -c 'import time; time.sleep(120)'"
    pipe = Pipeline(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}), sleeper)
    key = pipe.add_task()
    worker = Worker(pipe.settings, pipe.engine)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wt = worktrees.worktree_path(pipe.settings.worktrees_dir, "demo", key)
        wait_for(lambda: (wt / ".git").exists() and pipe.jobs(key)[0].state == "running")
        task_ops.cancel_task(pipe.engine, key)
        wait_for(lambda: all(j.state == "finished" for j in pipe.jobs(key)) and not wt.exists())
    finally:
        worker.stop()
        thread.join(timeout=60)
        pipe.engine.dispose()
    assert pipe.task(key).state == "cancelled"
    assert branches(pipe.repo_path) == {"main", f"orch/{key}"}


def wait_for(what: Callable[[], bool], deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while not what():
        if time.monotonic() > end:
            pytest.fail("the condition was not reached")
        time.sleep(0.05)
