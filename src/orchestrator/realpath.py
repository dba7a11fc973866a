"""``os.path.realpath`` answered by the kernel when it can: one ``open`` and one ``readlink``.

Every sandboxed job's start resolves a score of paths (the places it hides, the toolchain
it binds back, the object store a workspace borrows). Python's ``realpath`` walks each
path one ``lstat`` at a time in Python, some tens of microseconds a path; the kernel
resolves it in one ``open(O_PATH)``, and ``/proc/self/fd`` names what it found.

The answer is the kernel's only where it is the one ``realpath`` gives: a path that
exists, reached from this process's root. Anything else goes to ``os.path.realpath``
itself: a path that is not there or not reachable (``realpath`` then resolves what it can
and keeps the rest as written), a loop of links, no ``O_PATH`` or no ``/proc`` (not Linux,
a chroot without it). (``realpath`` gives POSIX's ``//`` root as ``/``, as the kernel does.)
"""

from __future__ import annotations

import os

__all__ = ["realpath"]

_O_PATH: int | None = getattr(os, "O_PATH", None)
# What the kernel adds to the name of a file unlinked since it was opened (a name it cannot
# give as a path of this root starts with "(unreachable)"): ``realpath`` answers neither.
_DELETED = " (deleted)"


def realpath(path: str | os.PathLike[str]) -> str:
    """``os.path.realpath(path)`` (not strict): the same string, resolved by the kernel
    when the path exists."""
    spelled = os.fspath(path)
    if _O_PATH is None or not isinstance(spelled, str) or not spelled or "\0" in spelled:
        return os.path.realpath(spelled)
    try:
        fd = os.open(spelled, _O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(spelled)
    try:
        found = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(spelled)
    finally:
        os.close(fd)
    if not found.startswith("/") or found.endswith(_DELETED):
        return os.path.realpath(spelled)
    return found
