"""A workspace's index read without git (``gitops.index_file``), against real git.

What the file reading answers is what git answers: the merged entries ``git ls-files -s``
lists, unmerged paths as ``git ls-files --unmerged`` finds them, the tree ``git
write-tree`` writes when the cache of trees covers the index, and what ``git add`` staged
as ``git diff --cached`` has it. Every index it does not fully understand is left to git
(None): version 4, a split index, extended flags (intent-to-add, skip-worktree), a required
extension, a bad or missing checksum, entries out of git's order, an index or ``.git``
that is a link, environment or config that moves or changes git's parts.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gitops import ancestry, index_file
from orchestrator.gitops.index_file import IndexEntry, parse_index, read_index


def _git(repo: Path, *args: str, **kw: Any) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30, **kw
    )
    return done.stdout


def _git_bytes(repo: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, check=True, timeout=30
    ).stdout


def _stage0(repo: Path) -> dict[bytes, tuple[int, bytes]]:
    """``git ls-files -s -z``: the merged entries, as the file reading gives them."""
    out: dict[bytes, tuple[int, bytes]] = {}
    for record in filter(None, _git_bytes(repo, "ls-files", "-s", "-z").split(b"\0")):
        meta, _, path = record.partition(b"\t")
        mode, sha, stage = meta.split(b" ")
        if stage == b"0":
            out[path] = (int(mode, 8), bytes.fromhex(sha.decode()))
    return out


def _rewrite(repo: Path, body: bytes) -> None:
    """Write ``body`` as the index, with its checksum (git reads it as written)."""
    (repo / ".git" / "index").write_bytes(body + hashlib.sha1(body).digest())


def _body(repo: Path) -> bytes:
    return (repo / ".git" / "index").read_bytes()[:-20]


@pytest.fixture
def repo(make_repo: Any) -> Path:
    files = {"README.md": "demo\n", "src/a.py": "a = 1\n", "src/deep/b.txt": "b\n", "z": "z\n"}
    path = make_repo(files=files)
    return path


def test_entries_are_what_git_lists(repo: Path) -> None:
    tool = repo / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (repo / "link").symlink_to("README.md")
    (repo / "é ü.txt").write_text("names as bytes\n")
    _git(repo, "add", "-A")
    # A submodule's entry, and a name as long as git's 12 bits of length cannot say.
    blob = _git(repo, "hash-object", "-w", "README.md").strip()
    head = _git(repo, "rev-parse", "HEAD").strip()
    long_name = "/".join(["d" * 200] * 25) + "/f"
    assert len(long_name) > 0xFFF
    _git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},sub")
    _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{long_name}")
    ix = read_index(repo)
    assert ix is not None
    assert dict(ix.entries) == _stage0(repo)
    assert long_name.encode() in ix.entries
    assert ix.entries[b"sub"] == (0o160000, bytes.fromhex(head))
    assert ix.entries[b"link"][0] == 0o120000
    assert ix.entries[b"tool.sh"][0] == 0o100755
    assert not ix.unmerged


def test_the_cache_of_trees_is_the_tree_git_writes_and_only_when_whole(repo: Path) -> None:
    # A folder of a long name: an invalid root's record is followed by more than a tree
    # name's worth of bytes, which must not be read as one.
    (repo / "a folder whose name is long" / "f.txt").parent.mkdir()
    (repo / "a folder whose name is long" / "f.txt").write_text("f\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "f")
    head_tree = _git(repo, "rev-parse", "HEAD^{tree}").strip()
    ix = read_index(repo)
    assert ix is not None
    assert ix.tree == head_tree
    (repo / "new.txt").write_text("new\n")
    _git(repo, "add", "-A")
    ix = read_index(repo)
    assert ix is not None
    assert ix.tree is None  # add invalidated the root (src/ and its trees stay valid)
    written = _git(repo, "write-tree").strip()  # writes the cache back into the index
    ix = read_index(repo)
    assert ix is not None
    assert ix.tree == written != head_tree
    _git(repo, "read-tree", "--reset", "-u", "HEAD")
    ix = read_index(repo)
    assert ix is not None
    assert ix.tree == head_tree


def test_unmerged_paths_are_found_as_git_finds_them(repo: Path) -> None:
    who = ("-c", "user.name=t", "-c", "user.email=t@localhost")
    _git(repo, "checkout", "-q", "-b", "other")
    (repo / "z").write_text("other\n")
    _git(repo, *who, "commit", "-qam", "other")
    _git(repo, "checkout", "-q", "main")
    (repo / "z").write_text("main\n")
    _git(repo, *who, "commit", "-qam", "main")
    merged = subprocess.run(["git", *who, "merge", "-q", "other"], cwd=repo, capture_output=True)
    assert merged.returncode != 0
    assert _git(repo, "ls-files", "--unmerged").strip()
    ix = read_index(repo)
    assert ix is not None
    assert ix.unmerged
    assert ix.tree is None
    assert b"z" not in ix.entries  # only stages 1-3 of it
    assert dict(ix.entries) == _stage0(repo)
    _git(repo, "add", "z")  # resolved
    assert not _git(repo, "ls-files", "--unmerged").strip()
    ix = read_index(repo)
    assert ix is not None
    assert not ix.unmerged
    assert ix.entries == _stage0(repo)


def test_an_optional_extension_it_does_not_know_is_skipped_as_git_skips_it(repo: Path) -> None:
    _rewrite(repo, _body(repo) + b"ZZZZ" + (3).to_bytes(4, "big") + b"abc")
    _git(repo, "ls-files", "--unmerged")  # git reads it
    ix = read_index(repo)
    assert ix is not None
    assert ix.entries == _stage0(repo)


def _fiddle(repo: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    git_dir = repo / ".git"
    if case == "version 4":
        _git(repo, "update-index", "--index-version", "4")
    elif case == "split index":
        _git(repo, "update-index", "--split-index")
    elif case == "intent to add":
        (repo / "later.txt").write_text("later\n")
        _git(repo, "add", "-N", "later.txt")
    elif case == "skip-worktree":
        _git(repo, "update-index", "--skip-worktree", "z")
    elif case == "required extension":
        _rewrite(repo, _body(repo) + b"abcd" + (0).to_bytes(4, "big"))
    elif case == "no checksum":
        body = _body(repo)
        (git_dir / "index").write_bytes(body + bytes(20))
    elif case == "bad checksum":
        data = bytearray((git_dir / "index").read_bytes())
        data[-1] ^= 1
        (git_dir / "index").write_bytes(bytes(data))
    elif case == "truncated":
        _rewrite(repo, _body(repo)[:-30])
    elif case == "out of order":
        body = bytearray(_body(repo))
        # The first two entries (README.md, src/a.py; both names 8 bytes long, entries of
        # 72 bytes) swapped: git refuses the index.
        assert bytes(body[12 + 62 : 12 + 71]) == b"README.md"
        first, second = bytes(body[12:84]), bytes(body[84:156])
        body[12:156] = second + first
        _rewrite(repo, bytes(body))
    elif case == "index is a link":
        (git_dir / "index").rename(git_dir / "elsewhere")
        (git_dir / "index").symlink_to(git_dir / "elsewhere")
    elif case == "GIT_INDEX_FILE":
        monkeypatch.setenv("GIT_INDEX_FILE", str(git_dir / "other-index"))
    elif case == "GIT_DIR":
        monkeypatch.setenv("GIT_DIR", str(git_dir))
    elif case == "config from the environment":
        monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
        monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.splitIndex")
        monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    elif case == "an extension in the config":
        with (git_dir / "config").open("a") as out:
            out.write("[extensions]\n\tworktreeConfig = true\n")
    elif case == "linked worktree":
        (git_dir / "commondir").write_text("..\n")
    elif case == ".git is a link":
        git_dir.rename(repo / "real.git")
        git_dir.symlink_to(repo / "real.git")
    elif case == "no index":
        (git_dir / "index").unlink()
    elif case == "more entries than read here":
        monkeypatch.setattr(index_file, "MAX_ENTRIES", 3)  # the repo has 4
    else:
        raise AssertionError(case)


CASES = [
    "version 4",
    "split index",
    "intent to add",
    "skip-worktree",
    "required extension",
    "no checksum",
    "bad checksum",
    "truncated",
    "out of order",
    "index is a link",
    "GIT_INDEX_FILE",
    "GIT_DIR",
    "config from the environment",
    "an extension in the config",
    "linked worktree",
    ".git is a link",
    "no index",
    "more entries than read here",
]


@pytest.mark.parametrize("case", CASES)
def test_what_it_does_not_fully_understand_is_left_to_git(
    repo: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert read_index(repo) is not None
    _fiddle(repo, case, monkeypatch)
    assert read_index(repo) is None


def test_an_index_git_refuses_is_not_read_here_either(repo: Path) -> None:
    # (A checksum that does not match, or entries out of order, are left to git too, which
    # is stricter than git: it checks neither outside fsck, and reads such an index.)
    _fiddle(repo, "required extension", pytest.MonkeyPatch())
    said = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True)
    assert said.returncode != 0
    assert "abcd extension" in said.stderr
    assert read_index(repo) is None


def test_parse_refuses_what_is_not_an_index() -> None:
    assert parse_index(b"") is None
    assert parse_index(b"DIRX" + bytes(28)) is None
    body = b"DIRC" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big")  # one entry, none there
    assert parse_index(body + hashlib.sha1(body).digest()) is None
    empty = b"DIRC" + (2).to_bytes(4, "big") + (0).to_bytes(4, "big")
    made = parse_index(empty + hashlib.sha1(empty).digest())
    assert made is not None
    assert not made.entries
    assert not made.unmerged


def _random_change(repo: Path, rng: random.Random) -> None:
    """Add, change, delete, re-mode or turn into a link a few of the repo's files."""
    files = [p for p in repo.rglob("*") if ".git" not in p.parts and not p.is_dir()]
    for _ in range(rng.randint(0, 4)):
        action = rng.choice(["add", "change", "delete", "mode", "link", "same"])
        if action == "add" or not files:
            path = repo / rng.choice(["", "src/", "src/deep/", "new/"]) / f"f{rng.randrange(99)}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            path.write_text(_lines(rng))
            continue
        path = files.pop(rng.randrange(len(files)))
        if action == "change" and not path.is_symlink():
            path.write_text(_lines(rng))
        elif action == "delete":
            path.unlink()
        elif action == "mode" and not path.is_symlink():
            path.chmod(path.stat().st_mode ^ 0o100)
        elif action == "link":
            path.unlink()
            path.symlink_to(rng.choice(["README.md", "<<<<<<< x", "nowhere"]))
        elif action == "same" and not path.is_symlink():
            path.write_bytes(path.read_bytes())


def _lines(rng: random.Random) -> str:
    pool = ["x = 1", "> quoted", "=======", "<<<<<<< ours", ">>>>>>> theirs", "|||||||", "a", ""]
    return "".join(rng.choice(pool) + "\n" for _ in range(rng.randint(0, 5)))


def test_what_add_staged_is_what_git_diff_cached_has(make_repo: Any) -> None:
    rng = random.Random(19)
    repo = make_repo(files={"README.md": "demo\n", "src/a.py": "a = 1\n", "src/deep/b.txt": "b\n"})
    who = ("-c", "user.name=t", "-c", "user.email=t@localhost")
    checked = 0
    for _ in range(40):
        before = read_index(repo)
        assert before is not None
        _random_change(repo, rng)
        _git(repo, "add", "-A")
        after = read_index(repo)
        assert after is not None
        head_tree = _git(repo, "rev-parse", "HEAD^{tree}").strip()
        staged = index_file.staged_against(before, after, head_tree)
        assert staged is not None  # the index before held HEAD: a commit or read-tree left it
        raw = _git_bytes(
            repo, "diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev"
        ).split(b"\0")
        changed: dict[bytes, IndexEntry] = {}
        removed = set()
        for meta, path in zip(raw[0::2], raw[1::2], strict=False):
            if not meta:
                continue
            _, new_mode, _, new_sha, status = meta.decode().split(" ")
            if status == "D":
                removed.add(path)
            else:
                changed[path] = IndexEntry(int(new_mode, 8), new_sha)
        # A type change (file to link) is one entry to the index, D and A of it to nobody.
        assert dict(staged.changed) == changed
        assert set(staged.removed) == removed
        assert bool(staged) == bool(changed or removed)
        checked += bool(staged)
        if rng.random() < 0.5:
            _git(repo, *who, "commit", "-q", "--allow-empty", "-m", "step")
        else:
            _git(repo, "read-tree", "--reset", "-u", "HEAD")
            _git(repo, "clean", "-qfd")
    assert checked > 20


def test_a_blob_is_read_only_when_it_is_what_its_name_says(repo: Path) -> None:
    (repo / "f.txt").write_text("x = 1\n")
    sha = _git(repo, "hash-object", "-w", "f.txt").strip()
    assert ancestry.loose_blobs(repo, [sha], 100) == {sha: b"x = 1\n"}
    assert ancestry.loose_blobs(repo, [sha], 5) is None  # larger than allowed
    assert ancestry.loose_blobs(repo, ["0" * 40], 100) is None  # not there
    # Another object's bytes under its name.
    other = _git(repo, "hash-object", "-w", "--stdin", input="y\n").strip()
    path = repo / ".git" / "objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    path.write_bytes((repo / ".git" / "objects" / other[:2] / other[2:]).read_bytes())
    assert ancestry.loose_blobs(repo, [sha], 100) is None
    # A link to the object's bytes is not followed.
    path.unlink()
    (repo / "saved").write_bytes(zlib.compress(b"blob 6\0x = 1\n"))
    path.symlink_to(repo / "saved")
    assert ancestry.loose_blobs(repo, [sha], 100) is None
    path.unlink()
    (repo / "saved").rename(path)
    assert ancestry.loose_blobs(repo, [sha], 100) == {sha: b"x = 1\n"}
    # A commit is no blob.
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert ancestry.loose_blobs(repo, [head], 10_000) is None
