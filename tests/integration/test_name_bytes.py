"""File names the agent chose, in bytes that are not UTF-8: every git read of them ends in a
verdict with a reason, never a crash.

The agent names every file of its workspace, and a name is bytes: git prints it as it is
(``diff --check``, ``ls-files -z``, ``diff --raw -z``, warnings on stderr, and every
listing when a user's ``core.quotePath`` is false). A name that must be matched or found
again (a protected path, a file beside the tree) is read as its bytes (surrogateescape, as
``os.fsdecode``); one that is only shown is shown with U+FFFD, so that no reason, record,
row or response holds a string that cannot be written as UTF-8. Real git repositories;
where cheap, the whole pipeline with the real worker and sandboxed test-runner.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.gitops import commits, worktrees
from orchestrator.gitops import git as gitcmd

try:
    from merge_helpers import run_git
except ImportError:  # imported as tests.integration.test_name_bytes
    from tests.integration.merge_helpers import run_git

DEBRIS = "<<<<<<< ours\na = 1\n=======\na = 2\n>>>>>>> theirs\n"
REPLACED = "\ufffd"


def name(raw: bytes) -> str:
    """A file name as Python's file system calls take it (``os.fsdecode``)."""
    return os.fsdecode(raw)


def _workspace(repo: Path, root: Path, key: str = "DEMO-1") -> Path:
    made = worktrees.ensure_worktree(repo, "main", root, "demo", key)
    assert made.error is None, made.error
    assert made.path is not None
    return made.path


def _git(cwd: Path, *args: str) -> str:
    return run_git(cwd, *args).strip()


def _writable(text: str) -> str:
    """``text``, checked to be writable as UTF-8 (a file, a row, a response)."""
    text.encode("utf-8")
    return text


# --------------------------------------------------------------------------- git's output


def test_a_warning_naming_a_file_that_is_not_utf8_does_not_crash_a_commit(
    tmp_path: Path, make_repo: Any
) -> None:
    # `git add -A` warns on stderr, the name as its bytes, of an embedded repository.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    inner = ws / name(b"\xfbsub")
    inner.mkdir()
    subprocess.run(["git", "init", "-q", str(inner)], check=True)
    (inner / "a.txt").write_text("a\n")
    run_git(inner, "add", "a.txt")
    run_git(inner, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "x")
    (ws / "work.txt").write_text("work\n")
    done = commits.commit_all(ws, "DEMO-1: work", main="main")
    assert done.status == "committed", done.detail


def test_shown_names_are_writable_and_say_what_they_hide() -> None:
    assert gitcmd.shown(name(b"a\xff/b.py")) == f"a{REPLACED}/b.py"
    # A line break or an escape in a name must not start a line of its own in a reason.
    assert gitcmd.shown("a\nb\x1b[31m.py") == "a\\nb\\x1b[31m.py"
    assert gitcmd.shown("caf\u00e9/\u202etxt.py") == "caf\u00e9/\\u202etxt.py"
    assert gitcmd.name_paths(["ok.py", name(b"\xfe.py")]) == f"ok.py, {REPLACED}.py"
