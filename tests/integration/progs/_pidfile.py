"""Shared by the helper programs: announce a pid by appending a line to a pid file."""

from __future__ import annotations

import os


def announce(path: str, role: str) -> None:
    """Append ``<pid> <role>``: one short O_APPEND write, so concurrent writers never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {role}\n".encode())
    finally:
        os.close(fd)
