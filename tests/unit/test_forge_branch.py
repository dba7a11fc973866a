"""The one push that may replace a branch replaces a task branch and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.forge.branch import push_task_branch, task_branch_ref


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    work = tmp_path / "work"
    _git(tmp_path, "init", "-q", "-b", "main", str(work))
    _git(work, "config", "user.email", "t@example.org")
    _git(work, "config", "user.name", "T")
    (work / "a").write_text("1\n")
    _git(work, "add", "a")
    _git(work, "commit", "-q", "-m", "one")
    _git(work, "remote", "add", "origin", str(remote))
    _git(work, "push", "-q", "origin", "main")
    return work, remote


def test_a_task_branch_is_replaced_even_when_rewritten(clone: tuple[Path, Path]) -> None:
    work, remote = clone
    first = _git(work, "rev-parse", "HEAD")
    assert push_task_branch(work, "origin", "DEMO-1", first, main="main")[0]
    (work / "a").write_text("2\n")
    _git(work, "commit", "-q", "--amend", "-am", "rewritten")
    second = _git(work, "rev-parse", "HEAD")
    ok, detail = push_task_branch(work, "origin", "DEMO-1", second, main="main")
    assert ok, detail
    assert _git(remote, "rev-parse", "refs/heads/orch/DEMO-1") == second


@pytest.mark.parametrize(
    "key",
    ["../main", "DEMO-1:refs/heads/main", "main", "DEMO-1 ", "demo-1", "DEMO-0", ""],
)
def test_anything_but_a_task_key_is_refused_and_main_never_moves(
    clone: tuple[Path, Path], key: str
) -> None:
    work, remote = clone
    main_before = _git(remote, "rev-parse", "refs/heads/main")
    (work / "a").write_text("3\n")
    _git(work, "commit", "-q", "--amend", "-am", "not for main")
    rewritten = _git(work, "rev-parse", "HEAD")
    ok, detail = push_task_branch(work, "origin", key, rewritten, main="main")
    assert not ok
    assert "not a task branch" in detail
    assert task_branch_ref(key) is None
    assert _git(remote, "rev-parse", "refs/heads/main") == main_before


def test_a_task_named_like_main_is_refused(clone: tuple[Path, Path]) -> None:
    work, _remote = clone
    sha = _git(work, "rev-parse", "HEAD")
    ok, _detail = push_task_branch(work, "origin", "DEMO-1", sha, main="orch/DEMO-1")
    assert not ok
