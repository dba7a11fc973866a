"""A workspace's own loose objects copied into the store it borrows (the user's clone's).

A development attempt is committed in the task's workspace, whose objects stay there until
they are published: no gc of the user's clone can reach them, and a refused attempt never
leaves anything in the clone. Publishing used to be a fetch (``git-upload-pack`` in the
workspace, ``pack-objects``, ``unpack-objects`` in the clone: ~15-20 ms of processes for
an attempt's few objects). ``bring_loose_objects`` does what that fetch leaves behind for
a small change: each loose object of the workspace the clone lacks is written into the
clone's store as git writes a loose object (a temporary file of mode ``0444`` less the
umask in its folder, linked to its name), after its bytes are checked against its name.

Only where that is exactly what git would have written (``squash.writes_plainly``: the
clone sets no shared-repository mode, fsync or compression of its own, and does not have
its fetches check objects), and only for a workspace store of loose objects alone: a
pack, a temporary file of git's or anything unexpected leaves it to the fetch. The caller
then asks git whether the tip is whole in the clone before it moves a ref
(``worktrees.publish_branch``), as the fetch's own connectivity check did.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
import zlib
from pathlib import Path

_HEX = frozenset("0123456789abcdef")
# Types a loose object's header may name.
_TYPES = (b"blob", b"tree", b"commit", b"tag")


def bring_loose_objects(workspace: Path, store: Path) -> bool:
    """Copy every loose object of the workspace's own store that ``store`` lacks (as a
    loose object) into ``store``; True when each one is there afterwards, False when
    anything is left to a fetch (a pack, an unexpected entry, an object that is not what
    its name says, a write that failed: nothing half-written is left behind)."""
    own = workspace / ".git" / "objects"
    try:
        with os.scandir(own) as entries:
            folders = [(e.name, e.path) for e in entries if e.name != "info"]
    except OSError:
        return False
    for name, path in folders:
        if name == "pack":
            if _has_entries(path):
                return False
            continue
        if len(name) != 2 or not _HEX.issuperset(name) or os.path.islink(path):
            return False
        try:
            with os.scandir(path) as inside:
                names = [e.name for e in inside]
        except OSError:
            return False
        for rest in names:
            if len(rest) != 38 or not _HEX.issuperset(rest):
                return False
            if not _bring(Path(path, rest), store / name, name + rest):
                return False
    return True


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except OSError:
        return True


def _bring(source: Path, folder: Path, sha: str) -> bool:
    target = folder / sha[2:]
    if os.path.lexists(target):
        return True
    try:
        raw = source.read_bytes()
    except OSError:
        return False
    if not _is_object(raw, sha):
        return False
    temp = folder / f"tmp_obj_orch_{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o777)
        # As git writes one: 0444 less the umask, whole before it has its name.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(temp, target)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return True


def _is_object(raw: bytes, sha: str) -> bool:
    """Whether ``raw`` is a loose object (zlib, ``<type> <size>\\0<body>``) named ``sha``."""
    try:
        inflate = zlib.decompressobj()
        data = inflate.decompress(raw)
        if not inflate.eof or inflate.unused_data:
            return False
    except zlib.error:
        return False
    header, sep, body = data.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if not sep or kind not in _TYPES or size != b"%d" % len(body):
        return False
    return hashlib.sha1(data, usedforsecurity=False).hexdigest() == sha


__all__ = ["bring_loose_objects"]
