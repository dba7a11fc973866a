"""A git worktree per task, on branch ``orch/<KEY>``, made from the repo's main branch."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator import taskdir
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.git import GitResult


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
    notes: tuple[str, ...] = ()  # how it was made (e.g. which main it started from)


def _explain(res: GitResult) -> str:
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def patch_present(worktree: Path, patch: Path) -> bool:
    """Whether the worktree already holds the patch's changes (it would apply in reverse)."""
    return bool(gitcmd.git(["apply", "--reverse", "--check", str(patch)], worktree))


def apply_patch(worktree: Path, patch: Path) -> tuple[bool, str]:
    """Apply a patch with a three-way merge; (applied?, detail)."""
    res = gitcmd.git(["apply", "--3way", "--whitespace=nowarn", str(patch)], worktree)
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
    repo_path: Path,
    main_branch: str,
    worktrees_root: Path,
    repo_name: str,
    key: str,
    *,
    remote: str | None = None,
) -> WorktreeResult:
    """The task's worktree, created from a fresh main on first use and reused after.

    With a ``remote``, main is fetched first (and local main fast-forwarded to it), so a
    new task starts from what the remote has, not from a stale local copy.
    """
    path = worktree_path(worktrees_root, repo_name, key)
    if (path / ".git").exists():
        return WorktreeResult(path, created=False)
    with repo_lock(repo_path):
        return _add_worktree(repo_path, main_branch, path, key, remote)


def _start_point(repo_path: Path, main_branch: str, remote: str | None) -> tuple[str, list[str]]:
    """Where a new task branch starts: the fetched remote main, else local main."""
    if not remote:
        return main_branch, []
    # merge.py imports this module (for repo_lock); importing it here avoids the cycle.
    from orchestrator.gitops import merge

    fresh = merge.refresh_main_locked(repo_path, main_branch, remote)
    if fresh.status == "ok" and fresh.sha is not None:
        return fresh.sha, [fresh.detail]
    # The merge gate rebases onto the remote's main anyway: a stale start costs a bigger
    # rebase later, not correctness, so an unreachable remote does not stop the task.
    return main_branch, [
        f"fetch of {remote} failed, started from local {main_branch}: {fresh.detail}"
    ]


def _add_worktree(
    repo_path: Path, main_branch: str, path: Path, key: str, remote: str | None
) -> WorktreeResult:
    if path.exists():
        # A half-made worktree from a crash: start it again.
        shutil.rmtree(path)
        gitcmd.git(["worktree", "prune"], repo_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = branch_name(key)
    has_branch = bool(
        gitcmd.git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo_path)
    )
    notes: list[str] = []
    if has_branch:
        res = gitcmd.git(["worktree", "add", str(path), branch], repo_path)
    else:
        start, notes = _start_point(repo_path, main_branch, remote)
        res = gitcmd.git(["worktree", "add", "-b", branch, str(path), start], repo_path)
    if not res:
        return WorktreeResult(None, created=False, error=f"git worktree add: {_explain(res)}")
    return WorktreeResult(path, created=True, notes=tuple(notes))


def has_diff_vs(worktree: Path, base: str) -> tuple[bool, str]:
    """Whether the task branch changes anything against ``base`` (its merge base)."""
    res = gitcmd.git(["diff", "--stat", f"{base}...HEAD"], worktree)
    if not res:
        return False, f"git diff against {base} failed: {_explain(res)}"
    stat = res.stdout.strip()
    if not stat:
        return False, f"the branch has no diff against {base}"
    return True, stat.splitlines()[-1].strip()


def commit_all(worktree: Path, message: str) -> tuple[bool, str]:
    """Commit everything left in the worktree; (committed?, detail)."""
    add = gitcmd.git(["add", "-A"], worktree)
    if not add:
        return False, f"git add failed: {_explain(add)}"
    if gitcmd.git(["diff", "--cached", "--quiet"], worktree):
        return False, "nothing to commit"
    res = gitcmd.git(
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


def _drop_worktree_dir(path: Path) -> None:
    # Deleting the directory and then `git worktree prune` does what `worktree remove`
    # would, without the force flag it needs for a dirty tree: gitops/ holds no force flag
    # at all, which a test checks.
    shutil.rmtree(path, ignore_errors=True)


def remove_worktree(repo_path: Path, worktrees_root: Path, repo_name: str, key: str) -> None:
    """Remove a task's worktree (the branch stays for the record)."""
    path = worktree_path(worktrees_root, repo_name, key)
    with repo_lock(repo_path):
        if path.exists():
            _drop_worktree_dir(path)
        gitcmd.git(["worktree", "prune"], repo_path)


def prune_orphan_worktrees(
    repo_path: Path, worktrees_root: Path, repo_name: str, live_keys: Iterable[str]
) -> list[str]:
    """Remove ``<root>/<repo>/<KEY>`` worktrees of tasks not in ``live_keys``; the keys removed.

    The caller passes the keys that must be kept (tasks that exist and are neither done nor
    cancelled; a blocked task keeps its worktree for the human). Only entries named like a
    task key are touched: anything else in the folder is not ours to delete.
    """
    keep = set(live_keys)
    folder = worktrees_root / repo_name
    removed: list[str] = []
    with repo_lock(repo_path):
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                name = entry.name
                if name in keep or not entry.is_dir() or not taskdir.valid_key(name):
                    continue
                _drop_worktree_dir(entry)
                removed.append(name)
        gitcmd.git(["worktree", "prune"], repo_path)
    return removed
