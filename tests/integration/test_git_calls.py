"""How much git the hot paths run, and that the shortcuts behind the counts stay exact.

Real git repositories. Git calls are counted by wrapping ``gitops.git.git`` (every git
call of the orchestrator goes through that module attribute); counts, never timings. What
is held: a development attempt's commit and its publication, a first attempt's gate told
by that commit, a job's start on a workspace that records main already, a task's first
workspace, the merge gate's landing of a published branch whose tree needs no re-test (no
fetch), its re-test told by the landing's status, a workspace's removal and a done task's
branch deletion, and no automatic maintenance in a workspace. Beside each count, the
shortcut's exactness: an attempt with nothing to commit; unmerged paths, a staged line
that may be a marker, markers of another size or on a file's first line, a staged blob
that is not loose, an index that held more than HEAD (the commit reads the index file:
``gitops/index_file.py``); a user's branch that moved on or that exists already, a main
that moved or whose refs git packed, a tag that ``main`` names first, an unpublished
branch, a linked worktree, a re-encoded commit message, a rebase a crash left stopped,
each state of the checkout main moves in (dirty, another branch, detached, a bare config,
a linked worktree, a symbolic-link HEAD, a HEAD file git reads to a NUL or does not trim,
a branch that is an alias of another), and the branch's commits as ``git log`` prints them
(odd messages and authors; a merge, a long or packed branch, an encoding left to git).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.domain.stages import Stage
from orchestrator.domain.verdicts import Verdict
from orchestrator.gates import registry
from orchestrator.gates.context import GateContext
from orchestrator.gitops import ancestry, commits, land, merge, squash, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.land import Candidate, Judgement, LandRequest
from orchestrator.runners import protected
from orchestrator.store.rows import RepoRow, TaskRow

try:
    from merge_helpers import CALC, TESTS, MergeBed, fill_slot, run_git
except ImportError:  # imported as tests.integration.test_git_calls
    from tests.integration.merge_helpers import CALC, TESTS, MergeBed, fill_slot, run_git

# Conflict debris an attempt leaves: git's markers around two sides of a line.
DEBRIS = "<<<<<<< ours\na = 1\n=======\na = 2\n>>>>>>> theirs\n"


@contextmanager
def counted() -> Iterator[list[tuple[str, ...]]]:
    """Every git call made inside the block, as its argv after the safe settings."""
    calls: list[tuple[str, ...]] = []
    real = gitcmd.git

    def wrapper(args: Sequence[str], cwd: Path, **kw: Any) -> gitcmd.GitResult:
        calls.append(tuple(args))
        return real(args, cwd, **kw)

    gitcmd.git = wrapper  # type: ignore[assignment]
    try:
        yield calls
    finally:
        gitcmd.git = real  # type: ignore[assignment]


def _subcommands(calls: list[tuple[str, ...]]) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for args in calls:
        rest = list(args)
        while rest and rest[0] == "-c":
            rest = rest[2:]
        out[rest[0] if rest else "?"] += 1
    return out


def _git(cwd: Path, *args: str) -> str:
    return run_git(cwd, *args).strip()


def _git_in(cwd: Path, text: str, *args: str) -> str:
    """``git <args>`` in ``cwd`` reading ``text``; its stdout, stripped."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, input=text, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _workspace(repo: Path, root: Path, key: str = "DEMO-1") -> Path:
    made = worktrees.ensure_worktree(repo, "main", root, "demo", key)
    assert made.error is None, made.error
    assert made.path is not None
    return made.path


# --------------------------------------------------------------------------- development


def test_an_attempt_is_committed_and_published_without_a_fetch(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    for n in (1, 2):
        (ws / f"feature{n}.txt").write_text(f"work {n}\n")
        with counted() as calls:
            done = commits.commit_all(ws, f"DEMO-1: work {n}")
            published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
        assert done.status == "committed", done.detail
        assert published, detail
        asked = _subcommands(calls)
        # The user's clone's config (how it writes objects) is read once, then kept.
        assert asked.pop("config", 0) == (1 if n == 1 else 0), calls
        asked.pop("--exec-path", None)  # where git keeps its system config: once a process
        # add and commit (unmerged paths and what add staged are read from the index
        # file, and no staged line could be a conflict marker: was ls-files --unmerged and
        # diff --cached --check besides); the attempt's objects copied into the user's
        # store, rev-list to see the tip whole there, one compare-and-swap. (Before: a
        # fetch of four processes instead of the last two.)
        assert asked == {"add": 1, "commit": 1, "rev-list": 1, "update-ref": 1}
        assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(ws, "rev-parse", "HEAD")
        assert _git(repo, "show", f"orch/DEMO-1:feature{n}.txt") == f"work {n}"
    _git(repo, "fsck", "--no-dangling", "--connectivity-only")


def _dev_gate(ws: Path, repo: Path, tmp_path: Path, branch_diff: str | None) -> Verdict:
    """The development gate's branch check on ``ws``, told ``branch_diff`` by the job."""
    row = RepoRow(
        id=1,
        name="demo",
        path=str(repo),
        main_branch="main",
        remote=None,
        key_prefix="DEMO",
        next_task_number=2,
        test_cmd=None,
        staging_cmd=None,
        deploy_cmd=None,
        health_url=None,
        stages=["development"],
        agents={},
        agent_env=[],
        options={},
        self_hosting=False,
        created_at=0.0,
        updated_at=0.0,
    )
    task = TaskRow(
        id=1,
        key="DEMO-1",
        repo_id=1,
        number=1,
        title="t",
        body="",
        stage="development",
        state="active",
        reasons=[],
        developer_retries=0,
        infra_retries=0,
        created_at=0.0,
        updated_at=0.0,
    )
    ctx = GateContext(
        task, row, Stage.DEVELOPMENT, tmp_path / "task", ws, Settings(home=tmp_path / "home")
    )
    return registry.check_branch_has_diff(dataclasses.replace(ctx, branch_diff=branch_diff))


def test_a_first_attempts_gate_is_told_the_branch_by_its_commit(
    tmp_path: Path, make_repo: Any
) -> None:
    # The branch was main itself: the attempt's commit is its whole change. The commit's
    # summary is what `git diff --stat main...HEAD` says, and the gate runs no git (was:
    # diff --stat and diff --check, 2 calls, after the 2 of the commit).
    repo = make_repo(files={"README.md": "demo\n", "old.txt": "a\nb\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    (ws / "old.txt").write_text("a\n")
    with counted() as calls:
        done = commits.commit_all(ws, "DEMO-1: work", main="main")
    assert _subcommands(calls) == {"add": 1, "commit": 1}
    assert done.branch_diff is not None, done
    asked = commits.has_diff_vs(ws, "main")
    assert (
        asked
        == (True, done.branch_diff)
        == (True, "2 files changed, 1 insertion(+), 1 deletion(-)")
    )
    with counted() as calls:
        told = _dev_gate(ws, repo, tmp_path, done.branch_diff)
    assert calls == []
    assert told == _dev_gate(ws, repo, tmp_path, None)  # what git's answer gives, the same
    assert told.passed
    # A second attempt (the branch is main plus one commit): the gate asks git.
    (ws / "more.txt").write_text("more\n")
    again = commits.commit_all(ws, "DEMO-1: more", main="main")
    assert again
    assert again.branch_diff is None


def test_the_commit_tells_the_branch_only_when_git_would_agree(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    # A tag named main: "main" is the tag to git, not the branch.
    ws = _workspace(repo, root, "DEMO-1")
    _git(ws, "tag", "main", "HEAD")
    (ws / "a.txt").write_text("a\n")
    assert commits.commit_all(ws, "DEMO-1: a", main="main").branch_diff is None
    # The user's branch held a commit of its own (a task continued from a branch): HEAD
    # is not main.
    _git(repo, "checkout", "-q", "-b", "orch/DEMO-2")
    (repo / "mine.txt").write_text("mine\n")
    _git(repo, "add", "mine.txt")
    _git(repo, "commit", "-qm", "user's own start")
    _git(repo, "checkout", "-q", "main")
    ws2 = _workspace(repo, root, "DEMO-2")
    (ws2 / "b.txt").write_text("b\n")
    assert commits.commit_all(ws2, "DEMO-2: b", main="main").branch_diff is None
    # Conflict debris: refused, nothing told.
    ws3 = _workspace(repo, root, "DEMO-3")
    (ws3 / "c.txt").write_text("<<<<<<< ours\nc\n=======\nd\n>>>>>>> theirs\n")
    refused = commits.commit_all(ws3, "DEMO-3: c", main="main")
    assert (refused.status, refused.branch_diff) == ("refused", None)
    # Without a main to compare with (the patch backend's and aider's use), nothing told.
    (ws3 / "d.txt").write_text("d\n")
    assert commits.commit_all(ws3, "DEMO-3: d").branch_diff is None


def test_a_workspace_commit_or_rebase_starts_no_maintenance(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `git commit` and `git rebase` start `git maintenance run --auto` (a process of its
    # own) unless told not to: a task's workspace, a scratch repository, never needs it.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    (repo / "other.txt").write_text("main moves\n")
    _git(repo, "add", "other.txt")
    _git(repo, "commit", "-qm", "main moves")
    assert worktrees.sync_main(ws, repo, "main") is None
    assert merge.rebase_onto(ws, _git(repo, "rev-parse", "main")).status == "ok"
    said = trace.read_text()
    assert "commit" in said  # both traced
    assert "rebase" in said
    assert "maintenance" not in said


def test_an_attempt_with_nothing_to_commit_is_empty_not_an_error(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    head = _git(ws, "rev-parse", "HEAD")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "x.pyc").write_bytes(b"\0")  # a by-product: never committed
    with counted() as calls:
        done = commits.commit_all(ws, "DEMO-1: nothing")
    assert (done.status, done.detail) == ("empty", "nothing to commit")
    assert _git(ws, "rev-parse", "HEAD") == head
    # The index files told that add staged nothing: no diff --cached --quiet after the
    # commit git refused.
    assert _subcommands(calls) == {"add": 1, "commit": 1}


def test_conflict_markers_are_refused_and_undone(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    head = _git(ws, "rev-parse", "HEAD")
    (ws / "calc.py").write_text(DEBRIS)
    done = commits.commit_all(ws, "DEMO-1: debris")
    assert done.status == "refused"
    assert "conflict markers: calc.py" in done.detail
    assert _git(ws, "rev-parse", "HEAD") == head
    assert not (ws / "calc.py").exists()


def _attempt(ws: Path) -> tuple[commits.Committed, collections.Counter[str], str]:
    """``commit_all`` in ``ws``: what it did, the git it ran, and HEAD before it."""
    head = _git(ws, "rev-parse", "HEAD")
    with counted() as calls:
        done = commits.commit_all(ws, "DEMO-1: attempt", main="main")
    return done, _subcommands(calls), head


def _refused_by_git_for_markers(ws: Path, path: str) -> None:
    """An attempt in ``ws`` is refused for the conflict markers in ``path``, as git's
    ``diff --cached --check`` found them, and nothing is committed."""
    done, asked, head = _attempt(ws)
    assert done.status == "refused", done.detail
    assert f"conflict markers: {path}" in done.detail
    assert asked["diff"] == 1
    assert asked["commit"] == 0
    assert _git(ws, "rev-parse", "HEAD") == head


def test_a_staged_line_that_may_be_a_marker_is_left_to_git(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "notes.md").write_text("# Notes\n\n> a quote starts like a marker\n")
    done, asked, _ = _attempt(ws)
    assert done.status == "committed", done.detail
    assert asked == {"add": 1, "diff": 1, "commit": 1}  # git said: no marker


def test_a_marker_check_git_cannot_make_refuses_the_attempt(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `diff --cached --check` failing (killed, out of memory, a broken index) is not "no
    # markers": the attempt is refused as when the check found some, git's failure named.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "calc.py").write_text(DEBRIS)
    real = gitcmd.git

    def failing(args: Sequence[str], cwd: Path, **kw: Any) -> gitcmd.GitResult:
        if "--check" in args:
            return gitcmd.GitResult(("git", *args), 128, "", "fatal: planted")
        return real(args, cwd, **kw)

    monkeypatch.setattr(gitcmd, "git", failing)
    done, asked, head = _attempt(ws)
    assert done.status == "refused", done.detail
    assert "git diff --cached --check failed" in done.detail
    assert "planted" in done.detail
    assert asked["commit"] == 0
    assert _git(ws, "rev-parse", "HEAD") == head


def test_markers_of_another_size_are_found_by_git(tmp_path: Path, make_repo: Any) -> None:
    # An attribute makes markers three characters long: a line "<<< ours" is one to git.
    repo = make_repo(
        files={"README.md": "demo\n", ".gitattributes": "*.txt conflict-marker-size=3\n"}
    )
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "calc.txt").write_text("<<< ours\na = 1\n===\na = 2\n>>> theirs\n")
    _refused_by_git_for_markers(ws, "calc.txt")


def test_a_marker_on_a_files_first_line_is_found(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "top.py").write_text("=======\na = 1\n")
    _refused_by_git_for_markers(ws, "top.py")


def test_markers_in_a_file_whose_name_is_not_utf8_are_refused(
    tmp_path: Path, make_repo: Any
) -> None:
    # The agent names its files: git prints a name as its bytes in ``diff --check``'s
    # report, and a name that is not UTF-8 must not turn the refusal into a crash.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    debris = ws / os.fsdecode(b"\xff-calc.py")
    debris.write_text(DEBRIS)
    done, asked, head = _attempt(ws)
    assert done.status == "refused", done.detail
    assert "-calc.py" in done.detail
    assert asked["commit"] == 0
    assert _git(ws, "rev-parse", "HEAD") == head
    assert not debris.exists()  # undone: the staged file is gone with the attempt


def test_an_untracked_file_whose_name_is_not_utf8_is_undone_with_the_attempt(
    tmp_path: Path, make_repo: Any
) -> None:
    # A by-product ``add`` leaves out, named in bytes that are not UTF-8, beside debris:
    # the refusal lists the untracked files to delete them, and must not crash on its name.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "calc.py").write_text(DEBRIS)
    odd = ws / os.fsdecode(b"\xff.pyc")
    odd.write_bytes(b"\0")
    done, _, head = _attempt(ws)
    assert done.status == "refused", done.detail
    assert "the attempt was undone" in done.detail
    assert _git(ws, "rev-parse", "HEAD") == head
    assert not odd.exists()
    assert not (ws / "calc.py").exists()


def test_a_staged_file_whose_bytes_are_not_loose_is_left_to_git(
    tmp_path: Path, make_repo: Any
) -> None:
    # The user's clone keeps main's older files in a pack, and the attempt copies one with
    # markers to a new path: its blob is no loose object the workspace can read (main's
    # last commit and its tree are loose: the rest is read from files).
    repo = make_repo(files={"README.md": "demo\n", "kept.txt": DEBRIS})
    _git(repo, "gc", "-q")
    (repo / "README.md").write_text("demo, again\n")
    _git(repo, "commit", "-qam", "after the gc")
    kept = _git(repo, "rev-parse", "HEAD:kept.txt")
    assert not (repo / ".git" / "objects" / kept[:2] / kept[2:]).exists()
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "copy.txt").write_text(DEBRIS)
    _refused_by_git_for_markers(ws, "copy.txt")


def test_what_was_staged_before_the_attempt_is_checked_by_git(
    tmp_path: Path, make_repo: Any
) -> None:
    # The index held more than HEAD before add (its cache of trees says another tree):
    # comparing it with the index after add would miss the markers staged already.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "early.py").write_text(DEBRIS)
    _git(ws, "add", "early.py")
    _git(ws, "write-tree")  # a whole cache of trees, of a tree that is not HEAD's
    (ws / "later.py").write_text("b = 1\n")
    _refused_by_git_for_markers(ws, "early.py")


def test_unmerged_paths_are_refused_and_undone(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n", "calc.py": "a = 0\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    blobs = [_git_in(ws, f"a = {n}\n", "hash-object", "-w", "--stdin") for n in (0, 1, 2)]
    stages = "".join(f"100644 {sha} {n}\tcalc.py\n" for n, sha in enumerate(blobs, 1))
    _git_in(ws, f"0 {'0' * 40}\tcalc.py\n{stages}", "update-index", "--index-info")
    assert _git(ws, "ls-files", "--unmerged")
    (ws / "calc.py").write_text("a = 2\n")
    done, asked, head = _attempt(ws)
    assert done.status == "refused", done.detail
    assert "unmerged paths (a conflict left unresolved): calc.py" in done.detail
    assert asked["add"] == 0
    assert asked["commit"] == 0
    assert _git(ws, "rev-parse", "HEAD") == head
    assert not _git(ws, "ls-files", "--unmerged")
    assert (ws / "calc.py").read_text() == "a = 0\n"


def test_a_users_branch_that_moved_on_is_still_published(tmp_path: Path, make_repo: Any) -> None:
    # The fast-forward is refused (the user's branch holds a commit the workspace has
    # not): the branch is then read and moved by compare-and-swap, as it always was.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    _git(repo, "checkout", "-q", "-b", "side")
    (repo / "side.txt").write_text("side\n")
    _git(repo, "add", "side.txt")
    _git(repo, "commit", "-qm", "side")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "update-ref", "refs/heads/orch/DEMO-1", _git(repo, "rev-parse", "side"))
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(ws, "rev-parse", "HEAD")


# --------------------------------------------------------------------------- a job's start


def test_a_job_on_a_workspace_that_records_main_runs_no_git(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    _workspace(repo, root)
    with counted() as calls:
        ws = _workspace(repo, root)
    assert calls == []
    # Main moved: the workspace records the new main, its branch file swapped under git's
    # lock (was: one `git update-ref`).
    (repo / "more.txt").write_text("more\n")
    _git(repo, "add", "more.txt")
    _git(repo, "commit", "-qm", "more")
    with counted() as calls:
        _workspace(repo, root)
    assert calls == []
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")


def test_a_tasks_first_workspace_takes_three_git_calls(tmp_path: Path, make_repo: Any) -> None:
    # Create orch/<KEY> at main in the user's clone (the old value "" says it did not
    # exist: no question first), init, read-tree. Main and the object store are read from
    # the clone's .git; the new workspace's branch and main are written as its files (was:
    # 8 calls, then 6, then 4 with the two refs in one update-ref).
    repo = make_repo(files={"README.md": "demo\n"})
    with counted() as calls:
        ws = _workspace(repo, tmp_path / "worktrees")
    assert _subcommands(calls) == {"update-ref": 1, "init": 1, "read-tree": 1}, calls
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")
    assert _git(ws, "rev-parse", "HEAD") == _git(repo, "rev-parse", "orch/DEMO-1")
    assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(repo, "rev-parse", "main")
    alternates = (ws / ".git" / "objects" / "info" / "alternates").read_text().strip()
    assert alternates == str((repo / ".git" / "objects").resolve())
    assert _git(ws, "status", "--porcelain") == ""


def test_a_task_whose_branch_exists_starts_from_it(tmp_path: Path, make_repo: Any) -> None:
    # The user's orch/<KEY> is there already (a workspace removed, an earlier release),
    # packed, so no loose file tells: the create is refused, the branch is read, and the
    # workspace starts from it, the branch untouched.
    repo = make_repo(files={"README.md": "demo\n"})
    main = _git(repo, "rev-parse", "main")
    _git(repo, "checkout", "-q", "-b", "orch/DEMO-1")
    (repo / "earlier.txt").write_text("earlier work\n")
    _git(repo, "add", "earlier.txt")
    _git(repo, "commit", "-qm", "earlier")
    _git(repo, "checkout", "-q", "main")
    tip = _git(repo, "rev-parse", "orch/DEMO-1")
    _git(repo, "pack-refs", "--all")
    assert worktrees.loose_ref(repo / ".git", "refs/heads/orch/DEMO-1") is None
    ws = _workspace(repo, tmp_path / "worktrees")
    assert _git(ws, "rev-parse", "HEAD") == tip
    assert _git(repo, "rev-parse", "orch/DEMO-1") == tip
    assert _git(ws, "rev-parse", "main") == main
    assert (ws / "earlier.txt").read_text() == "earlier work\n"


def test_a_first_workspace_of_a_git_worktree_clone_asks_git(tmp_path: Path, make_repo: Any) -> None:
    # The user's clone is itself a `git worktree`: its objects live in the main clone's
    # .git, which only git knows.
    main_clone = make_repo(files={"README.md": "demo\n"})
    linked = tmp_path / "linked"
    _git(main_clone, "worktree", "add", "-q", "-b", "side", str(linked))
    made = worktrees.ensure_worktree(linked, "side", tmp_path / "worktrees", "demo", "DEMO-2")
    assert made.path is not None, made.error
    alternates = (made.path / ".git" / "objects" / "info" / "alternates").read_text().strip()
    assert alternates == str((main_clone / ".git" / "objects").resolve())


def test_packed_refs_are_read_by_git(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    ws = _workspace(repo, root)
    (repo / "more.txt").write_text("more\n")
    _git(repo, "add", "more.txt")
    _git(repo, "commit", "-qm", "more")
    _git(repo, "pack-refs", "--all")  # no loose ref left: git is asked
    _git(ws, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert worktrees.loose_ref(repo / ".git", "refs/heads/main") is None
    _workspace(repo, root)
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")


def test_loose_ref_reads_only_plain_branch_files(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    git_dir = repo / ".git"
    assert worktrees.loose_ref(git_dir, "refs/heads/main") == _git(repo, "rev-parse", "main")
    for odd in ("HEAD", "refs/heads/../../HEAD", "refs/heads/", "refs/tags/v1"):
        assert worktrees.loose_ref(git_dir, odd) is None, odd
    _git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert worktrees.loose_ref(git_dir, "refs/heads/alias") is None  # "ref: ..." is git's
    assert worktrees.loose_ref(repo / "nowhere", "refs/heads/main") is None


def test_a_first_job_and_a_removal_run_no_worktree_prune(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    with counted() as calls:
        _workspace(repo, root, "DEMO-2")
        worktrees.remove_worktree(repo, root, "demo", "DEMO-2")
        worktrees.prune_orphan_worktrees(repo, root, "demo", [])
    assert _subcommands(calls)["worktree"] == 0, calls
    assert not (root / "demo" / "DEMO-2").exists()


def test_a_done_tasks_branch_is_deleted_in_one_git_call(tmp_path: Path, make_repo: Any) -> None:
    # Its tip, main, "is the tip on main" and "is it checked out" are read from the
    # clone's files (loose refs, the tip is main itself, one HEAD): only the deletion, a
    # compare-and-delete, is git's (was: 5 calls).
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    ws = _workspace(repo, root)
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    assert _land(repo, ws).status == "MERGED"
    with counted() as calls:
        done = worktrees.remove_worktree(repo, root, "demo", "DEMO-1", merged_into="main")
    assert done is not None
    assert done.status == "deleted", done.detail
    assert calls == [("update-ref", "--stdin")]
    assert _git(repo, "branch", "--list", "orch/*") == ""


def test_a_done_tasks_branch_checked_out_in_the_clone_is_kept(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    _workspace(repo, root)  # orch/DEMO-1 at main: merged, nothing of its own
    _git(repo, "checkout", "-q", "orch/DEMO-1")
    with counted() as calls:
        kept = worktrees.remove_worktree(repo, root, "demo", "DEMO-1", merged_into="main")
    assert kept is not None
    assert (kept.status, kept.detail) == (
        "kept",
        "orch/DEMO-1 kept: it is checked out in a worktree",
    )
    assert calls == []
    # Packed refs and a linked worktree: git answers, the same.
    _git(repo, "checkout", "-q", "main")
    _git(repo, "worktree", "add", "-q", str(tmp_path / "linked"), "orch/DEMO-1")
    _git(repo, "pack-refs", "--all")
    with counted() as calls:
        kept = worktrees.remove_worktree(repo, root, "demo", "DEMO-1", merged_into="main")
    assert kept is not None
    assert kept.status == "kept", kept.detail
    assert _subcommands(calls)["worktree"] == 1, calls


def test_removing_a_legacy_git_worktree_still_prunes_it(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    old = root / "demo" / "DEMO-3"
    old.parent.mkdir(parents=True)
    _git(repo, "worktree", "add", "-q", "-b", "orch/DEMO-3", str(old), "main")
    assert worktrees.prune_orphan_worktrees(repo, root, "demo", []) == ["DEMO-3"]
    assert len(_git(repo, "worktree", "list").splitlines()) == 1


# --------------------------------------------------------------------------- merge gate


def _land(repo: Path, ws: Path, key: str = "DEMO-1") -> land.Landing:
    def judge(candidate: Candidate) -> Judgement:
        return Judgement(reasons=(f"judged {candidate.tree[:12]}",))

    request = LandRequest(
        repo_path=repo,
        main="main",
        remote=None,
        worktree=ws,
        key=key,
        title="a task",
        author=None,
        main_seen=None,
        max_rounds=3,
    )
    return land.land(request, judge)


def test_landing_a_published_branch_takes_five_git_calls_and_no_fetch(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    _git(repo, "config", "--add", "user.name", "Last Name Wins")
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    tree = _git(ws, "rev-parse", "HEAD^{tree}")
    with counted() as calls:
        landing = _land(repo, ws)
    assert landing.status == "MERGED", landing.reasons
    # status, commit-tree, the checkout's status, main's CAS with the branch's in the
    # user's clone (one transaction), the checkout's files. The branch's CAS in the
    # workspace is a swap of its file under git's lock. Main, HEAD and its trailer,
    # the branch's commits, whether main is under the branch and the branch the clone has
    # checked out are read from git's files (loose refs and commits, HEAD); the user's
    # name was asked by the branch's publication and kept; the commit is written into the
    # user's store, which holds its tree and parent already (the branch was published):
    # no fetch. (Before: 28, then 15, then 13, then 9, then 7, then 6.)
    assert _subcommands(calls)["fetch"] == 0, calls
    assert len(calls) == 5, _subcommands(calls)
    main = _git(repo, "rev-parse", "main")
    assert landing.merged_sha == main
    assert landing.tree == tree == _git(repo, "rev-parse", "main^{tree}")
    assert _git(repo, "rev-parse", "orch/DEMO-1") == main
    assert _git(repo, "log", "-1", "--format=%an", "main") == "Last Name Wins"
    assert _git(repo, "show", "main:feature.txt") == "work"
    assert (repo / "feature.txt").read_text() == "work\n"  # the checkout followed
    # The commit is in the user's own store (not only the workspace's), and complete.
    loose = repo / ".git" / "objects" / main[:2] / main[2:]
    assert loose.is_file()
    assert not (ws / ".git" / "objects" / main[:2] / main[2:]).exists()
    _git(repo, "fsck", "--no-dangling", "--connectivity-only")
    # Landed again (a crash before the bookkeeping): recognised, not merged twice.
    again = _land(repo, ws)
    assert (again.status, again.already) == ("MERGED", "already-merged")
    assert _git(repo, "rev-parse", "main") == main


def test_a_gate_that_retests_reads_the_workspaces_status_once(
    tmp_path: Path, engine: sa.Engine, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round 1 on a no-op rebase, a tree not yet validated: the landing's own status lists
    # the untracked files too, and answers the re-test's "is the worktree clean?" (was: a
    # status of the gate's own, 9 calls). The other status is the user's clone's checkout.
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    bed.develop(task, fill_slot(CALC, TESTS, "a", "a", 2), "a")
    ws = bed.worktree(task)
    where: list[tuple[str, Path]] = []
    real = gitcmd.git

    def wrapper(args: Sequence[str], cwd: Path, **kw: Any) -> gitcmd.GitResult:
        where.append((args[0], cwd))
        return real(args, cwd, **kw)

    monkeypatch.setattr(gitcmd, "git", wrapper)
    with counted() as calls:
        verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["retest"] == "ran"
    assert any("re-test passed" in r for r in verdict.reasons), verdict.reasons
    asked = _subcommands(calls)
    asked.pop("config", None)  # the user's name: asked once a process, then kept
    # status, commit-tree, the protected paths' ls-files and diff, the checkout's status,
    # main's CAS with the branch's (one transaction), the checkout's files.
    assert asked == {
        "status": 2,
        "commit-tree": 1,
        "update-ref": 1,
        "ls-files": 1,
        "diff": 1,
        "read-tree": 1,
    }
    assert [cwd for what, cwd in where if what == "status"] == [ws, bed.repo_path]


def _checkout_case(repo: Path, case: str) -> None:
    """Put the user's clone in one of the states main's checkout can be in."""
    if case == "other-branch":
        _git(repo, "checkout", "-q", "-b", "side")
    elif case == "detached":
        _git(repo, "checkout", "-q", "--detach")
    elif case == "bare-config":
        _git(repo, "config", "core.bare", "true")
    elif case == "linked-worktree":
        _git(repo, "worktree", "add", "-q", "--detach", str(repo.parent / "linked"))
    elif case == "symlinked-head":
        (repo / ".git" / "HEAD").unlink()
        (repo / ".git" / "HEAD").symlink_to("refs/heads/main")
    elif case == "dirty":
        (repo / "README.md").write_text("edited\n")
    elif case == "head-nul":  # git reads the file to its first NUL
        (repo / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\0junk\n")
    elif case == "head-form-feed":  # not white space to git: a branch of another name
        (repo / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\f\n")
    elif case == "branch-alias":  # main a symbolic ref to trunk: git names trunk
        _git(repo, "branch", "trunk")
        _git(repo, "symbolic-ref", "refs/heads/main", "refs/heads/trunk")
    elif case == "branch-alias-link":  # the same alias, written as a symbolic link
        _git(repo, "branch", "trunk")
        link = ("-c", "core.preferSymlinkRefs=true")
        _git(repo, *link, "symbolic-ref", "refs/heads/main", "refs/heads/trunk")


@pytest.mark.parametrize(
    ("case", "checkout", "asks_git"),
    [
        ("plain", "synced", False),
        ("dirty", "dirty", False),
        ("other-branch", "not-checked-out", False),
        ("detached", "not-checked-out", False),
        ("bare-config", "not-checked-out", True),
        ("linked-worktree", "synced", True),
        ("symlinked-head", "synced", True),
        ("head-nul", "synced", True),
        ("head-form-feed", "not-checked-out", False),
        ("branch-alias", "not-checked-out", True),
        ("branch-alias-link", "not-checked-out", True),
    ],
)
def test_the_checkout_main_moves_in_is_read_from_files_only_when_git_would_agree(
    tmp_path: Path, make_repo: Any, case: str, checkout: str, asks_git: bool
) -> None:
    # Which branch the user's clone has checked out is read from its HEAD file when that
    # says it plainly; git's rev-parse answers a linked worktree, a symbolic-link HEAD,
    # and (after its status fails) a .git folder whose config says core.bare.
    repo = make_repo(files={"README.md": "demo\n"})
    old = _git(repo, "rev-parse", "main")
    _git(repo, "checkout", "-q", "-b", "next")
    (repo / "new.txt").write_text("new\n")
    _git(repo, "add", "new.txt")
    _git(repo, "commit", "-q", "-m", "next")
    new = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "branch", "-q", "-D", "next")
    _checkout_case(repo, case)
    with counted() as calls:
        cas = merge.advance_main(repo, "main", new, old)
    assert (cas.status, cas.checkout) == ("ok", checkout), cas
    assert _git(repo, "rev-parse", "main") == new
    assert (_subcommands(calls)["rev-parse"] > 0) is asks_git, calls
    if case == "bare-config":
        assert cas.notes == (f"{repo} is bare",)
        return
    synced = checkout == "synced"
    assert (repo / "new.txt").exists() is synced
    if case == "dirty":
        assert (repo / "README.md").read_text() == "edited\n"
    elif synced:
        assert _git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_clone_whose_refs_are_reftables_is_asked_which_branch_it_has(
    make_repo: Any,
) -> None:
    # Git 2.45+ can keep refs in reftables; such a clone's HEAD file names no branch but a
    # stub (git 2.39 here cannot read the clone: its layout is written as newer gits do).
    repo = make_repo(files={"README.md": "demo\n"})
    assert ancestry.checked_out_plainly(repo) == ["refs/heads/main"]
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/.invalid\n")
    (repo / ".git" / "reftable").mkdir()
    (repo / ".git" / "reftable" / "tables.list").write_text("")
    assert ancestry.checked_out_plainly(repo) is None


def test_landing_asks_the_users_name_again_only_when_a_config_changes(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    names = []
    for i, key in enumerate(("DEMO-1", "DEMO-2", "DEMO-3")):
        if i == 2:
            _git(repo, "config", "user.name", "Renamed")  # a config byte changed
        ws = _workspace(repo, root, key)
        (ws / f"f{i}.txt").write_text("work\n")
        # Publishing asks too (how the clone writes objects): the same answer, kept.
        with counted() as calls:
            assert commits.commit_all(ws, f"{key}: work")
            assert worktrees.publish_branch(repo, ws, key)[0]
            assert _land(repo, ws, key).status == "MERGED"
        names.append((_subcommands(calls)["config"], _git(repo, "log", "-1", "--format=%an")))
    assert names[1][0] == 0  # nothing changed since the first landing: not asked
    assert names[2] == (1, "Renamed")
    assert names[0][1] == names[1][1] != "Renamed"


def test_an_unpublished_branch_is_landed_by_a_fetch(tmp_path: Path, make_repo: Any) -> None:
    # The user's orch/<KEY> is not at the branch tip (its last attempt was never
    # published): its objects may be in the workspace only, so the commit is made there
    # and fetched, as it always was.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    with counted() as calls:
        landing = _land(repo, ws)
    assert landing.status == "MERGED", landing.reasons
    assert _subcommands(calls)["fetch"] == 1, calls
    assert _git(repo, "show", "main:feature.txt") == "work"
    _git(repo, "fsck", "--no-dangling", "--connectivity-only")


def test_a_stopped_rebase_in_the_workspace_is_aborted_before_landing(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "README.md").write_text("branch\n")
    assert commits.commit_all(ws, "DEMO-1: branch edit")
    assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
    tip = _git(ws, "rev-parse", "HEAD")
    (repo / "README.md").write_text("main\n")
    _git(repo, "commit", "-qam", "main edit")
    worktrees.sync_main(ws, repo, "main")
    # A crash left a conflicted rebase behind (git's own state folder in the workspace).
    run_git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "rebase", "main", check=False)
    assert (ws / ".git" / "rebase-merge").exists()
    landing = _land(repo, ws)
    assert landing.status == "CONFLICT", landing.reasons
    assert not (ws / ".git" / "rebase-merge").exists()
    assert _git(ws, "rev-parse", "HEAD") == tip


# --------------------------------------------------------------------------- testing


def _commit_raw(repo: Path, body: bytes) -> str:
    """A commit object of exactly ``body``'s bytes (headers and message), written loose."""
    proc = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
        cwd=repo,
        input=body,
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode().strip()


def _chain(repo: Path, base: str, bodies: list[bytes]) -> str:
    """Commits of ``bodies`` (each after its tree and parent headers) on ``base``; HEAD's
    branch moved to the last."""
    tree = _git(repo, "rev-parse", f"{base}^{{tree}}")
    sha = base
    for body in bodies:
        sha = _commit_raw(repo, b"tree %s\nparent %s\n" % (tree.encode(), sha.encode()) + body)
    _git(repo, "update-ref", "refs/heads/main", sha)
    return sha


# Author headers and messages as git may hold them: blank and white-space-only lines before
# and inside the subject, CR LF, tabs, form feeds, no final line break, UTF-8, zones on
# both sides of UTC and "-0000", names with spaces around them.
_ODD_COMMITS = [
    b"author Ada Lovelace <ada@tests.invalid> 1733555000 +0000\n"
    b"committer C <c@tests.invalid> 1733555000 +0000\n\nplain subject\n\nbody\n",
    b"author  Spaced  Name \t <odd@tests.invalid> 915177600 -0800\n"
    b"committer C <c@tests.invalid> 1 +0000\n\n\n \t\n\vsubject after blank lines\n"
    b"second line of it \t\n \nbody\n",
    b"author Zoned <z@tests.invalid> 981173106 +0530\ncommitter C <c@tests.invalid> 1 +0000\n\n"
    b"subject with trailing spaces   \r\nnext\r\n\r\nbody\r\n",
    "author Ünïcödé — Name <u@tests.invalid> 1700000000 -0000\ncommitter C <c@x> 1 +0000\n\n"
    "ünïcödé subject — dash\nline\f\n\fnext\n".encode(),
    b"author NoName <> 2000000000 +1400\ncommitter C <c@x> 1 +0000\n\nno line break at the end",
    b"author Tabbed <t@tests.invalid> 1234567890 -0930\ncommitter C <c@x> 1 +0000\n"
    b"\n  leading spaces kept\tand a tab\n",
    b"author A>B <b<c@tests.invalid>1 +0000\ncommitter C <c@x> 1 +0000\n\nangles\n",
    b"author <only@tests.invalid> 7 +0000\ncommitter C <c@x> 1 +0000\n\nno name\n",
]


def test_the_branchs_commits_are_read_from_files_as_git_log_prints_them(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The merge gate's squash lists the branch's commits; read from their loose objects,
    # every field is what `git log` prints for it.
    repo = make_repo(files={"README.md": "demo\n"})
    base = _git(repo, "rev-parse", "main")
    _chain(repo, base, _ODD_COMMITS)
    with counted() as calls:
        read = squash._branch_commits(repo, base)
    assert calls == []
    monkeypatch.setattr(ancestry, "commits_since", lambda *_: None)
    with counted() as calls:
        logged = squash._branch_commits(repo, base)
    assert _subcommands(calls) == {"log": 1}
    assert read is not None
    assert logged is not None
    assert len(read) == len(_ODD_COMMITS)
    for mine, gits in zip(read, logged, strict=True):
        assert mine == gits


def test_a_log_output_encoding_in_the_config_changes_neither_reading(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user's i18n.logOutputEncoding (Latin-1 here) would make git log re-encode the
    # UTF-8 messages and names the files give as they are: git is told UTF-8.
    repo = make_repo(files={"README.md": "demo\n"})
    _git(repo, "config", "i18n.logOutputEncoding", "ISO-8859-1")
    base = _git(repo, "rev-parse", "main")
    # Latin-1 can hold every letter of it (git keeps the bytes of what it cannot re-encode).
    latin = "author Ünï <u@tests.invalid> 7 +0000\ncommitter C <c@x> 1 +0000\n\nünï\n"
    _chain(repo, base, [latin.encode()])
    read = squash._branch_commits(repo, base)
    monkeypatch.setattr(ancestry, "commits_since", lambda *_: None)
    assert read is not None
    assert (read[0].author.name, read[0].message) == ("Ünï", "ünï\n")
    assert read == squash._branch_commits(repo, base)


def test_a_log_output_encoding_in_the_config_does_not_break_a_commits_trailer(
    tmp_path: Path, make_repo: Any
) -> None:
    # The gate reads HEAD's trailer (and a commit's message) with git log when the commit
    # is not loose: under a Latin-1 i18n.logOutputEncoding, git re-encoded the message and
    # reading it as UTF-8 raised out of the landing.
    repo = make_repo(files={"README.md": "demo\n"})
    _git(repo, "config", "i18n.logOutputEncoding", "ISO-8859-1")
    base = _git(repo, "rev-parse", "main")
    trailer = b"\n\n\xc3\xbcn\xc3\xaf\n\nOrch-Task: DEMO-1\n"
    head = _chain(repo, base, [_ODD_COMMITS[0].split(b"\n\n")[0] + trailer])
    _git(repo, "repack", "-a", "-d", "-q")
    _git(repo, "prune-packed")
    with counted() as calls:
        found = merge.head_and_task(repo)
    assert _subcommands(calls) == {"log": 1}, calls
    assert found == (head, "DEMO-1")
    assert (merge.commit_message(repo, head) or "").startswith("ünï\n\nOrch-Task: DEMO-1\n")
    assert merge.task_of_commit(repo, head) == "DEMO-1"


@pytest.mark.parametrize(
    "case",
    [
        "merge",
        "long",
        "encoding",
        "packed",
        "author-spacing",
        "far-future",
        "short-base",
        "nul-in-message",
        "two-authors",
    ],
)
def test_a_branch_the_files_cannot_answer_for_is_listed_by_git(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    base = _git(repo, "rev-parse", "main")
    plain = _ODD_COMMITS[0]
    if case == "merge":
        side = _chain(repo, base, [plain])
        _git(repo, "update-ref", "refs/heads/main", base)
        tree = _git(repo, "rev-parse", f"{base}^{{tree}}")
        merged = _commit_raw(repo, f"tree {tree}\nparent {base}\nparent {side}\n".encode() + plain)
        _git(repo, "update-ref", "refs/heads/main", merged)
    elif case == "long":
        _chain(repo, base, [plain.replace(b"plain", b"plain %d" % n) for n in range(70)])
    elif case == "encoding":
        _chain(repo, base, [plain.replace(b"\n\nplain", b"\nencoding ISO-8859-1\n\nplain")])
    elif case == "packed":
        _chain(repo, base, [plain, plain.replace(b"plain", b"second")])
        _git(repo, "repack", "-a", "-d", "-q")
        _git(repo, "prune-packed")
    elif case == "author-spacing":
        _chain(repo, base, [plain.replace(b"1733555000 +0000", b"1733555000   +0000")])
    elif case == "far-future":  # the year 10000
        _chain(repo, base, [plain.replace(b"1733555000 +0000", b"253402300800 +0000")])
    elif case == "nul-in-message":  # git prints a message to its first NUL only
        _chain(repo, base, [plain.replace(b"body\n", b"body\0\nOrch-Task: OTHER-1\n")])
    elif case == "two-authors":  # git reads the last
        second = b"\nauthor Second <s@tests.invalid> 7 +0100\ncommitter"
        _chain(repo, base, [plain.replace(b"\ncommitter", second)])
    else:  # the base given as something other than a full name
        _chain(repo, base, [plain])
        base = base[:12]
    with counted() as calls:
        read = squash._branch_commits(repo, base)
    assert _subcommands(calls) == {"log": 1}, calls
    monkeypatch.setattr(ancestry, "commits_since", lambda *_: None)
    assert read == squash._branch_commits(repo, base)
    assert read
    if case == "nul-in-message":  # the trailer after the NUL is not git's
        assert read[-1].message == "plain subject\n\nbody"
        assert merge.task_of_message(read[-1].message) is None
    elif case == "two-authors":
        assert (read[-1].author, read[-1].date) == (
            squash.Ident("Second", "s@tests.invalid"),
            "1970-01-01T01:00:07+01:00",
        )


def test_the_protected_check_of_a_branch_on_main_runs_no_merge_base(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo()
    ws = _workspace(repo, tmp_path / "wt")
    for i in range(3):
        (ws / f"feature{i}.txt").write_text("work\n")
        assert commits.commit_all(ws, f"DEMO-1: work {i}")
    with counted() as calls:
        found = protected.check_task_branch(ws, "main", None, tmp_path / "task")
    assert found.problem is None
    assert found.base == _git(ws, "merge-base", "main", "HEAD") == _git(repo, "rev-parse", "main")
    assert _subcommands(calls)["merge-base"] == 0, calls
    assert len(calls) <= 2, _subcommands(calls)


def test_a_merge_base_not_main_is_left_to_git(tmp_path: Path, make_repo: Any) -> None:
    # Main moved past the branch's start: the merge base is an older commit; git says which.
    repo = make_repo()
    ws = _workspace(repo, tmp_path / "wt")
    start = _git(repo, "rev-parse", "main")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    (repo / "other.txt").write_text("other\n")
    _git(repo, "add", "other.txt")
    _git(repo, "commit", "-q", "-m", "main moves on")
    assert worktrees.sync_main(ws, repo, "main") is None
    assert ancestry.main_if_ancestor(ws, "main") is None
    found = protected.check_task_branch(ws, "main", None, tmp_path / "task")
    assert found.base == start


def test_the_ancestry_shortcut_answers_only_what_git_would(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo()
    ws = _workspace(repo, tmp_path / "wt")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    main = _git(ws, "rev-parse", "main")
    assert ancestry.main_if_ancestor(ws, "main") == main
    git_dir = ws / ".git"
    head = _git(ws, "rev-parse", "HEAD")
    # A tag named main comes before the branch in git's reading of "main": git's question.
    _git(ws, "tag", "main", "HEAD")
    assert ancestry.main_if_ancestor(ws, "main") is None
    _git(ws, "tag", "-d", "main")
    assert ancestry.main_if_ancestor(ws, "main") == main
    # A replace ref could give HEAD other parents: git's question.
    _git(ws, "replace", head, main)
    assert ancestry.main_if_ancestor(ws, "main") is None
    _git(ws, "replace", "-d", head)
    # A loose object that is not what its name says is never read as that commit.
    obj = git_dir / "objects" / head[:2] / head[2:]
    obj.chmod(0o644)
    real = obj.read_bytes()
    obj.write_bytes(zlib.compress(f"commit 50\0tree {'0' * 40}\nparent {main}\n".encode()))
    assert ancestry.main_if_ancestor(ws, "main") is None
    obj.write_bytes(real)
    assert ancestry.main_if_ancestor(ws, "main") == main
    # Packed: a tag named main still comes first; the branches themselves are read loose
    # or by git.
    _git(ws, "tag", "main", "HEAD")
    _git(ws, "pack-refs", "--all")
    assert not (git_dir / "refs" / "tags" / "main").exists()
    assert ancestry.main_if_ancestor(ws, "main") is None
    _git(ws, "tag", "-d", "main")
    assert ancestry.main_if_ancestor(ws, "main") is None  # main is packed now: git's
    assert protected.check_task_branch(ws, "main", None, tmp_path / "task").base == main


def test_descends_agrees_with_git_on_every_pair_of_a_history(
    tmp_path: Path, make_repo: Any
) -> None:
    # A history with branches and merges (commit-tree: any parents), every pair asked both
    # ways: where the walk answers, git answers the same.
    repo = make_repo()
    tree = _git(repo, "rev-parse", "HEAD^{tree}")
    shas = [_git(repo, "rev-parse", "HEAD")]
    rng = random.Random(19)
    for i in range(14):
        parents = rng.sample(shas, k=min(len(shas), rng.choice((1, 1, 2))))
        argv = ["commit-tree", tree, "-m", f"c{i}"]
        for p in parents:
            argv += ["-p", p]
        shas.append(_git(repo, *argv))
    answered = 0
    for a in shas:
        for b in shas:
            known = ancestry.descends(repo, a, b)
            if known is None:
                continue
            answered += 1
            git_says = subprocess.run(
                ["git", "merge-base", "--is-ancestor", a, b], cwd=repo, timeout=30, check=False
            )
            assert git_says.returncode in (0, 1)
            assert known == (git_says.returncode == 0), (a, b)
    assert answered == len(shas) ** 2  # all loose: every pair answered without git
    # An object that is not there: git fails, so the walk does not say "no".
    assert ancestry.descends(repo, "1" * 40, shas[-1]) is None
    # Packed: git's question.
    _git(repo, "update-ref", "refs/heads/all", shas[-1])
    _git(repo, "gc", "-q")
    assert ancestry.descends(repo, shas[0], shas[-1]) is None


def test_a_loose_commit_is_read_as_git_reads_it(tmp_path: Path, make_repo: Any) -> None:
    # HEAD's SHA and trailer (the merge gate's "already merged?") and a commit's tree (the
    # baseline's main) from loose objects: the same as git's, or no answer.
    repo = make_repo()
    ws = _workspace(repo, tmp_path / "wt")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    tree = _git(ws, "rev-parse", "HEAD^{tree}")
    messages = [
        "DEMO-1: one\n\nbody\n\nOrch-Task: DEMO-1\n",
        "no trailer",
        "  spaced subject \n\n\n  trailing lines  \n\n",
        "Orch-Task: OTHER-2\nOrch-Task: DEMO-1\n",
        "héllo wörld ✓\n",
    ]
    main = _git(ws, "rev-parse", "main")
    for message in messages:
        made = subprocess.run(
            ["git", "commit-tree", tree, "-p", main, "-F", "-"],
            cwd=ws,
            input=message,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        _git(ws, "update-ref", "refs/heads/orch/DEMO-1", made)
        with counted() as calls:
            head, task = merge.head_and_task(ws)
            tree_read = merge.tree_of(ws, made)
        assert calls == []
        assert head == made
        logged = subprocess.run(
            ["git", "log", "-1", "--format=%B", "HEAD"],
            cwd=ws,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert task == merge.task_of_message(logged)
        assert tree_read == tree
        loose = ancestry.read_commit(ws, made)
        assert loose is not None
        assert loose.message + "\n" == logged  # %B, and log's newline after it
        assert loose.parents == (main,)
    # A message git would re-encode: git reads it.
    latin = (
        subprocess.run(
            ["git", "-c", "i18n.commitEncoding=ISO-8859-1", "commit-tree", tree, "-p", main],
            cwd=ws,
            input="caf\xe9\n".encode("latin-1"),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    assert ancestry.read_commit(ws, latin) is None
    _git(ws, "update-ref", "refs/heads/orch/DEMO-1", latin)
    with counted() as calls:
        assert merge.head_and_task(ws)[0] == latin
    assert _subcommands(calls) == {"log": 1}
    # Replaced, or not loose: git's.
    _git(ws, "replace", latin, main)
    assert ancestry.read_commit(ws, latin) is None
    _git(ws, "replace", "-d", latin)
    assert ancestry.read_commit(ws, main) is not None
    _git(repo, "gc", "-q")
    assert ancestry.read_commit(ws, main) is None
    with counted() as calls:
        assert merge.tree_of(ws, main) == _git(repo, "rev-parse", "main^{tree}")
    assert len(calls) == 1
