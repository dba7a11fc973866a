"""Attacks on the cheaper transitions (issue 19): the merge gate's landing without a fetch,
a first attempt's gate told by its own commit, the landing's status that answers the first
re-test too. Real git repositories; outcomes, never timings. Each case is the shortcut
against what git itself (the long way) does."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.gates import merge_gate
from orchestrator.gitops import commits, land, squash, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.git import GitResult
from orchestrator.gitops.land import Judgement, LandRequest
from orchestrator.store import merges

try:
    from merge_helpers import CALC, PROJECT, TESTS, MergeBed, commit_files, fill_slot, run_git
    from test_git_calls import _land, _workspace
except ImportError:  # imported as tests.integration.test_land_attacks
    from tests.integration.merge_helpers import (
        CALC,
        PROJECT,
        TESTS,
        MergeBed,
        commit_files,
        fill_slot,
        run_git,
    )
    from tests.integration.test_git_calls import _land, _workspace


def test_a_commit_landed_in_a_group_shared_clone_is_readable_by_its_group(
    tmp_path: Path, make_repo: Any
) -> None:
    # The commit the merge gate writes straight into the user's store is written as the
    # user's clone writes objects (core.sharedRepository): a group-shared clone whose main
    # names a commit only its owner can read is broken for everyone else in the group. The
    # fetch it replaces ran in the clone and honoured its config.
    # The clone is group-shared from the start: made under the usual umask, the folders
    # of its first objects are the group's already. (Made under 0o077, one of them shared
    # its name with the commit's own folder about one run in a hundred, and failed the
    # test for a folder the gate never made.)
    repo = make_repo(files={"README.md": "demo\n"})
    run_git(repo, "config", "core.sharedRepository", "group")
    old_umask = os.umask(0o077)
    try:
        ws = _workspace(repo, tmp_path / "worktrees")
        (ws / "feature.txt").write_text("work\n")
        assert commits.commit_all(ws, "DEMO-1: work")
        assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
        landing = _land_judged(repo, ws, lambda _candidate: Judgement(), max_rounds=1)
    finally:
        os.umask(old_umask)
    assert landing.status == "MERGED", landing.reasons
    main = run_git(repo, "rev-parse", "main").strip()
    loose = repo / ".git" / "objects" / main[:2] / main[2:]
    assert loose.is_file()  # written into the user's store (the shortcut was taken)
    assert loose.stat().st_mode & stat.S_IRGRP, oct(loose.stat().st_mode)
    folder = loose.parent.stat().st_mode
    assert folder & stat.S_IRGRP, oct(folder)
    assert folder & stat.S_IXGRP, oct(folder)


# Adversarial changes of a first attempt: attributes that move what `diff --check` calls a
# marker, names with line breaks, binary files, a by-product folder's own attributes.
_MARKERS = "<<<<<<< ours\nx\n=======\ny\n>>>>>>> theirs\n"
_FIRST_ATTEMPTS = [
    {".gitattributes": "*.txt conflict-marker-size=9\n", "a.txt": _MARKERS},
    {".gitattributes": "*.txt -text\n", "a.txt": _MARKERS},
    {".gitattributes": "*.txt binary\n", "a.txt": "<<<<<<< ours\n"},
    {".gitattributes": "* eol=crlf\n", "c.txt": _MARKERS.replace("\n", "\r\n")},
    {".gitattributes": "*.txt whitespace=-trailing-space\n", "a.txt": "x   \n"},
    {"a\nb.txt": _MARKERS},
    {"sub/.gitattributes": "* conflict-marker-size=99\n", "sub/x.txt": _MARKERS},
    {"__pycache__/.gitattributes": "* conflict-marker-size=99\n", "__pycache__/x.txt": _MARKERS},
    {"x.txt": "a\x00<<<<<<< ours\n"},
    {"x.txt": "=======\n"},
]


@pytest.mark.parametrize("files", _FIRST_ATTEMPTS)
def test_a_first_attempts_commit_tells_the_gate_what_git_would(
    tmp_path: Path, make_repo: Any, files: dict[str, str]
) -> None:
    # Whatever the agent leaves, the commit's word (branch_diff) is given only when the
    # gate's own git questions (diff --stat, diff --check main...HEAD) would pass it, and
    # says what `diff --stat` says.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    for rel, text in files.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    done = commits.commit_all(ws, "DEMO-1: work", main="main")
    if done.status != "committed":
        assert done.branch_diff is None
        return
    assert done.branch_diff is not None
    assert commits.has_diff_vs(ws, "main") == (True, done.branch_diff)
    assert commits.branch_markers(ws, "main") == ([], "")


# ---- a development attempt published into the user's clone ------------------------------


def _objects_of(repo: Path, rev: str) -> list[str]:
    """Every object ``rev`` reaches in ``repo``."""
    listed = run_git(repo, "rev-list", "--objects", rev)
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def test_an_attempt_in_a_group_shared_clone_is_readable_by_its_group(
    tmp_path: Path, make_repo: Any
) -> None:
    # The attempt's blobs, trees and commit reach the user's store as the clone writes
    # objects (core.sharedRepository): its group can read the branch it is shown.
    old_umask = os.umask(0o077)
    try:
        repo = make_repo(files={"README.md": "demo\n"})
        run_git(repo, "config", "core.sharedRepository", "group")
        # Folders made before the clone was shared keep their modes, as git leaves them.
        before = {p.name for p in (repo / ".git" / "objects").iterdir()}
        ws = _workspace(repo, tmp_path / "worktrees")
        (ws / "sub").mkdir()
        (ws / "sub" / "feature.txt").write_text("work\n")
        assert commits.commit_all(ws, "DEMO-1: work")
        assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    finally:
        os.umask(old_umask)
    tip = run_git(repo, "rev-parse", "orch/DEMO-1").strip()
    assert tip == run_git(ws, "rev-parse", "HEAD").strip()
    new = [o for o in _objects_of(repo, tip) if o not in _objects_of(repo, "main")]
    assert len(new) == 4  # the commit, two trees, the blob
    for sha in new:
        loose = repo / ".git" / "objects" / sha[:2] / sha[2:]
        assert loose.is_file(), sha  # in the user's store, loose (a small fetch unpacks)
        assert loose.stat().st_mode & stat.S_IRGRP, (sha, oct(loose.stat().st_mode))
        if loose.parent.name not in before:
            folder = loose.parent.stat().st_mode
            assert folder & stat.S_IRGRP, oct(folder)
            assert folder & stat.S_IXGRP, oct(folder)


@pytest.mark.parametrize("key", ["fetch.fsckObjects", "transfer.fsckObjects"])
def test_a_clone_that_checks_what_it_fetches_still_checks_an_attempt(
    tmp_path: Path, make_repo: Any, key: str
) -> None:
    # An agent writes a .gitmodules whose submodule name climbs out of .git/modules (the
    # kind of object git's fsck refuses: CVE-2018-11235). A clone that asks its fetches to
    # check objects gets every attempt by a fetch, which refuses it: no shortcut may put
    # the blob in its store unchecked.
    repo = make_repo(files={"README.md": "demo\n"})
    run_git(repo, "config", key, "true")
    ws = _workspace(repo, tmp_path / "worktrees")
    hostile = '[submodule "../../modules/evil"]\n\tpath = evil\n\turl = ./evil\n'
    (ws / ".gitmodules").write_text(hostile)
    assert commits.commit_all(ws, "DEMO-1: work")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert not published
    assert "gitmodulesName" in detail or "fsck" in detail, detail
    blob = run_git(ws, "rev-parse", "HEAD:.gitmodules").strip()
    assert not (repo / ".git" / "objects" / blob[:2] / blob[2:]).exists()
    assert (
        run_git(repo, "rev-parse", "orch/DEMO-1").strip()
        == run_git(repo, "rev-parse", "main").strip()
    )


def test_an_attempt_runs_no_gc_that_judges_the_users_objects_by_the_workspace(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gc run from the workspace on the user's store would see only the workspace's refs:
    # every object of the user's other branches would be garbage. A user's global config
    # that asks for eager gc gets none that judges the clone by the workspace.
    glob = tmp_path / "gitconfig"
    glob.write_text(
        "[gc]\n\tauto = 1\n\tautoPackLimit = 1\n\tautoDetach = false\n\tpruneExpire = now\n"
        "[maintenance]\n\tauto = true\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(glob))
    repo = make_repo(files={"README.md": "demo\n"})
    run_git(repo, "checkout", "-q", "-b", "other")
    for n in (1, 2):  # two packs: more than gc.autoPackLimit, so an automatic gc would run
        (repo / "other.txt").write_text(f"the user's own work {n}\n")
        run_git(repo, "add", "other.txt")
        run_git(repo, "commit", "-q", "-m", f"other work {n}")
        run_git(repo, "repack", "-q")
    run_git(repo, "checkout", "-q", "main")
    theirs = _objects_of(repo, "other")
    ws = _workspace(repo, tmp_path / "worktrees")
    published = []
    for n in range(3):
        (ws / f"f{n}.txt").write_text(f"{n}\n")
        assert commits.commit_all(ws, f"DEMO-1: work {n}")
        published.append(worktrees.publish_branch(repo, ws, "DEMO-1"))
    assert [sha for sha in theirs if not _has(repo, sha)] == []
    assert all(ok for ok, _detail in published), published
    run_git(repo, "fsck", "--no-dangling", "--connectivity-only")


def _has(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", sha], cwd=repo, check=False).returncode == 0


# Found by a review of a shortcut that wrote an attempt's objects straight into the user's
# store (withdrawn): what publishing holds, however it is done.


def _whole(repo: Path, rev: str) -> bool:
    """Every object ``rev`` reaches is readable in ``repo`` (what a fetch's connectivity
    check asks)."""
    res = subprocess.run(
        ["git", "rev-list", "--objects", "--missing=error", rev],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    return res.returncode == 0


def _age(store: Path, days: int) -> None:
    """Every file in an object store as if written ``days`` ago (time passing)."""
    then = time.time() - days * 86400
    for folder, _dirs, files in os.walk(store):
        for name in files:
            os.utime(Path(folder, name), (then, then))


def _attempt_whose_blob_a_prune_took(tmp_path: Path, make_repo: Any) -> tuple[Path, Path]:
    """(the user's clone, a workspace with one attempt committed) where the attempt's blob,
    if anything had put it in the clone's store before its publication, is gone again."""
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    blob = run_git(ws, "rev-parse", "HEAD:feature.txt").strip()
    loose = repo / ".git" / "objects" / blob[:2] / blob[2:]
    if loose.exists():  # only if a shortcut wrote it there; the fetch path keeps it aside
        loose.unlink()
    return repo, ws


def test_a_published_branch_is_whole_in_the_users_clone(tmp_path: Path, make_repo: Any) -> None:
    # `git gc --prune=now` in the user's clone (by hand, or its gc.pruneExpire=now on any
    # automatic gc) judges reachability first, then deletes unreachable loose objects
    # folder by folder (00..ff). Between the attempt's commit and its publication, the
    # attempt's objects are unreachable in the clone: a prune whose walk came first and
    # that has reached the blob's folder but not yet the commit's leaves the commit there
    # and the blob gone. Simulated here by removing the blob the way prune does.
    repo, ws = _attempt_whose_blob_a_prune_took(tmp_path, make_repo)
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    # Published or not, the user's branch never names a commit it cannot read whole (a
    # fetch checks connectivity before it moves a ref).
    assert _whole(repo, "refs/heads/orch/DEMO-1"), (published, detail)


def test_a_landed_main_is_whole_in_the_users_clone(tmp_path: Path, make_repo: Any) -> None:
    # The same interleaving, carried on to the merge gate: main never names a tree whose
    # blobs the clone lacks.
    repo, ws = _attempt_whose_blob_a_prune_took(tmp_path, make_repo)
    worktrees.publish_branch(repo, ws, "DEMO-1")
    landing = _land(repo, ws)
    assert _whole(repo, "refs/heads/main"), (landing.status, landing.reasons)


def test_an_attempt_survives_an_eager_gc_in_the_users_clone(tmp_path: Path, make_repo: Any) -> None:
    # The user's clone prunes eagerly (gc.pruneExpire=now). Between an attempt's commit
    # and its publication (the same job, or a later one when the publish failed) the
    # user's gc runs (by hand, or the automatic one any fetch in the clone starts): an
    # attempt not yet published must not be garbage to it.
    repo = make_repo(files={"README.md": "demo\n"})
    run_git(repo, "config", "gc.pruneExpire", "now")
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    head = run_git(ws, "rev-parse", "HEAD").strip()
    run_git(repo, "gc", "--quiet")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert run_git(repo, "rev-parse", "orch/DEMO-1").strip() == head
    assert run_git(repo, "show", "orch/DEMO-1:feature.txt") == "the attempt's work\n"


def test_an_attempt_left_unpublished_survives_the_users_default_gc(
    tmp_path: Path, make_repo: Any
) -> None:
    # Default config (gc.pruneExpire=2.weeks.ago). A publish failed (infra: "the attempt's
    # commit stays in the workspace and is published by the next job") and the task waited
    # three weeks; the user's `git gc` then finds the attempt's objects unreachable and old.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    head = run_git(ws, "rev-parse", "HEAD").strip()
    _age(repo / ".git" / "objects", 21)
    run_git(repo, "gc", "--quiet")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert run_git(repo, "rev-parse", "orch/DEMO-1").strip() == head
    # And the way out a person has (orch task retry --fresh) saves the old change first.
    carry = tmp_path / "carry.diff"
    made = worktrees.rebuild_from_main(
        repo, "main", tmp_path / "worktrees", "demo", "DEMO-1", carry_to=carry
    )
    assert made.error is None, made.error


def test_a_refused_attempt_leaves_nothing_in_the_users_clone(
    tmp_path: Path, make_repo: Any
) -> None:
    # An attempt with conflict debris is refused and undone: nothing of it (any file the
    # agent left, of any size) reaches the user's clone.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    payload = b"agent payload " + os.urandom(64).hex().encode() + b"\n"
    (ws / "payload.bin").write_bytes(payload)
    (ws / "README.md").write_text("<<<<<<< ours\ndemo\n=======\nother\n>>>>>>> theirs\n")
    done = commits.commit_all(ws, "DEMO-1: work")
    assert done.status == "refused", done
    blob = (
        subprocess.run(
            ["git", "hash-object", "--stdin"], input=payload, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    assert not _has(repo, blob)


# ---- an attempt's loose objects copied into the user's store (no fetch) -----------------


def _counted_publish(repo: Path, ws: Path) -> tuple[tuple[bool, str], list[str]]:
    """``publish_branch`` and the git subcommands it ran."""
    seen: list[str] = []
    real = gitcmd.git

    def spy(args: Any, cwd: Path, **kw: Any) -> Any:
        rest = list(args)
        while rest and rest[0] == "-c":
            rest = rest[2:]
        seen.append(rest[0] if rest else "?")
        return real(args, cwd, **kw)

    gitcmd.git = spy  # type: ignore[assignment]
    try:
        return worktrees.publish_branch(repo, ws, "DEMO-1"), seen
    finally:
        gitcmd.git = real  # type: ignore[assignment]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_copied_object_is_what_git_itself_writes_in_the_clone(
    tmp_path: Path, make_repo: Any, umask: int
) -> None:
    # Modes as git gives them under the same umask (a file 0444 less the umask, a folder
    # 0777 less it), bytes as the workspace's git wrote them, each one found whole by git.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "sub").mkdir()
    (ws / "sub" / "feature.txt").write_text("the attempt's work\n")
    old_umask = os.umask(umask)
    try:
        assert commits.commit_all(ws, "DEMO-1: work")
        (published, detail), calls = _counted_publish(repo, ws)
        # What git itself writes into the clone's store under this umask, for comparison.
        probe = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo,
            input="probe\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    finally:
        os.umask(old_umask)
    assert published, detail
    assert "fetch" not in calls, calls
    own = repo / ".git" / "objects"
    tip = run_git(repo, "rev-parse", "orch/DEMO-1").strip()
    new = [o for o in _objects_of(repo, tip) if o not in _objects_of(repo, "main")]
    assert len(new) == 4  # the commit, two trees, the blob
    git_mode = stat.S_IMODE((own / probe[:2] / probe[2:]).stat().st_mode)
    assert git_mode == 0o444 & ~umask
    for sha in new:
        copied = own / sha[:2] / sha[2:]
        assert stat.S_IMODE(copied.stat().st_mode) == git_mode, sha
        assert copied.read_bytes() == (ws / ".git" / "objects" / sha[:2] / sha[2:]).read_bytes()
    assert not list(own.glob("*/tmp_obj_*"))
    run_git(repo, "fsck", "--no-dangling")


def test_an_object_that_is_not_what_its_name_says_is_never_copied(
    tmp_path: Path, make_repo: Any
) -> None:
    # The workspace's store holds a loose object whose bytes are another object's (a disk
    # fault; the agent cannot write .git). Nothing by that name reaches the clone's store,
    # and the branch does not move to a tip the clone could not read.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    blob = run_git(ws, "rev-parse", "HEAD:feature.txt").strip()
    loose = ws / ".git" / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes(zlib.compress(b"blob 6\0forged"))
    (published, _detail), calls = _counted_publish(repo, ws)
    assert not published
    assert "fetch" in calls  # left to the fetch, which refuses it too
    assert not (repo / ".git" / "objects" / blob[:2] / blob[2:]).exists()
    assert run_git(repo, "rev-parse", "orch/DEMO-1") == run_git(repo, "rev-parse", "main")


def test_a_blob_pruned_after_the_copy_is_fetched_before_the_branch_moves(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prune in the clone (gc.pruneExpire=now) takes a copied blob before the swap: git's
    # look at the tip finds it missing, and the fetch brings it; the branch is whole.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    blob = run_git(ws, "rev-parse", "HEAD:feature.txt").strip()
    real = worktrees.objects.bring_tip

    def then_pruned(workspace: Path, store: Path, tip: str, limits: Any) -> bool:
        done = real(workspace, store, tip, limits)
        (store / blob[:2] / blob[2:]).unlink()
        return done

    monkeypatch.setattr(worktrees.objects, "bring_tip", then_pruned)
    (published, detail), calls = _counted_publish(repo, ws)
    assert published, detail
    assert calls.count("rev-list") == 1
    assert "fetch" in calls
    assert _whole(repo, "refs/heads/orch/DEMO-1")


def test_a_workspace_with_a_pack_publishes_by_a_fetch(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("the attempt's work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    run_git(ws, "repack", "-q", "-a", "-d", "-l")
    assert list((ws / ".git" / "objects" / "pack").glob("*.pack"))
    (published, detail), calls = _counted_publish(repo, ws)
    assert published, detail
    assert "fetch" in calls
    assert _whole(repo, "refs/heads/orch/DEMO-1")


def test_a_clone_whose_config_cannot_be_read_gets_its_attempt_by_a_fetch(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clone asks its fetches to check objects; the one `git config` call that would
    # tell so times out. Not knowing is not "no": the fetch runs, and refuses the blob.
    repo = make_repo(files={"README.md": "demo\n"})
    run_git(repo, "config", "fetch.fsckObjects", "true")
    real = squash.run_git

    def slow_config(args: Any, cwd: Path, **kw: Any) -> GitResult:
        if list(args)[:1] == ["config"]:
            return GitResult(("git", *args), -1, "", "git timed out after 120s", timed_out=True)
        return real(args, cwd, **kw)

    monkeypatch.setattr(squash, "run_git", slow_config)
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / ".gitmodules").write_text('[submodule "../../modules/evil"]\n\tpath = e\n\turl = ./e\n')
    assert commits.commit_all(ws, "DEMO-1: work")
    (published, detail), calls = _counted_publish(repo, ws)
    assert not published, detail
    assert "fetch" in calls
    blob = run_git(ws, "rev-parse", "HEAD:.gitmodules").strip()
    assert not _has(repo, blob)


def test_a_linked_worktree_clone_that_checks_fetches_is_checked(
    tmp_path: Path, make_repo: Any
) -> None:
    # The user's clone is a linked worktree whose own config (extensions.worktreeConfig)
    # asks its fetches to check objects: its config is the one read, not the main clone's.
    main_clone = make_repo(files={"README.md": "demo\n"})
    repo = tmp_path / "linked"
    run_git(main_clone, "worktree", "add", "-q", "-b", "trunk", str(repo))
    run_git(main_clone, "config", "extensions.worktreeConfig", "true")
    run_git(repo, "config", "--worktree", "fetch.fsckObjects", "true")
    made = worktrees.ensure_worktree(repo, "trunk", tmp_path / "worktrees", "demo", "DEMO-1")
    assert made.error is None, made.error
    assert made.path is not None
    ws = made.path
    (ws / ".gitmodules").write_text('[submodule "../../modules/evil"]\n\tpath = e\n\turl = ./e\n')
    assert commits.commit_all(ws, "DEMO-1: work")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert not published, detail
    blob = run_git(ws, "rev-parse", "HEAD:.gitmodules").strip()
    assert not _has(main_clone, blob)


# --------------------------------------------------------------------------- the re-test's status
# Round 1's re-test takes the landing's own ``git status`` (untracked files listed) when
# its rebase was a no-op; anything else asks git again. What the gate's own status caught
# must still be caught: a tree that passed beside an untracked file is never recorded as
# validated (the next gate would skip its re-test on that record).


def _recorded(bed: MergeBed, tree: str) -> bool:
    with bed.engine.connect() as conn:
        row = merges.find_validated_tree(
            conn, repo_id=bed.repo.id, tree=tree, cmd_key=merges.cmd_key(bed.repo.test_cmd or [])
        )
    return row is not None


def _unrecorded_because(verdict: Any, path: str) -> bool:
    why = f"tree not recorded as validated: worktree not clean (1 uncommitted path(s): {path})"
    return any(why in reason for reason in verdict.reasons)


def test_a_file_left_before_the_gate_keeps_the_retested_tree_unrecorded(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    # A staging run (untrusted code) left a file in the workspace. Round 1's rebase is a
    # no-op, so the re-test reads the landing's status: the file is in it.
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    bed.develop(task, fill_slot(CALC, TESTS, "a", "a", 2), "a")
    (bed.worktree(task) / "left-by-staging.txt").write_text("x\n")
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert (verdict.fields["retest"], verdict.fields["rounds"]) == ("ran", "1")
    assert _unrecorded_because(verdict, "left-by-staging.txt"), verdict.reasons
    assert not _recorded(bed, run_git(bed.repo_path, "rev-parse", "main^{tree}").strip())


def test_a_file_the_first_retest_leaves_keeps_the_next_rounds_tree_unrecorded(
    tmp_path: Path, engine: sa.Engine, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round 1's re-test (the branch's own suite: untrusted) leaves a file, then main moves
    # under the gate. Round 2 re-tests a new tree: it must see the file, not the status the
    # landing read before round 1.
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    leaves = (
        "from pathlib import Path\n\n\ndef test_leaves():\n    Path('left.txt').write_text('x')\n"
    )
    files = {**fill_slot(CALC, TESTS, "a", "a", 2), "test_leaves.py": leaves}
    bed.develop(task, files, "a")
    real = merge_gate.retest_branch
    trees: list[str] = []

    def retest_then_main_moves(*args: Any, **kwargs: Any) -> merge_gate.RetestResult:
        trees.append(run_git(bed.worktree(task), "rev-parse", "HEAD^{tree}").strip())
        result = real(*args, **kwargs)
        if len(trees) == 1:
            commit_files(bed.repo_path, {"other.txt": "someone else\n"}, "someone else")
        return result

    monkeypatch.setattr(merge_gate, "retest_branch", retest_then_main_moves)
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert (verdict.fields["rounds"], len(trees)) == ("2", 2)
    assert _recorded(bed, trees[0])  # round 1 ran on a clean worktree
    assert _unrecorded_because(verdict, "left.txt"), verdict.reasons
    assert not _recorded(bed, trees[1])


def test_a_file_a_rebase_stops_ignoring_keeps_the_retested_tree_unrecorded(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    # The file was ignored when the landing read its status; round 1's rebase brings a
    # main whose .gitignore no longer ignores it. A rebase that moved the files is no
    # no-op: the re-test asks git, and sees the file.
    ignoring = {**PROJECT, ".gitignore": "__pycache__/\n*.log\n"}
    bed = MergeBed(tmp_path, engine, make_repo, files=ignoring)
    task = bed.add_task()
    bed.develop(task, fill_slot(CALC, TESTS, "a", "a", 2), "a")
    (bed.worktree(task) / "run.log").write_text("x\n")
    commit_files(bed.repo_path, {".gitignore": "__pycache__/\n"}, "logs are not ignored")
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert (verdict.fields["retest"], verdict.fields["rounds"]) == ("ran", "1")
    assert _unrecorded_because(verdict, "run.log"), verdict.reasons
    assert not _recorded(bed, run_git(bed.repo_path, "rev-parse", "main^{tree}").strip())


# --------------------------------------------------------------------------- one transaction
# A no-op rebase of a published branch moves the user's branch in the same transaction as
# main (was: the branch before the judge, main after it). Whatever comes between, the user's
# clone ends as it did then.


def _published_task(tmp_path: Path, make_repo: Any) -> tuple[Path, Path]:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    return repo, ws


def _land_judged(repo: Path, ws: Path, judge: land.Judge, *, max_rounds: int = 3) -> land.Landing:
    request = LandRequest(
        repo_path=repo,
        main="main",
        remote=None,
        worktree=ws,
        key="DEMO-1",
        title="a task",
        author=None,
        main_seen=None,
        max_rounds=max_rounds,
    )
    return land.land(request, judge)


def test_a_candidate_judged_red_is_still_shown_on_the_users_branch(
    tmp_path: Path, make_repo: Any
) -> None:
    repo, ws = _published_task(tmp_path, make_repo)
    main = run_git(repo, "rev-parse", "main").strip()
    landing = _land_judged(repo, ws, lambda c: Judgement("RED", "red", ("re-test failed",)))
    assert (landing.status, landing.classification) == ("RED", "red"), landing.reasons
    assert landing.candidate is not None
    assert run_git(repo, "rev-parse", "orch/DEMO-1").strip() == landing.candidate
    assert run_git(repo, "rev-parse", "main").strip() == main


def test_a_users_branch_moved_during_the_judge_still_lands_and_is_published(
    tmp_path: Path, make_repo: Any
) -> None:
    # The transaction refuses (the user's branch is not where the landing read it): the
    # branch is published the long way, as it was when the user's move came before its
    # publication (the branch is now published with main, after the judge), then main
    # moves alone.
    repo, ws = _published_task(tmp_path, make_repo)
    main = run_git(repo, "rev-parse", "main").strip()

    def judge(candidate: land.Candidate) -> Judgement:
        run_git(repo, "update-ref", "refs/heads/orch/DEMO-1", main)  # the user's doing
        return Judgement(reasons=("judged",))

    landing = _land_judged(repo, ws, judge)
    assert landing.status == "MERGED", landing.reasons
    assert run_git(repo, "rev-parse", "main").strip() == landing.merged_sha
    assert run_git(repo, "rev-parse", "orch/DEMO-1").strip() == landing.merged_sha
    assert run_git(repo, "rev-parse", "main^").strip() == main
    assert (repo / "feature.txt").read_text() == "work\n"  # the checkout followed


def test_main_moved_during_the_judge_moves_neither_ref_and_goes_round_again(
    tmp_path: Path, make_repo: Any
) -> None:
    repo, ws = _published_task(tmp_path, make_repo)
    judged: list[str] = []

    def judge(candidate: land.Candidate) -> Judgement:
        judged.append(candidate.sha)
        if candidate.round_no == 1:
            commit_files(repo, {"other.txt": "someone else\n"}, "someone else")
        return Judgement(reasons=("judged",))

    landing = _land_judged(repo, ws, judge)
    assert (landing.status, landing.rounds) == ("MERGED", 2), landing.reasons
    assert judged[1] == landing.merged_sha == run_git(repo, "rev-parse", "main").strip()
    assert run_git(repo, "log", "-1", "--format=%s", "main^").strip() == "someone else"
    assert run_git(repo, "rev-parse", "orch/DEMO-1").strip() == landing.merged_sha
    # Each round's candidate was on the user's branch, as when it was published before
    # the judge: round 1's after main refused it.
    history = run_git(repo, "reflog", "show", "--format=%H", "orch/DEMO-1").split()
    assert judged[0] in history


def test_a_retest_whose_protected_changes_cannot_be_read_does_not_run(
    tmp_path: Path, engine: sa.Engine, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The branch's protected changes against main tell which tests a human approved
    # removing. When git cannot list them, the re-test does not run: INFRA, named. Before,
    # the failure was read as "no change", so an approved removal would be required anyway
    # and its absence blamed on the code.
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    bed.develop(task, {"feature.txt": "work\n"}, "work")
    real = merge_gate.protected.check_paths

    def failing(worktree: Path, base: str, head: str, *a: Any, **kw: Any) -> Any:
        found = real(worktree, base, head, *a, **kw)
        if base == head:  # the files beside the tree: read as they are
            return found
        return dataclasses.replace(found, changes=(), problem="git diff failed: planted")

    monkeypatch.setattr(merge_gate.protected, "check_paths", failing)
    before = bed.main_sha()
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "INFRA", verdict.reasons
    assert verdict.fields["retest"] != "ran", verdict.fields
    assert (
        "cannot tell the branch's protected changes before the re-test: git diff failed: planted"
        in (" ".join(verdict.reasons))
    )
    assert bed.main_sha() == before
