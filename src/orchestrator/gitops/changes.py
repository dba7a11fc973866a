"""What a task branch changes against the main it started from, as git records it.

Read-only: the raw diff between two commits (paths, modes, blob ids), a blob's bytes, and
the files in a workspace that are not in its tree (untracked or ignored). The protected-path
check (``runners/protected.py``) decides what these mean; git runs only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.git import BYPRODUCT_EXCLUDES

# A blob read for its text (a pyproject.toml, a test module) larger than this is not read:
# the caller treats it as unreadable, so as changed.
MAX_BLOB_BYTES = 2_000_000
_NULL_SHA = "0" * 40


@dataclass(frozen=True)
class PathChange:
    """One path the diff names: its status (``A``, ``M``, ``D``, ``T``), modes and blobs.

    A blob is None on the side where the path does not exist (added: no old blob)."""

    status: str
    path: str
    old_mode: str
    new_mode: str
    old_blob: str | None
    new_blob: str | None


def _explain(res: gitcmd.GitResult) -> str:
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def merge_base(worktree: Path, a: str, b: str) -> str | None:
    """The best common ancestor of ``a`` and ``b``, or None (none, or git failed)."""
    res = gitcmd.git(["merge-base", a, b], worktree)
    return res.stdout.strip() or None if res else None


def diff_paths(worktree: Path, base: str, head: str) -> tuple[list[PathChange] | None, str]:
    """Every path that differs between ``base`` and ``head``: (changes, "") or (None, why).

    No rename detection (a rename is a deletion and an addition), no external diff or
    textconv driver, full blob ids. Paths as their bytes (``surrogateescape``): they are
    matched against the protected globs, and a name that is not UTF-8 is still the
    agent's file (shown with ``gitcmd.shown``).
    """
    res = gitcmd.git(
        [
            "diff",
            "--raw",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--no-abbrev",
            base,
            head,
            "--",
        ],
        worktree,
        errors="surrogateescape",
    )
    if not res:
        return None, f"git diff {base[:12]} {head[:12]} failed: {_explain(res)}"
    fields = res.stdout.split("\0")
    changes: list[PathChange] = []
    i = 0
    while i + 1 < len(fields):
        meta, path = fields[i], fields[i + 1]
        i += 2
        parts = meta.lstrip(":").split()
        if len(parts) != 5:
            return None, f"git diff: unexpected line {meta!r}"
        old_mode, new_mode, old_blob, new_blob, status = parts
        changes.append(
            PathChange(
                status=status[:1],
                path=path,
                old_mode=old_mode,
                new_mode=new_mode,
                old_blob=None if old_blob == _NULL_SHA else old_blob,
                new_blob=None if new_blob == _NULL_SHA else new_blob,
            )
        )
    return changes, ""


def read_blob(worktree: Path, blob: str) -> str | None:
    """A blob's text (UTF-8), or None: too large, not text, or git could not read it."""
    size = gitcmd.git(["cat-file", "-s", blob], worktree)
    if not size or not size.stdout.strip().isdigit():
        return None
    if int(size.stdout.strip()) > MAX_BLOB_BYTES:
        return None
    try:
        res = gitcmd.git(["cat-file", "blob", blob], worktree)
    except ValueError:  # not UTF-8: the text-mode read cannot decode it
        return None
    return res.stdout if res else None


def stray_paths(worktree: Path) -> tuple[list[str] | None, str]:
    """Files in the workspace that are not in its tree, untracked or ignored alike (the
    suites' by-products left out): (paths, "") or (None, why). Paths as their bytes
    (``surrogateescape``): each is matched, then read where it is."""
    res = gitcmd.git(
        ["ls-files", "-z", "--others", "--", ".", *BYPRODUCT_EXCLUDES],
        worktree,
        errors="surrogateescape",
    )
    if not res:
        return None, f"git ls-files --others failed: {_explain(res)}"
    return [p for p in res.stdout.split("\0") if p], ""
