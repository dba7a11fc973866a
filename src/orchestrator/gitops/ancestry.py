"""Whether one commit is an ancestor of another, read from git's files without git.

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
walk longer than ``_MAX_COMMITS``. ``descends`` answers the same question for any two
commits (the merge gate's "is main already under the branch"), and False too when it
walked a whole history without meeting the ancestor. ``loose_ref`` reads a branch's file.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gitops import git as gitcmd

# What git's own isspace() takes for white space (not C's: no vertical tab, no form feed,
# no Unicode space): git trims and skips by it, in a file as in a commit.
GIT_SPACE = " \t\n\r"
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


def loose_ref(git_dir: Path, ref: str) -> str | None:
    """The object a loose ref file under ``git_dir`` names, read without git; None: ask git.

    Exact when it answers: git reads a loose ref before any packed one, writes one by
    renaming a whole file into place (a read sees the old value or the new), and deletes
    it only after packing it. A branch (``refs/heads/``) holds a commit: git refuses to
    write anything else there. Anything else is None and the caller asks git: a ref git
    packed or keeps in another format (reftable), a symbolic ref, a ``.git`` that is a
    file or a link (a ``git worktree``, whose refs live elsewhere), an odd name.
    """
    parts = ref.split("/")
    if not ref.startswith("refs/heads/") or any(p in ("", ".", "..") for p in parts):
        return None
    if not git_dir.is_dir() or git_dir.is_symlink():
        return None
    try:
        text = git_dir.joinpath(*parts).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    sha = text.strip()
    if len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
        return None
    return sha


def main_if_ancestor(worktree: Path, main_branch: str) -> str | None:
    """The workspace's ``main`` when it is an ancestor of (or is) HEAD, else None: ask git."""
    git_dir = worktree / ".git"
    if not _plain_refs(git_dir, main_branch):
        return None
    main = loose_ref(git_dir, f"refs/heads/{main_branch}")
    head = _head(git_dir)
    if main is None or head is None:
        return None
    return main if descends(worktree, main, head) else None


def head_on_main(worktree: Path, main_branch: str) -> str | None:
    """HEAD's commit when it is the workspace's ``main`` itself, as git would read both
    names (nothing that ``main`` names first, a plain history), else None: unsure."""
    git_dir = worktree / ".git"
    if not _plain_refs(git_dir, main_branch) or not _plain_history(git_dir):
        return None
    main = loose_ref(git_dir, f"refs/heads/{main_branch}")
    head = _head(git_dir)
    return head if main is not None and main == head else None


def descends(repo: Path, ancestor: str, tip: str) -> bool | None:
    """Whether commit ``ancestor`` is reachable from commit ``tip`` (equal counts), both
    full SHA-1s, in the repository at ``repo`` (its ``.git`` a folder): True when the walk
    from ``tip`` meets it, False when it walked all of ``tip``'s history without, None when
    it could not tell (ask ``git merge-base --is-ancestor``)."""
    git_dir = repo / ".git"
    if not (is_hex(ancestor) and is_hex(tip)) or not _plain_history(git_dir):
        return None
    stores = _object_stores(git_dir)
    seen: set[str] = set()
    todo = [tip]
    while todo:
        sha = todo.pop()
        if sha == ancestor:
            return True
        if sha in seen:
            continue
        seen.add(sha)
        if len(seen) > _MAX_COMMITS:
            return None
        parents = _parents(stores, sha)
        if parents is None:
            return None
        todo.extend(parents)
    # Git answers "no" only about a commit that exists (of one it cannot read it fails).
    return False if _parents(stores, ancestor) is not None else None


def _plain_history(git_dir: Path) -> bool:
    """Git would read the history as its commits say: no replace refs, grafts or shallow
    boundary, no environment pointing it at other objects or refs, a ``.git`` of its own."""
    env = gitcmd.git_environment()
    if any(name in env for name in _HISTORY_ENV):
        return False
    if not git_dir.is_dir() or git_dir.is_symlink():
        return False
    for rel in ("info/grafts", "shallow", "commondir"):
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
    return not _packed_names(git_dir, lambda name: name.startswith("refs/replace/"))


def _packed_names(git_dir: Path, match: Callable[[str], bool]) -> bool:
    """Whether ``packed-refs`` names a ref ``match`` accepts (True, too, when unreadable)."""
    try:
        packed = (git_dir / "packed-refs").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for line in packed.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("#", "^")):
            continue
        if match(line.partition(" ")[2]):
            return True
    return False


def _plain_refs(git_dir: Path, main_branch: str) -> bool:
    """Nothing that ``main`` would name before ``refs/heads/main`` (git's order:
    ``<name>``, ``refs/<name>``, ``refs/tags/<name>``, then the branch), loose or packed.
    (Other packed refs do not matter: the refs read here are read loose or not at all.)"""
    before = (main_branch, f"refs/{main_branch}", f"refs/tags/{main_branch}")
    if any(os.path.lexists(git_dir / rel) for rel in before):
        return False
    return not _packed_names(git_dir, lambda name: name in before)


def _head(git_dir: Path) -> str | None:
    try:
        text = (git_dir / "HEAD").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.startswith("ref: "):
        return loose_ref(git_dir, text.removeprefix("ref: "))
    return text if is_hex(text) else None


def is_hex(text: str, length: int = 40) -> bool:
    """Whether ``text`` is ``length`` lower-case hex digits (40: a full SHA-1 name)."""
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def checked_out_plainly(repo_path: Path) -> list[str] | None:
    """The branch the clone at ``repo_path`` has checked out, read from its files when it
    has one worktree only (its ``.git`` a folder of its own, no linked worktree, a plain
    ``HEAD`` file naming a branch that is no symbolic ref, nothing in the environment moving
    git's parts): ``[ref]``, or ``[]`` when ``HEAD`` is detached. None: ask git."""
    env = gitcmd.git_environment()
    if any(name in env for name in ("GIT_DIR", "GIT_COMMON_DIR", "GIT_WORK_TREE")):
        return None
    git_dir = repo_path / ".git"
    if not git_dir.is_dir() or git_dir.is_symlink() or (git_dir / "commondir").exists():
        return None
    if os.path.lexists(git_dir / "reftable"):
        return None  # refs in reftables (git 2.45+): the HEAD file is a stub, .invalid
    try:
        if any((git_dir / "worktrees").iterdir()):
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    if (git_dir / "HEAD").is_symlink():
        return None  # git's old symbolic-link HEAD: git reads it
    try:
        # Trimmed as git trims it (its isspace: no VT, FF or Unicode space); git reads a
        # file only to its first NUL.
        head = (git_dir / "HEAD").read_text(encoding="utf-8").rstrip(GIT_SPACE)
    except (OSError, UnicodeDecodeError):
        return None
    if "\0" in head:
        return None
    if not head.startswith("ref: "):
        return [] if is_hex(head) else None
    ref = head.removeprefix("ref: ").lstrip(GIT_SPACE)
    try:
        # A branch that is itself a symbolic ref (an alias of another, in a file or, as
        # core.preferSymlinkRefs writes one, a symbolic link): git names the branch it
        # ends at.
        if (git_dir / ref).is_symlink() or (git_dir / ref).read_bytes().startswith(b"ref:"):
            return None
    except OSError:
        pass  # packed, or no such branch: not a symbolic ref
    return [ref]


def _object_stores(git_dir: Path) -> list[Path]:
    stores = [git_dir / "objects"]
    try:
        text = (git_dir / "objects" / "info" / "alternates").read_text()
    except OSError:
        return stores
    return stores + [Path(line) for line in text.splitlines() if line.startswith("/")]


@dataclass(frozen=True)
class LooseCommit:
    """A commit read from its loose object (checked against its name)."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str  # everything after the headers, as ``git log --format=%B`` prints it
    author: str = ""  # the author header's value, ``Name <email> <seconds> <zone>``


def read_commit(repo: Path, rev: str) -> LooseCommit | None:
    """Commit ``rev`` (a full SHA-1, or ``HEAD``) of the repository at ``repo`` (its
    ``.git`` a folder), read from git's files; None: ask git.

    Exact when it answers: the history is read as its commits say (``_plain_history``),
    HEAD and its branch are loose files, and the object is a loose commit whose bytes hash
    to its name. None too for a message git would re-encode (an ``encoding`` header) or
    that is not UTF-8."""
    git_dir = repo / ".git"
    if not _plain_history(git_dir):
        return None
    sha = _head(git_dir) if rev == "HEAD" else rev
    if sha is None or not is_hex(sha):
        return None
    return _loose_commit(_object_stores(git_dir), sha)


def commits_since(repo: Path, base: str) -> list[LooseCommit] | None:
    """The commits of ``base..HEAD`` in the repository at ``repo``, oldest first, read from
    git's files; None: ask git (``git log base..HEAD``).

    Exact when it answers: HEAD reaches ``base`` through at most ``_MAX_COMMITS`` loose
    commits of one parent each (a task branch as the orchestrator commits it), and such a
    line holds exactly the commits that HEAD reaches and ``base`` does not. Each is read as
    ``read_commit`` reads one (its bytes hash to its name, a plain history, no message git
    would re-encode)."""
    git_dir = repo / ".git"
    if not is_hex(base) or not _plain_history(git_dir):
        return None
    stores = _object_stores(git_dir)
    sha = _head(git_dir)
    walked: list[LooseCommit] = []
    while sha != base:
        if sha is None or len(walked) == _MAX_COMMITS:
            return None
        found = _loose_commit(stores, sha)
        if found is None or len(found.parents) != 1:
            return None
        walked.append(found)
        sha = found.parents[0]
    return walked[::-1]


def _parents(stores: list[Path], sha: str) -> list[str] | None:
    """The parents of commit ``sha`` read from its loose object (checked against its name),
    or None: not loose in any store, not a commit, or not what its name says."""
    found = _loose_commit(stores, sha, message=False)
    return None if found is None else list(found.parents)


def _loose_commit(stores: list[Path], sha: str, *, message: bool = True) -> LooseCommit | None:
    """Commit ``sha`` from its loose object in the first store that has it; None: not loose
    there, not a commit, not what its name says, or (``message``) a message git would not
    print as it is stored."""
    if not is_hex(sha):
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
        body = _object_body(data, sha, b"commit")
        if body is None:
            return None
        lines = body.split(b"\n")
        if not lines[0].startswith(b"tree "):
            return None
        tree = lines[0][5:].decode("ascii", errors="replace")
        if not is_hex(tree):
            return None
        parents = []
        for line in lines[1:]:
            if not line.startswith(b"parent "):
                break
            parent = line[7:].decode("ascii", errors="replace")
            if not is_hex(parent):
                return None
            parents.append(parent)
        text = author = ""
        if message:
            headers, blank, raw_message = body.partition(b"\n\n")
            fields = headers.split(b"\n")
            if not blank or any(h.startswith(b"encoding ") for h in fields):
                return None
            # Git prints a message only to its first NUL, and reads the last author header
            # where there are two: either is left to git.
            authors = [h[7:] for h in fields if h.startswith(b"author ")]
            if b"\0" in body or len(authors) > 1:
                return None
            written = authors[0] if authors else b""
            try:
                text, author = raw_message.decode("utf-8"), written.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return LooseCommit(sha, tree, tuple(parents), text, author)
    return None


def loose_blobs(repo: Path, shas: Iterable[str], max_bytes: int) -> dict[str, bytes] | None:
    """The contents of blobs ``shas`` of the repository at ``repo`` (its ``.git`` a
    folder), each from its loose object in the first store that has it and checked against
    its name; None: ask git (a blob not loose, not what its name says, a history git may
    read otherwise, such as a replaced object, or more than ``max_bytes`` in all)."""
    git_dir = repo / ".git"
    if not _plain_history(git_dir):
        return None
    stores = _object_stores(git_dir)
    out: dict[str, bytes] = {}
    budget = max_bytes
    for sha in shas:
        if sha in out:
            continue
        found = _loose_blob(stores, sha, budget)
        if found is None:
            return None
        out[sha] = found
        budget -= len(found)
    return out


def _loose_blob(stores: list[Path], sha: str, max_bytes: int) -> bytes | None:
    if not is_hex(sha):
        return None
    for store in stores:
        try:
            fd = os.open(store / sha[:2] / sha[2:], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError:
            return None  # a link, or unreadable: git reads it
        # zlib never makes a blob much larger than its bytes: a bigger file is no blob
        # that fits.
        limit = max_bytes + max_bytes // 100 + 1024
        try:
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read(limit + 1)
        except OSError:
            return None
        if len(raw) > limit:
            return None
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(raw, max_bytes + 64)
        except zlib.error:
            return None
        if not inflate.eof or inflate.unconsumed_tail:
            return None  # cut short, or larger than allowed
        body = _object_body(data, sha, b"blob")
        return None if body is None or len(body) > max_bytes else body
    return None


def _object_body(data: bytes, sha: str, kind: bytes) -> bytes | None:
    """The body of an inflated loose object when it is what its name ``sha`` says and of
    type ``kind`` (its header ``<kind> <size>`` telling the body's size); else None."""
    if hashlib.sha1(data, usedforsecurity=False).hexdigest() != sha:
        return None
    header, sep, body = data.partition(b"\0")
    if not sep or header != b"%s %d" % (kind, len(body)):
        return None
    return body
