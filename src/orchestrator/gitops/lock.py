"""The per-repo lock: one writer at a time of a repository's worktrees, refs and FETCH_HEAD.

Both the workspaces (``worktrees``) and the merge gate (``merge``) take it, so it lives
below both.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["repo_lock"]


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
