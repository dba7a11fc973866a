"""Protected test paths: what a task may not change in its own suite without a human.

The agent writes the code and the tests that judge it, so the tests, their configuration
and CI are protected paths (``DEFAULT_PROTECTED_PATHS``, or the repo's own list:
``orch repo set NAME --protected-paths GLOBS``). Before the testing stage runs anything,
the task branch's diff against the main it started from is held against them:

- a protected path the branch modifies or deletes, a new file under them that is not a
  test file, and a new file that configures the suite (``conftest.py``, ``pytest.ini``
  ...) are *protected changes*: the task waits at testing for a human (``orch task approve
  KEY``), and the suite does not run;
- for ``pyproject.toml`` and ``setup.cfg`` only the test sections count (pytest's and
  coverage's), compared as parsed data, so a dependency bump is not held;
- a new test file is not a protected change (new tests count as any test does);
- a file in the workspace that is not in the branch at all (untracked, or hidden by a
  ``.gitignore``) is judged as if the branch added it: an ignored ``conftest.py`` still
  configures the suite (unless it lies where pytest never collects, ``UNCOLLECTED_DIRS``:
  a virtualenv, a build).

An approval covers exactly the changes it was shown (their ``fingerprint``: paths, kinds
and contents on the branch); the branch changing them again waits for a human again.
With the approval, the suite runs with the files as the branch has them. The hold and the
approvals are kept in the task folder (``protected-paths.json``), which no sandboxed
process can see. Everything here is deterministic: globs, git's own diff, tomllib and
configparser; no LLM.

Which paths are protected is ``protected_globs``; what counts as a protected change is
``protected_changes`` (pure). This module makes the check on a branch (git's diff, the
files beside it) and keeps the hold and the approvals.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.gitops import ancestry
from orchestrator.gitops import changes as gc
from orchestrator.gitops import git as gitcmd
from orchestrator.runners.protected_changes import (
    Entry,
    ProtectedChange,
    classify,
    fingerprint,
    name_changes,
)
from orchestrator.runners.protected_globs import globs_of, protected_by, uncollected
from orchestrator.taskdir import write_atomic

RECORD_NAME = "protected-paths.json"
# Bytes of a file outside the tree that are read (for its content id and its sections).
_MAX_STRAY_BYTES = 2_000_000


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class ProtectedCheck:
    """What a branch changes in its protected paths, and whether a human accepted it."""

    changes: tuple[ProtectedChange, ...] = ()
    fingerprint: str = ""
    whose: str = ""
    # The commit the branch was compared with (the main it started from).
    base: str | None = None
    approved: bool = False
    # Why the check could not be made (git failed): the caller fails closed.
    problem: str | None = None

    @property
    def held(self) -> bool:
        """The branch has protected changes no human accepted: the suite must not run."""
        return self.problem is None and bool(self.changes) and not self.approved


def _read_stray(worktree: Path, path: str) -> tuple[str, str | None]:
    """(content id, text) of a file in the workspace, read from outside the sandbox: only
    a regular file of its own is read (a FIFO or a symlink is named by what it is)."""
    full = worktree / path
    try:
        st = os.lstat(full)
    except OSError as exc:
        return f"unreadable:{exc.errno}", None
    if stat.S_ISLNK(st.st_mode):
        return f"symlink:{os.readlink(full)}", None
    if not stat.S_ISREG(st.st_mode):
        return f"not-a-file:{stat.S_IFMT(st.st_mode)}", None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(_MAX_STRAY_BYTES + 1)
    except OSError as exc:
        return f"unreadable:{exc.errno}", None
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if len(raw) > _MAX_STRAY_BYTES:
        return digest, None
    try:
        return digest, raw.decode("utf-8")
    except UnicodeDecodeError:
        return digest, None


def check_paths(
    worktree: Path,
    base: str,
    head: str,
    options: Mapping[str, object] | None,
    *,
    workspace_files: bool,
) -> ProtectedCheck:
    """The protected changes ``head`` makes against ``base`` (and, with
    ``workspace_files``, those of files in the workspace that are not in the branch).

    ``base`` and ``head`` are commits the caller holds; the same one twice (the files
    beside a tree, alone) is no change at all, and git is not asked for that diff."""
    globs, whose = globs_of(options)

    def changed() -> tuple[list[gc.PathChange] | None, str]:
        return ([], "") if base == head else gc.diff_paths(worktree, base, head)

    def beside() -> tuple[list[str] | None, str]:
        return gc.stray_paths(worktree) if workspace_files else ([], "")

    if base != head and workspace_files:
        # Both only read: git is asked for the diff and the files beside the tree at once.
        (diff, why), (strays, stray_why) = gitcmd.at_once(changed, beside)
    else:
        (diff, why), (strays, stray_why) = changed(), beside()
    if diff is None:
        return ProtectedCheck(whose=whose, base=base, problem=why)
    entries = [
        Entry(d.status, d.path, d.old_blob, d.new_blob, d.old_mode, d.new_mode) for d in diff
    ]
    texts: dict[str, str | None] = {}
    if workspace_files:
        if strays is None:
            return ProtectedCheck(whose=whose, base=base, problem=stray_why)
        for path in strays:
            if uncollected(path) or protected_by(globs, path) is None:
                continue
            content, text = _read_stray(worktree, path)
            texts[content] = text
            entries.append(Entry("?", path, None, content))

    def read(content: str) -> str | None:
        if content in texts:
            return texts[content]
        return gc.read_blob(worktree, content)

    found = classify(entries, globs, read)
    return ProtectedCheck(tuple(found), fingerprint(found), whose, base)


def check_task_branch(
    worktree: Path, main_branch: str, options: Mapping[str, object] | None, task_dir: Path
) -> ProtectedCheck:
    """The testing stage's check: the branch (HEAD) against the main it started from (its
    merge base with ``main_branch``), files beside it in the workspace included, and
    whether a human approved exactly these changes."""
    # Main itself when HEAD descends from it, read from the workspace's files; else git.
    base = ancestry.main_if_ancestor(worktree, main_branch) or gc.merge_base(
        worktree, main_branch, "HEAD"
    )
    if base is None:
        return ProtectedCheck(
            whose=globs_of(options)[1],
            problem=f"cannot find where the branch left {main_branch} (git merge-base failed)",
        )
    found = check_paths(worktree, base, "HEAD", options, workspace_files=True)
    if found.problem is not None or not found.changes:
        return found
    approved = approval_of(task_dir, found.fingerprint) is not None
    return ProtectedCheck(found.changes, found.fingerprint, found.whose, base, approved)


def hold_reasons(found: ProtectedCheck, key: str) -> list[str]:
    """Why the task waits for a human, and what approving does."""
    return [
        f"awaiting approval: the branch changes {found.whose}: {name_changes(found.changes)}",
        f"the suite did not run; `orch task approve {key}` accepts exactly these changes "
        f"(the tests then run with them as the branch has them, and the gates still run)",
    ]


def approved_note(found: ProtectedCheck) -> str:
    """The reason a run gives for protected changes it runs with."""
    listed = name_changes(found.changes)
    return f"protected changes approved by a human, run as the branch has them: {listed}"


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    """``protected-paths.json`` in the task folder: the hold now waiting, and approvals."""

    hold: dict[str, Any] | None = None
    approved: list[dict[str, Any]] = field(default_factory=list)


def record_path(task_dir: Path) -> Path:
    """Where a task's hold and approvals are kept."""
    return task_dir / RECORD_NAME


def read_record(task_dir: Path) -> Record:
    """The task's record; an unreadable one approves nothing (and holds nothing)."""
    try:
        data = json.loads(record_path(task_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Record()
    if not isinstance(data, dict):
        return Record()
    hold = data.get("hold") if isinstance(data.get("hold"), dict) else None
    approved = [a for a in data.get("approved") or [] if isinstance(a, dict)]
    return Record(hold, approved)


def _write(task_dir: Path, record: Record) -> None:
    text = json.dumps({"hold": record.hold, "approved": record.approved}, indent=2) + "\n"
    write_atomic(record_path(task_dir), text)


def note_hold(task_dir: Path, found: ProtectedCheck, now: float) -> None:
    """Remember the changes the task now waits on, for ``orch task approve``."""
    record = read_record(task_dir)
    record.hold = {
        "fingerprint": found.fingerprint,
        "changes": [c.as_dict() for c in found.changes],
        "at": now,
    }
    _write(task_dir, record)


def clear_hold(task_dir: Path) -> None:
    """The branch no longer waits on a human (nothing protected changed, or approved)."""
    record = read_record(task_dir)
    if record.hold is not None:
        record.hold = None
        _write(task_dir, record)


def pending_hold(task_dir: Path) -> dict[str, Any] | None:
    """The hold the task waits on, or None."""
    return read_record(task_dir).hold


def approve_hold(task_dir: Path, actor: str, now: float) -> list[str] | None:
    """A human accepts the changes the task waits on: the hold becomes an approval.
    Returns the changes, named, or None when there was no hold."""
    record = read_record(task_dir)
    hold = record.hold
    if hold is None or not isinstance(hold.get("fingerprint"), str):
        return None
    record.approved.append({**hold, "by": actor, "approved_at": now})
    record.hold = None
    _write(task_dir, record)
    return [str(_change(c)) for c in hold.get("changes") or [] if isinstance(c, dict)]


def _change(data: Mapping[str, Any]) -> ProtectedChange:
    return ProtectedChange(
        str(data.get("path", "")),
        str(data.get("kind", "")),
        str(data.get("detail", "")),
        str(data.get("content", "")),
    )


def approval_of(task_dir: Path, print_: str) -> list[ProtectedChange] | None:
    """The changes of the approval bound to fingerprint ``print_``, or None."""
    for entry in read_record(task_dir).approved:
        if entry.get("fingerprint") == print_:
            return [_change(c) for c in entry.get("changes") or [] if isinstance(c, dict)]
    return None


def snapshot(task_dir: Path) -> bytes | None:
    """The record file as it is (None: none), to put back when a transaction fails."""
    try:
        return record_path(task_dir).read_bytes()
    except OSError:
        return None


def restore(task_dir: Path, saved: bytes | None) -> None:
    """Put the record file back as ``snapshot`` found it."""
    if saved is None:
        record_path(task_dir).unlink(missing_ok=True)
    else:
        write_atomic(record_path(task_dir), saved)
