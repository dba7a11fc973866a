"""A task workspace's index, read from its file without git.

Committing an attempt asks two questions of the index that git answered with a process
each: is any path unmerged (``git ls-files --unmerged``), and which paths did ``git add``
stage against HEAD, to look in only those for conflict markers (``git diff --cached
--check``). ``read_index`` reads the index file as git does; ``staged_against`` compares
two readings, one taken before ``add`` and one after it.

Only the workspace's index (a repository the orchestrator made and alone writes; inside the
sandbox its ``.git`` is read-only), and only what is fully understood here: index versions
2 and 3, entries without extended flags (no intent-to-add, no skip-worktree), names in
git's order, optional extensions only (a required one, such as a split index's ``link`` or
a sparse index's ``sdir``, is left to git), a checksum that matches (an index written
without one is left to git), a regular file of bounded size. None, and git answers, for
anything else: environment or config that moves or changes git's parts, a ``.git`` that is
a file or a link, an index that is a link, version 4, an odd size, more than
``MAX_ENTRIES`` entries (git reads those faster than Python does).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.workspace_refs import plain_config

# Environment that points git at another index, repository or object store, or sets config.
_MOVED_ENV = (
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)
# Reading costs ~1-3 us an entry here, twice an attempt; the two git processes it saves
# cost 4-12 ms on a 2-core machine: a larger index is left to git, which reads it faster.
MAX_ENTRIES = 1000
# An index larger than this is left to git, unread (1,000 entries take ~100-200 KiB).
MAX_INDEX_BYTES = 4 << 20
_HASH = 20  # SHA-1: a repository with another object format has an extension in its config
_FIXED = 62  # an entry's bytes before its name: stat data, mode, sizes, its object, flags
_EXTENDED = 0x4000
_STAGES = 0x3000
_NAME_MASK = 0x0FFF
# An entry's mode, object and flags: after ctime, mtime, dev and ino (24 bytes), and
# between them uid, gid and size (12).
_ENTRY = struct.Struct(">24xI12x20sH")


class IndexEntry(NamedTuple):
    """One staged entry: its mode (as git stores it, ``0o100644``) and object."""

    mode: int
    sha: str


@dataclass(frozen=True)
class Index:
    """An index as git reads it: its merged entries by path, whether any path is unmerged,
    and the tree it holds when its cache of trees says so for the whole index."""

    # path -> (mode, the object's 20 bytes), stage 0 only
    entries: Mapping[bytes, tuple[int, bytes]]
    unmerged: bool
    # The root of a valid cache-tree extension: ``git write-tree`` would write this tree,
    # and git itself takes it for the index's content. None: not known.
    tree: str | None


def read_index(worktree: Path) -> Index | None:
    """The index of the repository whose work tree is ``worktree``; None: ask git."""
    env = gitcmd.git_environment()
    if any(name in env for name in _MOVED_ENV):
        return None
    git_dir = worktree / ".git"
    if not git_dir.is_dir() or git_dir.is_symlink():
        return None
    if os.path.lexists(git_dir / "commondir") or not plain_config(git_dir):
        return None
    data = _read_file(git_dir / "index")
    return None if data is None else parse_index(data)


def _read_file(path: Path) -> bytes | None:
    """The bytes of a regular file, never through a link; None: not such a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_INDEX_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_INDEX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == info.st_size else None


def parse_index(data: bytes) -> Index | None:
    """An index file's bytes as git reads them; None: anything not understood here."""
    if len(data) < 12 + _HASH or data[:4] != b"DIRC":
        return None
    version = int.from_bytes(data[4:8], "big")
    count = int.from_bytes(data[8:12], "big")
    end = len(data) - _HASH
    trailer = data[end:]
    if version not in (2, 3):
        return None  # v4: names compressed against the one before
    if count > MAX_ENTRIES:
        return None
    # Git checks this only in fsck; here an index written without one (index.skipHash:
    # zeros), or torn, is left to git.
    if hashlib.sha1(data[:end], usedforsecurity=False).digest() != trailer:
        return None
    entries: dict[bytes, tuple[int, bytes]] = {}
    unmerged = False
    every_flag = 0
    at = 12
    # The loop is the cost of reading here (~1 us an entry): one unpack, one slice, one
    # insert; what is checked of every entry is checked once, after it.
    unpack = _ENTRY.unpack_from
    for _ in range(count):
        if at + _FIXED > end:
            return None
        mode, sha, flags = unpack(data, at)
        every_flag |= flags
        length = flags & _NAME_MASK
        # Version 3 keeps two more bytes of flags for an extended entry: read past them,
        # and leave the index to git below.
        fixed = _FIXED + 2 if flags & _EXTENDED else _FIXED
        start = at + fixed
        if length == _NAME_MASK:  # git stores no longer length: the name ends at a NUL
            length = data.find(b"\0", start, end) - start
            if length < 0:
                return None
        stop = start + length
        if data[stop : stop + 1] != b"\0":
            return None
        if flags & _STAGES:
            unmerged = True
        else:
            entries[data[start:stop]] = (mode, sha)
        at += (fixed + length + 8) & ~7
    if every_flag & _EXTENDED:
        return None  # intent-to-add or skip-worktree: the index is not HEAD's tree plus adds
    names = list(entries)
    # Git's order (git itself checks it only in its tests): by name, a merged entry the
    # only one of its name. (Unmerged entries are only told apart from none.)
    if b"\0" in b"".join(names) or (
        not unmerged and (len(names) != count or names != sorted(names))
    ):
        return None
    tree = None
    while at < end:
        if at + 8 > end:
            return None
        signature = data[at : at + 4]
        size = int.from_bytes(data[at + 4 : at + 8], "big")
        body = data[at + 8 : at + 8 + size]
        if len(body) != size or at + 8 + size > end:
            return None
        if not b"A" <= signature[:1] <= b"Z":
            return None  # a required extension (split index, sparse index, ...): git's
        if signature == b"TREE":
            tree = _root_tree(body, count)
        at += 8 + size
    return Index(entries, unmerged, tree)


def _root_tree(body: bytes, count: int) -> str | None:
    """The cache-tree's root when it is valid for all ``count`` entries, else None."""
    if not body.startswith(b"\0"):
        return None
    line, newline, rest = body[1:].partition(b"\n")
    parts = line.split(b" ")
    if not newline or len(parts) != 2 or not all(p.lstrip(b"-").isdigit() for p in parts):
        return None
    if int(parts[0]) != count or len(rest) < _HASH:
        return None  # -1: invalidated (by an add, say); git writes the tree again
    return rest[:_HASH].hex()


@dataclass(frozen=True)
class Staged:
    """What the index holds against HEAD: entries added or changed, and paths removed."""

    changed: Mapping[bytes, IndexEntry]
    removed: tuple[bytes, ...]

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


def staged_against(before: Index, after: Index, head_tree: str) -> Staged | None:
    """What ``after`` stages against HEAD (whose tree is ``head_tree``) when ``before`` is
    known to hold exactly HEAD's tree (its cache-tree says so); None: not known."""
    if before.unmerged or after.unmerged or before.tree != head_tree:
        return None
    old, new = before.entries, after.entries
    changed = {
        path: IndexEntry(mode, sha.hex())
        for path, (mode, sha) in new.items()
        if old.get(path) != (mode, sha)
    }
    return Staged(changed, tuple(path for path in old if path not in new))


__all__ = ["Index", "IndexEntry", "Staged", "parse_index", "read_index", "staged_against"]
