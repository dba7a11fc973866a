"""Folders and files only their owner can read: what the orchestrator makes under its home.

A job's log holds what its command printed (a deploy's, with the user's credentials in its
environment), a prompt the task's text, a patch its code; on a shared machine no other
local user may read them. The umask (often 022) would leave ``open`` and ``mkdir`` readable
by all, so the mode is asked for when the thing is made (``os.open``/``os.mkdir`` with
0600/0700, less the umask): never made open and then closed by a ``chmod``, no moment in
between. What exists already keeps its mode.

Stdlib only, so the lowest layers (``proc_group``, ``gitops``, ``store``) use it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "append_private_text",
    "create_private",
    "open_private_log",
    "private_dir",
]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Make folder ``path`` and each missing parent with mode 0700; ``path``.

    ``Path.mkdir(mode=..., parents=True)`` gives the parents the umask's mode, so each
    missing one is made here. A folder that is there already is left as it is (it may be
    the user's choice, as a home they set up for a group).
    """
    missing: list[Path] = []
    at = path
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise  # a file or a dangling link where the folder goes
    return path


def _opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def open_private_log(path: Path) -> BinaryIO:
    """``path`` opened to append and read (``ab+``), made 0600 if new, in a private folder."""
    private_dir(path.parent)
    return open(path, "ab+", opener=_opener)


def append_private_text(path: Path) -> TextIO:
    """``path`` opened to append UTF-8 text, made 0600 if new, in a private folder; what
    is no UTF-8 (a lone surrogate from a JSON escape) is written escaped, not a crash."""
    private_dir(path.parent)
    return open(path, "a", encoding="utf-8", errors="backslashreplace", opener=_opener)


def create_private(path: Path) -> None:
    """Make ``path`` an empty file of mode 0600 if it is not there, for another program to
    write into (git's ``--output``, SQLite): a file it opens keeps its mode. A file that is
    there already is left as it is, its content too."""
    private_dir(path.parent)
    try:
        # O_EXCL: a file that is there is never opened, so one we may only read is no error.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
