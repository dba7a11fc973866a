"""Whether a workspace's main is an ancestor of its HEAD, read from git's files without git.

The testing stage compares a task branch with the main it started from, its merge base
with ``main``. When the workspace's ``main`` is itself an ancestor of HEAD (a branch made
on main that main has not moved past: the usual case) that merge base is main, and the
commits between are loose objects the orchestrator has just written. ``main_if_ancestor``
walks them from HEAD and answers main when it meets it; everything else is None, and the
caller asks ``git merge-base``.

Exact when it answers: if main is an ancestor of HEAD, every common ancestor is an ancestor
of main, so main is the one best common ancestor git would print. Each object read is
checked against its name (its hash), so a file cannot pass for a commit it is not. None,
and git decides, for: a ``main`` that could name a tag or another ref before the branch
(loose or packed), history git may read otherwise
(replace refs, grafts, a shallow clone, or the environment pointing git at other objects
or refs), an object that is not loose in the workspace or the store it borrows, and a
walk longer than ``_MAX_COMMITS``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.worktrees import loose_ref

# Commits walked from HEAD before leaving the question to git.
_MAX_COMMITS = 64
# Environment that makes git read objects, refs or history from elsewhere.
_HISTORY_ENV = (
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)


def main_if_ancestor(worktree: Path, main_branch: str) -> str | None:
    """The workspace's ``main`` when it is an ancestor of (or is) HEAD, else None: ask git."""
    git_dir = worktree / ".git"
    env = gitcmd.git_environment()
    if any(name in env for name in _HISTORY_ENV) or not _plain_refs(git_dir, main_branch):
        return None
    main = loose_ref(git_dir, f"refs/heads/{main_branch}")
    head = _head(git_dir)
    if main is None or head is None:
        return None
    stores = _object_stores(git_dir)
    seen: set[str] = set()
    todo = [head]
    while todo:
        sha = todo.pop()
        if sha == main:
            return main
        if sha in seen:
            continue
        seen.add(sha)
        if len(seen) > _MAX_COMMITS:
            return None
        parents = _parents(stores, sha)
        if parents is None:
            return None
        todo.extend(parents)
    return None


def _plain_refs(git_dir: Path, main_branch: str) -> bool:
    """No replace refs, grafts or shallow boundary, and nothing that ``main`` would name
    before ``refs/heads/main`` (git's order: ``<name>``, ``refs/<name>``,
    ``refs/tags/<name>``, then the branch), loose or packed. (Other packed refs do not
    matter: the refs read here are read loose or not at all.)"""
    if not git_dir.is_dir() or git_dir.is_symlink():
        return False
    before = (main_branch, f"refs/{main_branch}", f"refs/tags/{main_branch}")
    for rel in ("info/grafts", "shallow", "commondir", *before):
        if os.path.lexists(git_dir / rel):
            return False
    # An empty refs/replace (left by `git replace -d`) replaces nothing; anything in it may.
    try:
        if os.listdir(git_dir / "refs" / "replace"):
            return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        packed = (git_dir / "packed-refs").read_bytes()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for line in packed.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("#", "^")):
            continue
        _, _, name = line.partition(" ")
        if name.startswith("refs/replace/") or name in before:
            return False
    return True


def _head(git_dir: Path) -> str | None:
    try:
        text = (git_dir / "HEAD").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.startswith("ref: "):
        return loose_ref(git_dir, text.removeprefix("ref: "))
    return text if _is_sha(text) else None


def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _object_stores(git_dir: Path) -> list[Path]:
    stores = [git_dir / "objects"]
    try:
        text = (git_dir / "objects" / "info" / "alternates").read_text()
    except OSError:
        return stores
    return stores + [Path(line) for line in text.splitlines() if line.startswith("/")]


def _parents(stores: list[Path], sha: str) -> list[str] | None:
    """The parents of commit ``sha`` read from its loose object (checked against its name),
    or None: not loose in any store, not a commit, or not what its name says."""
    if not _is_sha(sha):
        return None
    for store in stores:
        try:
            raw = (store / sha[:2] / sha[2:]).read_bytes()
        except OSError:
            continue
        try:
            data = zlib.decompress(raw)
        except zlib.error:
            return None
        if hashlib.sha1(data, usedforsecurity=False).hexdigest() != sha:
            return None
        header, sep, body = data.partition(b"\0")
        if not sep or header != b"commit %d" % len(body):
            return None
        lines = body.split(b"\n")
        if not lines[0].startswith(b"tree "):
            return None
        parents = []
        for line in lines[1:]:
            if not line.startswith(b"parent "):
                break
            parent = line[7:].decode("ascii", errors="replace")
            if not _is_sha(parent):
                return None
            parents.append(parent)
        return parents
    return None
