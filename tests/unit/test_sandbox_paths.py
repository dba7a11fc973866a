"""The path arithmetic a sandbox plan does at every job's start, against the slow way.

``orchestrator.realpath`` must give ``os.path.realpath``'s string for any path (the kernel
answers only for one that exists); ``sandbox._ancestors`` / ``_lies_in`` must answer what
``_inside`` / ``_in_any`` / ``_holds`` answer, for the normalized paths a plan gives them.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

from orchestrator import realpath as realpath_module
from orchestrator import sandbox
from orchestrator.realpath import realpath


def _link_farm(root: Path) -> list[str]:
    """Folders, a file, links relative and absolute, to links, dangling, in a loop, to a
    file, to ``..``; and the names to walk them by."""
    for folder in ("a/b/c", "a/bc", "d/e", "x y/z", "nl\nname"):
        (root / folder).mkdir(parents=True)
    (root / "a" / "b" / "file").write_text("x")
    links = {
        "rel": "a/b",
        "abs": str(root / "d"),
        "up": "a/b/..",
        "chain": "rel",
        "deep": "a/b/c/../../bc",
        "dangling": "nowhere/at/all",
        "loop1": "loop2",
        "loop2": "loop1",
        "self": "self",
        "tofile": "a/b/file",
        "dot": ".",
        "a/b/c/back": "../../../d",
        "a/b/c/root": "/",
        "d/e/to-rel": "../../rel",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    return [
        "a", "b", "c", "bc", "d", "e", "x y", "z", "nl\nname", "file", "missing",
        *(Path(n).name for n in links), ".", "..", "",
    ]  # fmt: skip


def test_realpath_is_pythons_on_every_kind_of_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _link_farm(tmp_path)
    rng = random.Random(7)
    monkeypatch.chdir(tmp_path / "a")
    paths = ["/", "//", "///", ".", "..", "", "a\0b", str(tmp_path) + "/", f"/{tmp_path}"]
    for _ in range(3000):
        parts = [rng.choice(names) for _ in range(rng.randint(1, 6))]
        base = rng.choice([str(tmp_path), f"{tmp_path}/", "", "//" + str(tmp_path)[1:]])
        paths.append("/".join([base, *parts]) + rng.choice(["", "/", "/."]))
    # The kernel answers every path that exists: the shortcut is taken, not passed over.
    kernel = 0
    real_readlink = os.readlink

    def counted(path: str, *args: object, **kw: object) -> str:
        nonlocal kernel
        if str(path).startswith("/proc/self/fd/"):
            kernel += 1
        return real_readlink(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "readlink", counted)
    for path in paths:
        expected = os.path.realpath(path) if "\0" not in path else None
        if expected is None:
            with pytest.raises(ValueError, match="null"):
                os.path.realpath(path)
            with pytest.raises(ValueError, match="null"):
                realpath(path)
            continue
        before = kernel
        assert realpath(path) == expected, repr(path)
        answered = bool(path) and os.path.exists(path)
        assert kernel - before == answered, repr(path)
        assert realpath(Path(path)) == os.path.realpath(Path(path))
    assert kernel > 300, kernel


def test_realpath_without_o_path_is_pythons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not Linux: every path goes to os.path.realpath.
    _link_farm(tmp_path)
    monkeypatch.setattr(realpath_module, "_O_PATH", None)
    monkeypatch.setattr(os, "open", lambda *a, **k: pytest.fail("opened a path"))
    for name in ("rel", "abs/e", "loop1", "dangling/x", "a/b/c/back"):
        assert realpath(tmp_path / name) == os.path.realpath(tmp_path / name)


def test_a_name_the_kernel_cannot_give_is_left_to_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc/self/fd names a file unlinked since it was opened with " (deleted)", and one
    # outside this root with "(unreachable)": neither is a realpath.
    (tmp_path / "f").write_text("x")
    for said in (f"{tmp_path}/f (deleted)", "(unreachable)/f"):
        monkeypatch.setattr(os, "readlink", lambda _p, said=said: said)
        assert realpath(tmp_path / "f") == str(tmp_path / "f")


def _normalized_paths(rng: random.Random, count: int) -> list[str]:
    parts = ["a", "b", "ab", "a b", ".git", "x"]
    found = ["/", "//"]
    for _ in range(count):
        root = rng.choice(["/", "/", "/", "//"])
        found.append(root + "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))))
    return found


def test_ancestors_answer_what_inside_answers() -> None:
    rng = random.Random(3)
    paths = _normalized_paths(rng, 300)
    for path, place in itertools.product(paths[:120], paths[:120]):
        assert (place in sandbox._ancestors(path)) == sandbox._inside(path, place), (path, place)
    for _ in range(2000):
        path = rng.choice(paths)
        places = rng.sample(paths, rng.randint(0, 8))
        assert sandbox._lies_in(path, set(places)) == sandbox._in_any(path, places)
        holders = {f for place in places for f in sandbox._ancestors(place)}
        assert (path in holders) == sandbox._holds([path], places)
