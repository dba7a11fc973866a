"""``private_files``: folders 0700 and files 0600 when made, whatever the umask lets through;
what is there already is left as it is (a database is never emptied)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.private_files import (
    append_private_text,
    create_private,
    open_private_log,
    private_dir,
)


@pytest.fixture(autouse=True)
def open_umask(set_umask: Callable[[int], int]) -> None:
    # No umask at all: every bit of the mode is the one the code asks for.
    set_umask(0)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_each_missing_folder_is_made_0700(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" / "c"
    assert [_mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_a_folder_there_already_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    private_dir(shared / "runs")
    assert (_mode(shared), _mode(shared / "runs")) == (0o750, 0o700)


def test_a_file_where_the_folder_goes_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(FileExistsError):
        private_dir(tmp_path / "runs")


def test_logs_are_made_0600_and_appended_to(tmp_path: Path) -> None:
    log = tmp_path / "runs" / "1-deploy-deploy.log"
    with open_private_log(log) as fh:
        fh.write(b"one\n")
    with append_private_text(log) as text:
        text.write("two \udcff\n")  # a lone surrogate is escaped, not a crash
    assert log.read_bytes() == b"one\ntwo \\udcff\n"
    assert (_mode(log.parent), _mode(log)) == (0o700, 0o600)


def test_create_private_never_empties_what_is_there(tmp_path: Path) -> None:
    db = tmp_path / "orchestrator.db"
    create_private(db)
    assert (db.read_bytes(), _mode(db)) == (b"", 0o600)
    db.write_bytes(b"SQLite format 3\0")
    db.chmod(0o400)  # one the user may only read: left alone, no error
    create_private(db)
    assert (db.read_bytes(), _mode(db)) == (b"SQLite format 3\0", 0o400)
