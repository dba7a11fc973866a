"""What a workspace's branch tip adds, copied from its own store into the one it borrows.

A development attempt is committed in the task's workspace, whose objects stay there until
they are published: no gc of the user's clone can reach them, and what an attempt wrote
but never committed (a refused attempt, a patch that did not apply) never leaves it.
Publishing used to be a fetch (``git-upload-pack`` in the workspace, ``pack-objects``,
``unpack-objects`` in the clone: ~15-20 ms of processes for an attempt's few objects).
``bring_tip`` does what that fetch leaves behind for a small change: the loose objects of
the workspace's own store that the tip reaches, and only those (a fetch sends nothing
else), each checked against its name as it is read (in bounded pieces, whatever its size),
are written into the clone's store as git writes a loose object (a temporary file of mode
``0444`` less the umask in its folder, linked to its name once whole).

Only where that is exactly what the fetch would have left (``squash.copy_limits``:
the clone sets no shared-repository mode, fsync or compression of its own and does not
have its fetches check objects; here, too: fewer objects than the clone's unpack limit,
which a fetch would keep as a pack, and a clone its automatic maintenance would not yet
look at), and only for a workspace store of loose objects: a pack, or anything this
cannot read as an object, leaves it to the fetch. Every object is checked before any is
written. The caller then asks git whether the tip is whole in the clone before it moves a
ref (``worktrees.publish_branch``), as the fetch's own connectivity check did.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchestrator.gitops.ancestry import is_hex

# Types a loose object's header may name.
_TYPES = (b"blob", b"tree", b"commit", b"tag")
# How much of an object is read and inflated at a time.
_PIECE = 1 << 20
# A tree entry's mode for a submodule's commit: an object of another repository.
_GITLINK = b"160000"


@dataclass(frozen=True)
class Limits:
    """When the fetch must do it after all, as git's own settings in the clone say."""

    unpack_limit: int = 100  # fetch.unpackLimit, else transfer.unpackLimit
    # gc.auto (0: off), and whether automatic maintenance runs at all (maintenance.auto).
    gc_auto: int = 6700
    auto_maintenance: bool = True


def bring_tip(workspace: Path, store: Path, tip: str, limits: Limits) -> bool:
    """Copy the loose objects of the workspace's own store that ``tip`` reaches and
    ``store`` (the user's clone's) lacks; True when each one is there afterwards.

    False, with nothing written, when the fetch is to do it: a pack in the workspace's
    store, an object that is not what its name says, too many objects for the clone's
    unpack limit, a clone whose automatic maintenance is due. Objects the tip reaches that
    the workspace's store does not hold are the clone's already (the stores it borrows);
    the caller has git check that."""
    own = workspace / ".git" / "objects"
    if _has_entries(own / "pack") or _maintenance_due(store, limits):
        return False
    missing: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    todo = [tip]
    while todo:
        sha = todo.pop()
        if sha in seen:
            continue
        seen.add(sha)
        source = own / sha[:2] / sha[2:]
        if not os.path.lexists(source):
            continue  # in a store the workspace borrows: the clone's (git checks it)
        found = _read_object(source, sha)
        if found is None:
            return False
        todo.extend(found)
        target = store / sha[:2] / sha[2:]
        if not os.path.lexists(target):
            missing.append((source, target))
            if len(missing) >= limits.unpack_limit:
                return False
    return all(_write(source, target) for source, target in missing)


def _has_entries(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _maintenance_due(store: Path, limits: Limits) -> bool:
    """Whether git's automatic maintenance would run in the clone (``gc.auto``'s estimate:
    the loose objects in ``objects/17`` times 256): a fetch runs it, a copy does not."""
    if not limits.auto_maintenance or limits.gc_auto <= 0:
        return False
    try:
        with os.scandir(store / "17") as entries:
            count = sum(1 for e in entries if len(e.name) == 38)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return count > math.ceil(limits.gc_auto / 256)


def _read_object(path: Path, sha: str) -> list[str] | None:
    """The objects a loose object names (a commit's tree and parents, a tree's entries but
    submodules'), read in pieces and checked against its name; None: not a loose object
    named ``sha`` (git's own reading: zlib to its end and nothing after it, a header
    ``<type> <size>`` that tells the size, the SHA-1 of it all its name)."""
    digest = hashlib.sha1(usedforsecurity=False)
    head = b""
    kind: bytes | None = None
    size = seen = 0
    body = bytearray()  # kept for a commit or a tree, which are read for what they name
    try:
        with path.open("rb") as fh:
            for out in _inflated(fh):
                if kind is None:
                    head += out
                    header, sep, out = head.partition(b"\0")
                    if not sep:
                        if len(head) > 64:
                            return None
                        continue
                    kind, _, length = header.partition(b" ")
                    if kind not in _TYPES or not length.isdigit():
                        return None
                    size = int(length)
                    if length != b"%d" % size:
                        return None
                    digest.update(header + b"\0")
                digest.update(out)
                seen += len(out)
                if seen > size:
                    return None
                if kind in (b"commit", b"tree"):
                    body += out
            if fh.read(1):
                return None
    except (OSError, zlib.error, _NotWhole):
        return None
    if kind is None or seen != size or digest.hexdigest() != sha:
        return None
    return _named_by(kind, bytes(body))


class _NotWhole(Exception):
    """The compressed stream did not end, or bytes follow its end."""


def _inflated(fh: BinaryIO) -> Iterator[bytes]:
    """The inflated bytes of ``fh`` in pieces of at most ``_PIECE``; raises ``_NotWhole``
    unless the stream ends exactly where the file does (the caller reads on to be sure)."""
    inflate = zlib.decompressobj()
    while not inflate.eof:
        data = fh.read(_PIECE)
        if not data:
            raise _NotWhole
        while data and not inflate.eof:
            yield inflate.decompress(data, _PIECE)
            data = inflate.unconsumed_tail
        if data or inflate.unused_data:
            raise _NotWhole


def _named_by(kind: bytes, body: bytes) -> list[str] | None:
    if kind == b"commit":
        headers = body.split(b"\n\n", 1)[0].split(b"\n")
        named = [h[5:] for h in headers if h.startswith(b"tree ")]
        named += [h[7:] for h in headers if h.startswith(b"parent ")]
        return _shas(named)
    if kind == b"tree":
        out = []
        at = 0
        while at < len(body):
            space = body.find(b" ", at)
            nul = body.find(b"\0", space + 1)
            if space < 0 or nul < 0 or nul + 21 > len(body):
                return None
            if body[at:space] != _GITLINK:
                out.append(body[nul + 1 : nul + 21].hex())
            at = nul + 21
        return out
    return []


def _shas(raw: list[bytes]) -> list[str] | None:
    out = []
    for value in raw:
        text = value.decode("ascii", errors="replace")
        if not is_hex(text):
            return None
        out.append(text)
    return out


def _write(source: Path, target: Path) -> bool:
    """``source``'s bytes under ``target``'s name, as git writes a loose object: a
    temporary file (``0444`` less the umask) in its folder, linked to its name once whole;
    an object already there is left as it is."""
    folder = target.parent
    temp = folder / f"tmp_obj_orch_{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o777)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with source.open("rb") as fh:
                while piece := fh.read(_PIECE):
                    view = memoryview(piece)
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


__all__ = ["Limits", "bring_tip"]
