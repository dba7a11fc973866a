"""How much git the hot paths run, and that the shortcuts behind the counts stay exact.

Real git repositories. Git calls are counted by wrapping ``gitops.git.git`` (every git
call of the orchestrator goes through that module attribute); counts, never timings. What
is held: a development attempt's commit and its publication, a job's start on a workspace
that records main already, the merge gate's landing of a branch whose tree needs no
re-test, and a workspace's removal. Beside each count, the shortcut's exactness: an
attempt with nothing to commit, a user's branch that moved on, a main that moved or whose
refs git packed, a rebase a crash left stopped.
"""

from __future__ import annotations

import collections
import random
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.gitops import ancestry, commits, land, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.land import Candidate, Judgement, LandRequest
from orchestrator.runners import protected

try:
    from merge_helpers import run_git
except ImportError:  # imported as tests.integration.test_git_calls
    from tests.integration.merge_helpers import run_git


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


def _workspace(repo: Path, root: Path, key: str = "DEMO-1") -> Path:
    made = worktrees.ensure_worktree(repo, "main", root, "demo", key)
    assert made.error is None, made.error
    assert made.path is not None
    return made.path


# --------------------------------------------------------------------------- development


def test_an_attempt_is_committed_and_published_in_five_git_calls(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    with counted() as calls:
        done = commits.commit_all(ws, "DEMO-1: work")
        published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert done.status == "committed", done.detail
    assert published, detail
    # ls-files --unmerged, add, diff --cached --check, commit; one fetch that moves the
    # user's branch by a fast-forward. (Before: ten.)
    assert len(calls) <= 5, _subcommands(calls)
    assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(ws, "rev-parse", "HEAD")
    assert _git(repo, "show", "orch/DEMO-1:feature.txt") == "work"


def test_an_attempt_with_nothing_to_commit_is_empty_not_an_error(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    head = _git(ws, "rev-parse", "HEAD")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "x.pyc").write_bytes(b"\0")  # a by-product: never committed
    done = commits.commit_all(ws, "DEMO-1: nothing")
    assert (done.status, done.detail) == ("empty", "nothing to commit")
    assert _git(ws, "rev-parse", "HEAD") == head


def test_conflict_markers_are_refused_and_undone(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    head = _git(ws, "rev-parse", "HEAD")
    (ws / "calc.py").write_text("<<<<<<< ours\na = 1\n=======\na = 2\n>>>>>>> theirs\n")
    done = commits.commit_all(ws, "DEMO-1: debris")
    assert done.status == "refused"
    assert "conflict markers: calc.py" in done.detail
    assert _git(ws, "rev-parse", "HEAD") == head
    assert not (ws / "calc.py").exists()


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
    # Main moved: the workspace records the new main (one write).
    (repo / "more.txt").write_text("more\n")
    _git(repo, "add", "more.txt")
    _git(repo, "commit", "-qm", "more")
    with counted() as calls:
        _workspace(repo, root)
    assert _subcommands(calls) == {"update-ref": 1}
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")


def test_a_tasks_first_workspace_takes_six_git_calls(tmp_path: Path, make_repo: Any) -> None:
    # Is there an orch/<KEY> already, create it, init, the branch, read-tree, main. Main
    # and the object store are read from the clone's .git (was: 8 calls).
    repo = make_repo(files={"README.md": "demo\n"})
    with counted() as calls:
        ws = _workspace(repo, tmp_path / "worktrees")
    assert len(calls) <= 6, _subcommands(calls)
    assert _subcommands(calls)["rev-parse"] == 1, calls
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")
    assert _git(ws, "rev-parse", "HEAD") == _git(repo, "rev-parse", "orch/DEMO-1")
    alternates = (ws / ".git" / "objects" / "info" / "alternates").read_text().strip()
    assert alternates == str((repo / ".git" / "objects").resolve())
    assert _git(ws, "status", "--porcelain") == ""


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


def test_landing_a_branch_takes_at_most_thirteen_git_calls(tmp_path: Path, make_repo: Any) -> None:
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
    # status, main, HEAD and its trailer, the branch's log, the user's name, commit-tree,
    # the branch's CAS, fetch + CAS of the user's branch, the checkout's state (2), main's
    # CAS, the checkout's files. Whether main is under the branch is read from the loose
    # commits (ancestry.descends). (Before: 28, then 15.)
    assert len(calls) <= 13, _subcommands(calls)
    main = _git(repo, "rev-parse", "main")
    assert landing.merged_sha == main
    assert landing.tree == tree == _git(repo, "rev-parse", "main^{tree}")
    assert _git(repo, "rev-parse", "orch/DEMO-1") == main
    assert _git(repo, "log", "-1", "--format=%an", "main") == "Last Name Wins"
    assert _git(repo, "show", "main:feature.txt") == "work"
    assert (repo / "feature.txt").read_text() == "work\n"  # the checkout followed
    # Landed again (a crash before the bookkeeping): recognised, not merged twice.
    again = _land(repo, ws)
    assert (again.status, again.already) == ("MERGED", "already-merged")
    assert _git(repo, "rev-parse", "main") == main


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
