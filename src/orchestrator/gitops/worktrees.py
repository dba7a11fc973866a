"""A git worktree per task, on branch ``orch/<KEY>``, made from the repo's main branch."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gitops.git import GitResult, git


def branch_name(key: str) -> str:
    """The task branch of task ``key``."""
    return f"orch/{key}"


def worktree_path(worktrees_root: Path, repo_name: str, key: str) -> Path:
    """``<home>/worktrees/<repo>/<KEY>``."""
    return worktrees_root / repo_name / key


@dataclass(frozen=True)
class WorktreeResult:
    """A worktree, or why none could be made (an infra problem, not the code's)."""

    path: Path | None
    created: bool
    error: str | None = None


def _explain(res: GitResult) -> str:
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def apply_patch(worktree: Path, patch: Path) -> tuple[bool, str]:
    """Apply a patch with a three-way merge; (applied?, detail)."""
    res = git(["apply", "--3way", "--whitespace=nowarn", str(patch)], worktree)
    if not res:
        detail = (res.stderr or res.stdout).strip().replace("\n", "; ")
        return False, f"the patch does not apply: {detail[:500]}"
    return True, "applied"


@contextmanager
def repo_lock(repo_path: Path) -> Iterator[None]:
    """Serialize changes to a repo's worktree list across threads and processes of a host.

    ``git worktree add`` from two workers at once races on the repository's config and
    worktree metadata and one of them fails; that is infra trouble we make ourselves.
    flock locks belong to an open file description, so threads exclude each other too.
    """
    git_dir = repo_path / ".git"
    lock_path = (git_dir if git_dir.is_dir() else repo_path) / "orch-worktrees.lock"
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_worktree(
    repo_path: Path, main_branch: str, worktrees_root: Path, repo_name: str, key: str
) -> WorktreeResult:
    """The task's worktree, created from main on first use and reused after."""
    path = worktree_path(worktrees_root, repo_name, key)
    if (path / ".git").exists():
        return WorktreeResult(path, created=False)
    with repo_lock(repo_path):
        return _add_worktree(repo_path, main_branch, path, key)


def _add_worktree(repo_path: Path, main_branch: str, path: Path, key: str) -> WorktreeResult:
    if path.exists():
        # A half-made worktree from a crash: start it again.
        shutil.rmtree(path)
        git(["worktree", "prune"], repo_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = branch_name(key)
    has_branch = bool(git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo_path))
    if has_branch:
        res = git(["worktree", "add", str(path), branch], repo_path)
    else:
        res = git(["worktree", "add", "-b", branch, str(path), main_branch], repo_path)
    if not res:
        return WorktreeResult(None, created=False, error=f"git worktree add: {_explain(res)}")
    return WorktreeResult(path, created=True)


def has_diff_vs(worktree: Path, base: str) -> tuple[bool, str]:
    """Whether the task branch changes anything against ``base`` (its merge base)."""
    res = git(["diff", "--stat", f"{base}...HEAD"], worktree)
    if not res:
        return False, f"git diff against {base} failed: {_explain(res)}"
    stat = res.stdout.strip()
    if not stat:
        return False, f"the branch has no diff against {base}"
    return True, stat.splitlines()[-1].strip()


def commit_all(worktree: Path, message: str) -> tuple[bool, str]:
    """Commit everything left in the worktree; (committed?, detail)."""
    add = git(["add", "-A"], worktree)
    if not add:
        return False, f"git add failed: {_explain(add)}"
    if git(["diff", "--cached", "--quiet"], worktree):
        return False, "nothing to commit"
    res = git(
        [
            "-c",
            "user.name=orchestrator",
            "-c",
            "user.email=orchestrator@localhost",
            "commit",
            "--no-verify",
            "-q",
            "-m",
            message,
        ],
        worktree,
    )
    if not res:
        return False, f"git commit failed: {_explain(res)}"
    return True, "committed"


def remove_worktree(repo_path: Path, worktrees_root: Path, repo_name: str, key: str) -> None:
    """Remove a task's worktree (the branch stays for the record)."""
    path = worktree_path(worktrees_root, repo_name, key)
    with repo_lock(repo_path):
        if path.exists():
            git(["worktree", "remove", "--force", str(path)], repo_path)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
        git(["worktree", "prune"], repo_path)
