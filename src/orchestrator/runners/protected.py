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
"""

from __future__ import annotations

import configparser
import fnmatch
import functools
import hashlib
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.gitops import changes as gc
from orchestrator.taskdir import write_atomic

# The defaults for a Python repo. A glob without a "/" matches a file or folder of that
# name at any depth; one with a "/" is anchored at the top of the repo; a folder matches
# everything below it; "**" spans folders.
# Files that configure the suite: a new one is never "a new test file". (Of
# ``pyproject.toml`` and ``setup.cfg`` only their pytest and coverage sections are
# protected: SECTIONED_FILES.)
SUITE_CONFIG_FILES: tuple[str, ...] = (
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "tox.ini",
    "noxfile.py",
    ".coveragerc",
    "pyproject.toml",
    "setup.cfg",
)
SUITE_CONFIG_NAMES = frozenset(SUITE_CONFIG_FILES)
DEFAULT_PROTECTED_PATHS: tuple[str, ...] = (
    # the test directories and test modules
    "tests",
    "test",
    "test_*.py",
    "*_test.py",
    # the suite's configuration
    *SUITE_CONFIG_FILES,
    # CI configuration
    ".github/workflows",
    ".github/actions",
    ".gitlab-ci.yml",
    ".circleci",
    ".buildkite",
    ".travis.yml",
    "azure-pipelines.yml",
    "Jenkinsfile",
    ".ci",
)
# Files of which only the test sections are protected.
SECTIONED_FILES = frozenset({"pyproject.toml", "setup.cfg"})
# A new file is a test file when its name says so, or when it lies in a test folder.
TEST_FILE_NAMES = ("test_*", "*_test.*", "*.test.*", "*_spec.*", "*.spec.*")
TEST_DIR_NAMES = frozenset({"tests", "test", "spec", "specs", "__tests__"})

# Folders pytest never collects from by default (its ``norecursedirs``, which only the
# protected configuration could change): a file beside the branch in one of them (a
# virtualenv the agent made, a build) neither runs nor configures the suite.
UNCOLLECTED_DIRS = (
    "*.egg",
    ".*",
    "_darcs",
    "build",
    "CVS",
    "dist",
    "node_modules",
    "venv",
    "{arch}",
)

RECORD_NAME = "protected-paths.json"
# Bytes of a file outside the tree that are read (for its content id and its sections).
_MAX_STRAY_BYTES = 2_000_000
_MAX_GLOBS = 100
_MAX_GLOB_CHARS = 200
# How many changes a reason names before "and N more".
_NAMED = 20


# --------------------------------------------------------------------------- globs


def _translate(glob: str) -> str:
    """A glob as a regular expression over "/"-separated paths ("**" spans folders)."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                if glob.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The expression of one protected-path glob (see ``DEFAULT_PROTECTED_PATHS``)."""
    anchored = glob.startswith("/") or "/" in glob.strip("/")
    body = _translate(glob.strip("/"))
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}(?:/.*)?$", re.DOTALL)


def matches(glob: str, path: str) -> bool:
    """Whether the repo-relative ``path`` is under the protected-path ``glob``."""
    return compile_glob(glob).match(path) is not None


def protected_by(globs: Sequence[str], path: str) -> str | None:
    """The first glob that protects ``path``, or None."""
    for glob in globs:
        if matches(glob, path):
            return glob
    return None


def parse_globs(values: Sequence[str] | str) -> list[str]:
    """``--protected-paths`` values (repeatable, each may be a comma list), checked; ``[]``
    means "the defaults". Raises ValueError naming the bad value."""
    given = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for value in given:
        for raw in value.split(","):
            glob = raw.strip()
            if not glob:
                continue
            problem = None
            if len(glob) > _MAX_GLOB_CHARS:
                problem = f"at most {_MAX_GLOB_CHARS} characters"
            elif any(ord(c) < 32 or ord(c) == 127 for c in glob):
                problem = "no control characters"
            elif ".." in PurePosixPath(glob.strip("/")).parts:
                problem = "relative to the top of the repo, without '..'"
            elif glob.strip("/") in ("", "**", "*"):
                problem = "that would protect every file (a change could not touch any)"
            if problem is None:
                try:
                    compile_glob(glob)
                except re.error as exc:
                    problem = f"not a glob: {exc}"
            if problem is not None:
                msg = f"--protected-paths {glob!r}: {problem}"
                raise ValueError(msg)
            if glob not in out:
                out.append(glob)
    if len(out) > _MAX_GLOBS:
        msg = f"--protected-paths: at most {_MAX_GLOBS} globs (got {len(out)})"
        raise ValueError(msg)
    return out


def globs_of(options: Mapping[str, object] | None) -> tuple[tuple[str, ...], str]:
    """(globs, whose): the repo's ``protected_paths`` option, else the defaults.

    A stored value that is not a list of strings is not read as "nothing protected": the
    defaults hold, and ``whose`` says so.
    """
    raw = (options or {}).get("protected_paths")
    if raw is None:
        return DEFAULT_PROTECTED_PATHS, "the default protected paths"
    if isinstance(raw, list) and raw and all(isinstance(g, str) and g for g in raw):
        return tuple(raw), "the repo's protected paths"
    return DEFAULT_PROTECTED_PATHS, "the default protected paths (the repo's are malformed)"


def is_test_file(path: str) -> bool:
    """Whether a new file at ``path`` is a test file: a test name, or in a test folder."""
    parts = PurePosixPath(path).parts
    name = parts[-1] if parts else path
    if name in SUITE_CONFIG_NAMES:
        return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in TEST_FILE_NAMES):
        return True
    return any(part in TEST_DIR_NAMES for part in parts[:-1])


# --------------------------------------------------------------------------- sections


def suite_sections(name: str, text: str) -> dict[str, Any] | None:
    """The pytest and coverage sections of a ``pyproject.toml`` or ``setup.cfg``, as
    parsed data; None when the text cannot be read as such a file."""
    if name == "pyproject.toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return None
        tool = data.get("tool")
        if not isinstance(tool, dict):
            return {}
        return {f"tool.{k}": tool[k] for k in ("pytest", "coverage") if k in tool}
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return {
        s: dict(parser.items(s))
        for s in parser.sections()
        if s in ("tool:pytest", "pytest") or s.startswith("coverage:")
    }


def _canonical(data: object) -> str:
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class ProtectedChange:
    """A change to a protected path that a human must accept."""

    path: str
    kind: str  # modified, deleted, added, untracked
    detail: str = ""
    # What the branch has there (a blob id, a digest of the sections or of the file,
    # "deleted"): part of the fingerprint, so a later change is a new change.
    content: str = ""

    def __str__(self) -> str:
        return f"{self.path} ({self.kind}{': ' + self.detail if self.detail else ''})"

    def as_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "kind": self.kind,
            "detail": self.detail,
            "content": self.content,
        }


@dataclass(frozen=True)
class Entry:
    """A path to judge: what the branch did to it (``A``, ``M``, ``D``, ``T``; ``?``: in
    the workspace, not in the branch) and the ids of its old and new contents."""

    status: str
    path: str
    old_id: str | None = None
    new_id: str | None = None
    old_mode: str = ""
    new_mode: str = ""


Reader = Callable[[str], str | None]


def _kind(entry: Entry) -> str:
    if entry.status == "?":
        return "untracked"
    if entry.old_id is None:
        return "added"
    if entry.new_id is None:
        return "deleted"
    return "modified"


def _section_change(entry: Entry, name: str, read: Reader) -> ProtectedChange | None:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    unreadable: list[str] = []
    if entry.old_id is not None:
        text = read(entry.old_id)
        parsed = None if text is None else suite_sections(name, text)
        if parsed is None:
            unreadable.append("main's")
        else:
            old = parsed
    if entry.new_id is not None:
        text = read(entry.new_id)
        parsed = None if text is None else suite_sections(name, text)
        if parsed is None:
            unreadable.append("the branch's")
        else:
            new = parsed
    if unreadable:
        # Fail closed: a file that cannot be parsed may hold any section.
        detail = f"{' and '.join(unreadable)} cannot be read as {name}: taken as a change"
        return ProtectedChange(entry.path, _kind(entry), detail, entry.new_id or "deleted")
    if old == new:
        return None
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ", ".join(f"[{k}]" for k in keys)
    return ProtectedChange(
        entry.path, _kind(entry), f"its test sections {shown}", _digest(_canonical(new))
    )


def classify(entries: Iterable[Entry], globs: Sequence[str], read: Reader) -> list[ProtectedChange]:
    """The protected changes among ``entries``, in path order (pure, but for ``read``,
    which gives a content id's text, or None when it cannot be read)."""
    found: list[ProtectedChange] = []
    for entry in sorted(entries, key=lambda e: e.path):
        if protected_by(globs, entry.path) is None:
            continue
        name = PurePosixPath(entry.path).name
        if name in SECTIONED_FILES:
            change = _section_change(entry, name, read)
            if change is not None:
                found.append(change)
            continue
        kind = _kind(entry)
        if kind in ("added", "untracked"):
            if is_test_file(entry.path):
                continue  # a new test file: allowed, and it counts like any test
            why = "configures the suite" if name in SUITE_CONFIG_NAMES else "not a test file"
            if kind == "untracked":
                why += "; in the workspace but not in the branch (untracked or ignored)"
            found.append(ProtectedChange(entry.path, kind, why, entry.new_id or ""))
        elif kind == "deleted":
            found.append(ProtectedChange(entry.path, kind, "", "deleted"))
        else:
            same_type = entry.old_mode[:2] == entry.new_mode[:2]
            if entry.old_id == entry.new_id and same_type:
                continue  # only the executable bit changed
            found.append(ProtectedChange(entry.path, kind, "", entry.new_id or ""))
    return found


def fingerprint(found: Sequence[ProtectedChange]) -> str:
    """What an approval is bound to: every change, its kind and its content on the branch."""
    rows = sorted((c.path, c.kind, c.content) for c in found)
    return _digest(_canonical(rows))


def name_changes(found: Sequence[ProtectedChange]) -> str:
    """``a (modified), b (added: ...)``, at most twenty, then how many more."""
    shown = ", ".join(str(c) for c in found[:_NAMED])
    more = len(found) - _NAMED
    return f"{shown} and {more} more" if more > 0 else shown


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


def uncollected(path: str) -> bool:
    """Whether ``path`` lies in a folder pytest does not collect from by default."""
    folders = PurePosixPath(path).parts[:-1]
    return any(fnmatch.fnmatchcase(f, pattern) for f in folders for pattern in UNCOLLECTED_DIRS)


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
    ``workspace_files``, those of files in the workspace that are not in the branch)."""
    globs, whose = globs_of(options)
    diff, why = gc.diff_paths(worktree, base, head)
    if diff is None:
        return ProtectedCheck(whose=whose, base=base, problem=why)
    entries = [
        Entry(d.status, d.path, d.old_blob, d.new_blob, d.old_mode, d.new_mode) for d in diff
    ]
    texts: dict[str, str | None] = {}
    if workspace_files:
        strays, why = gc.stray_paths(worktree)
        if strays is None:
            return ProtectedCheck(whose=whose, base=base, problem=why)
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
    base = gc.merge_base(worktree, main_branch, "HEAD")
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
