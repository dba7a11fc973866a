"""What counts as a protected change: a branch's paths judged against the protected globs.

Each ``Entry`` is one path the branch touched (or a file beside it in the workspace), with
the ids of its old and new contents. ``classify`` names the ``ProtectedChange`` among them:
a protected path modified or deleted, a new file under them that is not a test file, a new
file that configures the suite; of ``pyproject.toml`` and ``setup.cfg`` only the test
sections, compared as parsed data (tomllib, configparser; an unreadable one fails closed).
``fingerprint`` is what an approval is bound to. Pure, but for the ``Reader`` that gives a
content id's text.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from orchestrator.gitops.git import shown
from orchestrator.runners.protected_globs import (
    SECTIONED_FILES,
    SUITE_CONFIG_NAMES,
    is_test_file,
    protected_by,
)

# How many changes a reason names before "and N more".
_NAMED = 20


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
        # The path is the agent's to name (its bytes, ``surrogateescape``): shown, never
        # written as it is into a reason.
        return f"{shown(self.path)} ({self.kind}{': ' + self.detail if self.detail else ''})"

    def as_dict(self) -> dict[str, str]:
        # The path as it is: ``json.dumps`` escapes a surrogate (ASCII), and the record
        # gives the exact name back to ``approval_of``.
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
