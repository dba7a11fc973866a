"""An attempt published by a copy of the workspace's loose objects (``gitops/objects.py``)
against what the fetch it stands in for leaves in the user's clone. ``by`` = "fetch"
takes the fetch (a clone that sets core.compression to git's own default: nothing else
changes), so each case holds for both ways. Real git repositories. Written by a review
that played the attacker; each case marked F failed on the first version of the copy."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gitops import commits, worktrees
from orchestrator.gitops import git as gitcmd

try:
    from merge_helpers import run_git
    from test_git_calls import _workspace
    from test_land_attacks import _age, _has, _whole
except ImportError:  # imported as tests.integration.test_publish_copy
    from tests.integration.merge_helpers import run_git
    from tests.integration.test_git_calls import _workspace
    from tests.integration.test_land_attacks import _age, _has, _whole

_BY = ["copy", "fetch"]


def _force_fetch_if(repo: Path, by: str) -> None:
    if by == "fetch":
        # -1 is git's own default: the clone writes exactly as before, but a write key is set.
        run_git(repo, "config", "core.compression", "-1")


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# ---- F1: the copy takes every loose object of the workspace, reachable or not ------------


@pytest.mark.parametrize("by", _BY)
def test_a_refused_attempts_files_stay_out_of_the_clone_after_the_next_publish(
    tmp_path: Path, make_repo: Any, by: str
) -> None:
    # Attempt 1 leaves conflict debris: refused and undone, but `git add -A` wrote its blobs
    # into the workspace's own store. Attempt 2 is clean and published: a fetch sends what
    # the tip reaches; the copy sends every loose object, the refused payload with it.
    repo = make_repo(files={"README.md": "demo\n"})
    _force_fetch_if(repo, by)
    ws = _workspace(repo, tmp_path / "worktrees")
    payload = b"agent payload " + os.urandom(32).hex().encode() + b"\n"
    (ws / "payload.bin").write_bytes(payload)
    (ws / "README.md").write_text("<<<<<<< ours\ndemo\n=======\nother\n>>>>>>> theirs\n")
    assert commits.commit_all(ws, "DEMO-1: work").status == "refused"
    (ws / "feature.txt").write_text("the second attempt\n")
    assert commits.commit_all(ws, "DEMO-1: work 2")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert _whole(repo, "refs/heads/orch/DEMO-1")
    assert not _has(repo, _blob_sha(payload))


@pytest.mark.parametrize("by", _BY)
def test_a_patch_that_did_not_apply_leaves_nothing_in_the_clone(
    tmp_path: Path, make_repo: Any, by: str
) -> None:
    # The patch backend: `git apply --3way` of a patch that conflicts writes the blobs of
    # the patch's new side (and the merged debris) before it is undone.
    repo = make_repo(files={"a.txt": "one\ntwo\nthree\n"})
    _force_fetch_if(repo, by)
    ws = _workspace(repo, tmp_path / "worktrees")
    secret = "line from the agent " + os.urandom(16).hex() + "\n"
    (ws / "a.txt").write_text("one\nTWO\n" + secret)
    patch = tmp_path / "p.diff"
    patch.write_text(run_git(ws, "diff", "--full-index"))
    run_git(ws, "checkout", "--", "a.txt")
    (ws / "a.txt").write_text("one\n2\nthree\n")
    assert commits.commit_all(ws, "DEMO-1: base moves")
    ok, _why = commits.apply_patch(ws, patch)
    assert not ok
    (ws / "feature.txt").write_text("clean\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert not _has(repo, _blob_sha(b"one\nTWO\n" + secret.encode()))


# ---- held: an object the clone already has is not freshened, and need not be ------------
# git prune keeps what a recent unreachable object reaches (reachable.c, "recent" tips), so
# the copied commit and trees protect the old blob; and when every object is already in the
# clone, the fetch does no transfer either (fetch.c quickfetch), so it freshens nothing.


@pytest.mark.parametrize("by", _BY)
def test_an_old_object_the_tip_reaches_survives_a_gc_whose_walk_came_before_the_swap(
    tmp_path: Path, make_repo: Any, by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clone holds blob B loose, unreachable and older than gc.pruneExpire (2 weeks):
    # e.g. the work of a branch rebuilt with `retry --fresh`, which the agent writes again.
    # The attempt's commit (whose publication was delayed: "published by the next job")
    # reaches B. A user's `git gc` walks reachability before the ref moves and deletes
    # after. The copy does not freshen B (the fetch's unpack-objects would): B survives
    # because the copied commit is recent and prune keeps what recent objects reach.
    repo = make_repo(files={"README.md": "demo\n"})
    _force_fetch_if(repo, by)
    ws = _workspace(repo, tmp_path / "worktrees")
    content = b"the same work again " + os.urandom(16).hex().encode() + b"\n"
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo,
            input=content,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    (ws / "feature.txt").write_bytes(content)
    assert commits.commit_all(ws, "DEMO-1: work")
    assert not (ws / ".git" / "objects" / blob[:2] / blob[2:]).exists()  # borrowed from the clone
    _age(repo / ".git" / "objects", 21)  # the publication waited three weeks
    real = gitcmd.git

    def gc_walked_first(args: Any, cwd: Path, **kw: Any) -> Any:
        rest = list(args)
        while rest and rest[0] == "-c":
            rest = rest[2:]
        if rest[:1] == ["update-ref"] and Path(cwd) == repo:
            # A gc whose walk ran before the swap: default expiry, deletes what it judged.
            subprocess.run(["git", "prune", "--expire=2.weeks.ago"], cwd=repo, check=True)
        return real(args, cwd, **kw)

    monkeypatch.setattr(gitcmd, "git", gc_walked_first)
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    monkeypatch.setattr(gitcmd, "git", real)
    assert published, detail
    assert _whole(repo, "refs/heads/orch/DEMO-1"), "orch/DEMO-1 names a pruned blob"


# ---- F3: the clone's automatic maintenance no longer runs on publication ----------------


def _contents_in_folder(prefix: str, count: int) -> list[bytes]:
    found: list[bytes] = []
    n = 0
    while len(found) < count:
        data = b"user object %d\n" % n
        if _blob_sha(data).startswith(prefix):
            found.append(data)
        n += 1
    return found


def _loose_count(repo: Path) -> int:
    out = run_git(repo, "count-objects", "-v")
    return int(next(line for line in out.splitlines() if line.startswith("count:")).split()[1])


@pytest.mark.parametrize("by", _BY)
def test_publishing_runs_the_clones_automatic_maintenance_as_the_fetch_did(
    tmp_path: Path, make_repo: Any, by: str
) -> None:
    # gc.auto counts loose objects in objects/17 (threshold ceil(gc.auto/256)): the clone
    # is over it. The fetch that published ran `git maintenance run --auto` in the clone
    # (commits.WORKSPACE_COMMIT's comment relies on it); the copy never does, so a clone
    # that only the orchestrator writes to collects loose objects without bound.
    repo = make_repo(files={"README.md": "demo\n"})
    _force_fetch_if(repo, by)
    run_git(repo, "config", "gc.auto", "1")
    run_git(repo, "config", "gc.autoDetach", "false")
    ws = _workspace(repo, tmp_path / "worktrees")
    for data in _contents_in_folder("17", 2):
        subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, check=True)
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    before = _loose_count(repo)
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert _loose_count(repo) < before


@pytest.mark.parametrize("by", _BY)
def test_an_attempt_of_many_objects_reaches_the_clone_as_a_pack_as_the_fetch_leaves_it(
    tmp_path: Path, make_repo: Any, by: str
) -> None:
    # fetch.unpackLimit (default 100): a fetch of 100 objects or more keeps them as one
    # pack (fsynced by git's default core.fsync, which skips loose objects); the copy
    # writes every one loose whatever the count or the user's unpackLimit.
    repo = make_repo(files={"README.md": "demo\n"})
    _force_fetch_if(repo, by)
    ws = _workspace(repo, tmp_path / "worktrees")
    for n in range(120):
        (ws / f"f{n}.txt").write_text(f"file {n}\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    before = _loose_count(repo)
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert _loose_count(repo) == before
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack"))


# ---- (6) `--not <current>` trusts the closure of the user's ref, as --not --all does ------


@pytest.mark.parametrize("by", _BY)
def test_a_user_branch_naming_a_missing_blob_is_not_trusted_more_than_the_fetch(
    tmp_path: Path, make_repo: Any, by: str
) -> None:
    # orch/DEMO-1 (set by the withdrawn direct-write code, or the user) names a commit
    # whose blob was pruned. The next attempt keeps that file: both paths trust the
    # closure of the clone's refs (rev-list ... --not <ref> / --not --all). (`sub` is
    # untouched: its cache-tree lets `git commit` reuse the tree without the blob.) Recorded, not
    # a defect of the copy: the outcome must be the same either way.
    repo = make_repo(files={"README.md": "demo\n"})
    _force_fetch_if(repo, by)
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "sub").mkdir()
    (ws / "sub" / "kept.txt").write_text("kept " + os.urandom(8).hex() + "\n")
    assert commits.commit_all(ws, "DEMO-1: one")
    assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    kept = run_git(repo, "rev-parse", "orch/DEMO-1:sub/kept.txt").strip()
    # Not racily clean (else the next `git add -A` hashes it again and writes it back).
    then = time.time() - 100
    os.utime(ws / "sub" / "kept.txt", (then, then))
    run_git(ws, "update-index", "-q", "--refresh")
    for store in (repo / ".git" / "objects", ws / ".git" / "objects"):
        (store / kept[:2] / kept[2:]).unlink(missing_ok=True)
    (ws / "more.txt").write_text("more\n")
    assert commits.commit_all(ws, "DEMO-1: two")
    published, _detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    moved = (
        run_git(repo, "rev-parse", "orch/DEMO-1").strip()
        == run_git(ws, "rev-parse", "HEAD").strip()
    )
    # Observed identical on both paths (see the report): the ref moves onto the hole.
    assert (published, moved) == (True, True)
    assert not _whole(repo, "refs/heads/orch/DEMO-1")


# ---- held: two workers bringing the same object at once ---------------------------------


def test_two_workers_bringing_the_same_object_at_once_both_publish(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two tasks' attempts write the same file (one blob). Worker 2 brings its objects in
    # the moment worker 1 has its temporary file whole but not yet linked: worker 1's link
    # finds the name taken, which is the object itself. Both branches whole, no temp left.
    repo = make_repo(files={"README.md": "demo\n"})
    ws1 = _workspace(repo, tmp_path / "worktrees", "DEMO-1")
    ws2 = _workspace(repo, tmp_path / "worktrees", "DEMO-2")
    for ws in (ws1, ws2):
        (ws / "same.txt").write_text("the same work\n")
        assert commits.commit_all(ws, "work")
    real_link = os.link
    raced: list[bool] = []

    def link_after_the_other(src: Any, dst: Any) -> None:
        if not raced:
            raced.append(True)
            assert worktrees.publish_branch(repo, ws2, "DEMO-2")[0]
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_the_other)
    published, detail = worktrees.publish_branch(repo, ws1, "DEMO-1")
    monkeypatch.setattr(os, "link", real_link)
    assert raced
    assert published, detail
    assert _whole(repo, "refs/heads/orch/DEMO-1")
    assert _whole(repo, "refs/heads/orch/DEMO-2")
    assert not list((repo / ".git" / "objects").glob("*/tmp_obj_*"))
    run_git(repo, "fsck", "--no-dangling")


# ---- F4: a blob is inflated whole (twice) in the orchestrator's own process -------------

_BRING_LIMITED = """
import resource, sys
from pathlib import Path
limit = int(sys.argv[3]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from orchestrator.gitops import ancestry, objects
ws = Path(sys.argv[1])
tip = ancestry.loose_ref(ws / ".git", "refs/heads/orch/DEMO-1")
try:
    print(objects.bring_tip(ws, Path(sys.argv[2]), tip, objects.Limits()))
except MemoryError:
    print("MemoryError")
"""


def test_a_large_compressible_blob_is_checked_without_holding_it_in_memory(
    tmp_path: Path, make_repo: Any
) -> None:
    # The agent leaves a 128 MiB file of zeros (sparse: nothing on disk; under
    # core.bigFileThreshold, so `git add` writes it loose, ~0.5 MB). A check that inflated
    # it whole (the copy's first version, twice over) would hold ~2x its size in the
    # orchestrator's process, where every worker thread publishes. Here the process may
    # use 160 MiB of address space (~23 MiB of it taken at the start); a streamed check
    # needs a few MiB.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    with (ws / "big.bin").open("wb") as out:
        out.truncate(128 * 1024 * 1024)
    assert commits.commit_all(ws, "DEMO-1: work")
    src = Path(worktrees.__file__).parents[2]
    res = subprocess.run(
        [sys.executable, "-c", _BRING_LIMITED, str(ws), str(repo / ".git" / "objects"), "160"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
        check=False,
    )
    assert res.stdout.strip() == "True", (res.stdout, res.stderr[-500:])
