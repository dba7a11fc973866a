"""A workspace's branch moved without git (``gitops.workspace_refs``), against real git.

Each swap is read back by git, git's own compare-and-swap takes the value it wrote, and
every case it must leave to git writes nothing: git then answers as it always did.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.gitops import workspace_refs
from orchestrator.gitops.workspace_refs import swap

REF = "refs/heads/orch/DEMO-1"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with two commits: (path, first, second)."""
    path = tmp_path / "ws"
    _git(tmp_path, "init", "-q", "--template=", "-b", "main", str(path))
    shas = []
    for n in (1, 2):
        (path / "f.txt").write_text(f"{n}\n")
        _git(path, "add", "f.txt")
        _git(path, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", f"c{n}")
        shas.append(_git(path, "rev-parse", "HEAD"))
    return path, shas[0], shas[1]


def _files(git_dir: Path) -> set[str]:
    return {str(p.relative_to(git_dir)) for p in git_dir.rglob("*") if not p.is_dir()}


def test_a_swap_is_read_by_git_and_git_swaps_on_from_it(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    assert swap(git_dir, REF, first, None)  # made, with the folder orch/
    assert _git(path, "rev-parse", REF) == first
    assert (git_dir / REF).read_text() == f"{first}\n"
    assert swap(git_dir, REF, second, first)
    assert _git(path, "rev-parse", REF) == second
    # git's own compare-and-swap takes the value written here as the ref's.
    _git(path, "update-ref", REF, first, second)
    assert _git(path, "rev-parse", REF) == first
    assert not list(git_dir.rglob("*.lock"))
    _git(path, "fsck", "--no-dangling")


def test_a_ref_that_is_not_old_any_more_is_left_to_git(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", REF, first)
    assert not swap(git_dir, REF, second, second)  # it is first, not second
    assert not swap(git_dir, REF, second, None)  # it exists
    assert _git(path, "rev-parse", REF) == first
    assert not list(git_dir.rglob("*.lock"))
    # cas asks git, which says what it is now.
    moved = workspace_refs.cas(path, REF, second, second)
    assert (moved.status, moved.current) == ("moved", first)
    done = workspace_refs.cas(path, REF, second, first)
    assert (done.status, done.current) == ("ok", second)


def test_a_held_lock_is_not_taken_and_not_removed(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", REF, first)
    lock = git_dir / f"{REF}.lock"
    lock.write_text("another writer\n")
    assert not swap(git_dir, REF, second, first)
    assert lock.read_text() == "another writer\n"
    assert _git(path, "rev-parse", REF) == first
    # git, asked next, finds the same lock and says so.
    busy = workspace_refs.cas(path, REF, second, first)
    assert busy.status == "lock-busy", busy


def test_a_packed_ref_is_moved_by_git(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", REF, first)
    _git(path, "pack-refs", "--all")
    assert not (git_dir / REF).exists()
    assert not swap(git_dir, REF, second, first)
    assert not swap(git_dir, "refs/heads/other", second, None)  # packed-refs may be in its way
    assert not (git_dir / REF).exists()
    done = workspace_refs.cas(path, REF, second, first)
    assert done.status == "ok", done
    assert _git(path, "rev-parse", REF) == second


@pytest.mark.parametrize(
    "ref",
    [
        "refs/tags/v1",
        "HEAD",
        "refs/heads/a b",
        "refs/heads/../config",
        "refs/heads/x.lock",
        "refs/heads/.hidden",
        "refs/heads/x~1",
        "refs/heads/",
        "refs/heads//x",
        # git refuses ".." anywhere and a name ending in "." (check-ref-format)
        "refs/heads/a..b",
        "refs/heads/orch/x.",
    ],
)
def test_a_name_off_the_plain_spelling_is_left_to_git(
    repo: tuple[Path, str, str], ref: str
) -> None:
    path, first, _second = repo
    before = _files(path / ".git")
    assert not swap(path / ".git", ref, first, None)
    assert _files(path / ".git") == before


def test_values_that_are_not_full_names_are_left_to_git(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    assert not swap(git_dir, REF, first[:12], None)
    assert not swap(git_dir, REF, first.upper(), None)
    _git(path, "update-ref", REF, first)
    assert not swap(git_dir, REF, second, first[:12])
    # A ref file holding anything but a name (a symbolic ref) is git's to read.
    # The null name is git's "no ref" (update-ref with it deletes), not a value to write.
    assert not swap(git_dir, REF, "0" * 40, first)
    assert not swap(git_dir, "refs/heads/new", "0" * 40, None)
    assert not (git_dir / "refs/heads/new").exists()
    assert _git(path, "rev-parse", REF) == first
    (git_dir / REF).write_text("ref: refs/heads/main\n")
    assert not swap(git_dir, REF, second, first)
    assert (git_dir / REF).read_text() == "ref: refs/heads/main\n"


@pytest.mark.parametrize("kind", ["commondir", "reftable", "git-dir-env"])
def test_a_repository_git_reads_otherwise_is_left_to_git(
    repo: tuple[Path, str, str], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, first, _second = repo
    git_dir = path / ".git"
    if kind == "git-dir-env":
        monkeypatch.setenv("GIT_DIR", str(git_dir))
    else:
        (git_dir / kind).mkdir()
    assert not swap(git_dir, REF, first, None)
    assert not (git_dir / REF).exists()


def test_a_git_dir_that_is_a_link_is_left_to_git(
    repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, first, _second = repo
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".git").symlink_to(path / ".git")
    assert not swap(linked / ".git", REF, first, None)
    assert not (path / ".git" / REF).exists()


def test_no_write_goes_through_a_link_on_the_way(
    repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    # Whatever planted it, a link among the ref's folders or as the ref itself would send
    # the write (and git's next read) elsewhere: nothing is written through it.
    path, first, second = repo
    git_dir = path / ".git"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (git_dir / "refs" / "heads" / "orch").symlink_to(elsewhere)
    assert not swap(git_dir, REF, first, None)
    # Nor is a folder still to be made below the link made where the link points.
    assert not swap(git_dir, "refs/heads/orch/sub/KEY-1", first, None)
    assert list(elsewhere.iterdir()) == []
    (git_dir / "refs" / "heads" / "orch").unlink()

    target = elsewhere / "target"
    target.write_text(f"{first}\n")
    (git_dir / "refs" / "heads" / "orch").mkdir()
    (git_dir / REF).symlink_to(target)
    assert not swap(git_dir, REF, second, first)
    assert target.read_text() == f"{first}\n"
    assert (git_dir / REF).is_symlink()
    assert not list(git_dir.rglob("*.lock"))


def test_a_ref_where_a_folder_is_is_left_to_git(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", f"{REF}/sub", first)
    assert not swap(git_dir, REF, second, None)  # a folder is there
    _git(path, "update-ref", "refs/heads/flat", first)
    assert not swap(git_dir, "refs/heads/flat/sub", second, None)  # a ref is in its way
    assert _git(path, "rev-parse", "refs/heads/flat") == first
    assert not list(git_dir.rglob("*.lock"))


def test_the_ref_file_is_made_as_git_makes_it(repo: tuple[Path, str, str]) -> None:
    # The umask decides, as for git's own files (the workspace is the orchestrator's).
    path, first, _second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", "refs/heads/by-git", first)
    assert swap(git_dir, "refs/heads/by-swap", first, None)
    mode = os.stat(git_dir / "refs/heads/by-git").st_mode
    assert os.stat(git_dir / "refs/heads/by-swap").st_mode == mode


def test_a_group_shared_workspace_is_written_as_git_writes_it(
    repo: tuple[Path, str, str],
) -> None:
    # core.sharedRepository (which `git init` copies in from a global config) makes git
    # widen what it writes for the group; a swap writing by the umask alone would leave
    # refs and folders the group's git cannot lock or rename in: git writes them.
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "config", "core.sharedRepository", "group")
    for name in ("by-git", "by-swap"):
        _git(path, "update-ref", f"refs/heads/{name}/x", first)
    _git(path, "update-ref", "refs/heads/by-git/x", second, first)
    assert workspace_refs.cas(path, "refs/heads/by-swap/x", second, first).status == "ok"
    _git(path, "update-ref", "refs/heads/by-git/new/y", first, "")
    if not swap(git_dir, "refs/heads/by-swap/new/y", first, None):
        _git(path, "update-ref", "refs/heads/by-swap/new/y", first, "")
    for rel in ("x", "new", "new/y"):
        want = os.stat(git_dir / "refs/heads/by-git" / rel).st_mode
        assert os.stat(git_dir / "refs/heads/by-swap" / rel).st_mode == want, rel


def test_a_repository_with_extensions_is_left_to_git(
    repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    # `git init` takes its object format (and, from git 2.45, its ref format) from the
    # user's global config or the environment: a workspace made so holds SHA-256 names
    # (or no loose refs at all), and a 40-digit value in it is one git would not read.
    _path, first, _second = repo
    other = tmp_path / "sha256"
    _git(tmp_path, "init", "-q", "--template=", "--object-format=sha256", str(other))
    assert not swap(other / ".git", REF, first, None)
    assert not (other / ".git" / REF).exists()
    with pytest.raises(subprocess.CalledProcessError):
        _git(other, "update-ref", REF, first)  # git refuses it too


def test_an_interrupt_under_the_lock_leaves_no_lock(
    repo: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # git removes its <ref>.lock when interrupted (tempfile.c cleans up on a signal and at
    # exit); one left behind would refuse every later move of the branch, git's included.
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", REF, first)

    def interrupted(_git_dir: Path, _path: Path) -> str | None:
        raise KeyboardInterrupt

    monkeypatch.setattr(workspace_refs, "_current", interrupted)
    with pytest.raises(KeyboardInterrupt):
        swap(git_dir, REF, second, first)
    assert not list(git_dir.rglob("*.lock"))
    assert _git(path, "rev-parse", REF) == first


def test_an_interrupt_after_the_rename_keeps_the_next_writers_lock(
    repo: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, first, second = repo
    git_dir = path / ".git"
    _git(path, "update-ref", REF, first)
    lock = git_dir / f"{REF}.lock"
    real_replace = os.replace

    def replaced_then_interrupted(src: Path, dst: Path) -> None:
        real_replace(src, dst)
        lock.write_text("the next writer\n")  # git took the lock as soon as it was free
        raise KeyboardInterrupt

    monkeypatch.setattr(workspace_refs.os, "replace", replaced_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        swap(git_dir, REF, second, first)
    assert lock.read_text() == "the next writer\n"
    assert (git_dir / REF).read_text() == f"{second}\n"
