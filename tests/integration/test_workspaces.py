"""A task's workspace: a repository of its own that borrows the user's objects.

Real git repositories in temp dirs. What is checked: the workspace shares nothing with the
user's clone that a job could write (its own config, refs and hooks folder; only the object
store is borrowed), the orchestrator's commits reach the user's ``orch/<KEY>`` by
publication, a workspace of an earlier release (a ``git worktree``) is replaced without
losing committed work, and a fresh start carries a commit not yet published.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from orchestrator.gitops import commits, merge, worktrees
from orchestrator.gitops.lock import repo_lock

try:
    from merge_helpers import run_git
except ImportError:  # imported as tests.integration.test_workspaces
    from tests.integration.merge_helpers import run_git


def _git(cwd: Path, *args: str) -> str:
    return run_git(cwd, *args).strip()


def _workspace(repo: Path, root: Path, key: str = "DEMO-1") -> Path:
    made = worktrees.ensure_worktree(repo, "main", root, "demo", key)
    assert made.error is None, made.error
    assert made.path is not None
    return made.path


def test_the_workspace_is_a_repository_of_its_own(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    git_dir = ws / ".git"
    assert git_dir.is_dir()
    assert (ws / "README.md").read_text() == "demo\n"
    # Nothing of the user's clone but its objects: no remote, no other branch, no hooks.
    alternates = (git_dir / "objects" / "info" / "alternates").read_text().split()
    assert alternates == [str((repo / ".git" / "objects").resolve())]
    assert _git(ws, "remote") == ""
    assert _git(ws, "for-each-ref", "--format=%(refname)").split() == [
        "refs/heads/main",
        "refs/heads/orch/DEMO-1",
    ]
    assert not (git_dir / "hooks").exists()
    assert (git_dir / "info" / "attributes").read_text() == worktrees.NEUTRAL_ATTRIBUTES
    # The user's clone shows the task's branch from the start, and no worktree of its own.
    assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(repo, "rev-parse", "main")
    assert len(_git(repo, "worktree", "list").splitlines()) == 1


def test_the_tree_attributes_pick_no_driver(tmp_path: Path, make_repo: Any) -> None:
    # The user's own config defines a filter (trusted); the agent's tree names it for every
    # path. In the workspace no filter runs on the orchestrator's `git add`.
    repo = make_repo(files={"README.md": "demo\n"})
    ran = tmp_path / "filter-ran"
    _git(repo, "config", "filter.evil.clean", f"sh -c 'touch {ran}; cat'")
    ws = _workspace(repo, tmp_path / "worktrees")
    _git(ws, "config", "filter.evil.clean", f"sh -c 'touch {ran}; cat'")
    (ws / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (ws / "new.txt").write_text("x\n")
    assert commits.commit_all(ws, "attempt")
    assert not ran.exists()


def test_commits_reach_the_users_branch_by_publication(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    tip = _git(ws, "rev-parse", "HEAD")
    assert _git(repo, "rev-parse", "orch/DEMO-1") != tip  # not until published
    published, detail = worktrees.publish_branch(repo, ws, "DEMO-1")
    assert published, detail
    assert _git(repo, "rev-parse", "orch/DEMO-1") == tip
    assert _git(repo, "show", "orch/DEMO-1:feature.txt") == "work"
    # The user's main is what the workspace calls main, at every use.
    (repo / "other.txt").write_text("y\n")
    _git(repo, "add", "other.txt")
    _git(repo, "commit", "-qm", "user moved main")
    again = worktrees.ensure_worktree(repo, "main", tmp_path / "worktrees", "demo", "DEMO-1")
    assert (again.path, again.created) == (ws, False)
    assert _git(ws, "rev-parse", "main") == _git(repo, "rev-parse", "main")


def test_a_worktree_of_an_earlier_release_is_replaced(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    old = root / "demo" / "DEMO-1"
    old.parent.mkdir(parents=True)
    _git(repo, "worktree", "add", "-q", "-b", "orch/DEMO-1", str(old), "main")
    (old / "done.txt").write_text("committed before the upgrade\n")
    _git(old, "add", "done.txt")
    _git(old, "commit", "-qm", "earlier work")
    ws = _workspace(repo, root)
    assert ws == old
    assert (ws / ".git").is_dir()
    assert (ws / "done.txt").read_text() == "committed before the upgrade\n"
    assert len(_git(repo, "worktree", "list").splitlines()) == 1  # the old one is pruned


def test_a_fresh_start_carries_an_unpublished_commit(tmp_path: Path, make_repo: Any) -> None:
    # A crash between the orchestrator's commit and its publication: the fresh start still
    # keeps that commit's change as the carried diff.
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    ws = _workspace(repo, root)
    (ws / "feature.txt").write_text("unpublished\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    carry = tmp_path / "carried.diff"
    fresh = worktrees.rebuild_from_main(repo, "main", root, "demo", "DEMO-1", carry_to=carry)
    assert fresh.error is None, fresh.error
    assert "+unpublished" in carry.read_text()
    assert not (ws / "feature.txt").exists()
    assert _git(repo, "rev-parse", "orch/DEMO-1") == _git(repo, "rev-parse", "main")
    assert _git(ws, "rev-parse", "HEAD") == _git(repo, "rev-parse", "main")


def test_a_removed_workspace_is_deleted_out_of_the_repositorys_lock(
    tmp_path: Path, make_repo: Any, monkeypatch: Any
) -> None:
    # Deleting a workspace's files (large for a large repository) does not hold the lock
    # the next task's workspace waits for: it is set aside under the lock, deleted after.
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    ws = _workspace(repo, root)
    (ws / "feature.txt").write_text("work\n")
    assert commits.commit_all(ws, "DEMO-1: work")
    real_rmtree = worktrees.shutil.rmtree
    free: list[bool] = []

    def rmtree(path: Any, *args: Any, **kw: Any) -> None:
        if Path(path).name.startswith(".DEMO-1.gone-"):
            took = threading.Event()

            def take() -> None:
                with repo_lock(repo):
                    took.set()

            probe = threading.Thread(target=take, daemon=True)
            probe.start()
            free.append(took.wait(timeout=10))
            probe.join(timeout=10)
        real_rmtree(path, *args, **kw)

    monkeypatch.setattr(worktrees.shutil, "rmtree", rmtree)
    worktrees.remove_worktree(repo, root, "demo", "DEMO-1")
    assert free == [True]
    assert sorted(p.name for p in (root / "demo").iterdir()) == []


def test_a_set_aside_workspace_a_crash_left_is_pruned_and_nothing_else(
    tmp_path: Path, make_repo: Any
) -> None:
    repo = make_repo(files={"README.md": "demo\n"})
    root = tmp_path / "worktrees"
    folder = root / "demo"
    folder.mkdir(parents=True)
    left = folder / ".DEMO-1.gone-0123456789ab"
    (left / "sub").mkdir(parents=True)
    (left / "sub" / "file.txt").write_text("x\n")
    others = [".DEMO-1.gone-xyz", ".notes.gone-0123456789ab", "notes", ".DEMO-2.new-x"]
    for name in others:
        (folder / name).mkdir()
    assert worktrees.prune_orphan_worktrees(repo, root, "demo", set()) == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(others)


def test_a_remotes_token_stays_out_of_what_a_fetch_or_a_push_says(
    tmp_path: Path, make_repo: Any
) -> None:
    # A URL remote with a token in it (`https://x-access-token:<token>@host/o/r.git`): what
    # the fetch and the push say becomes a task's reasons, which the API shows without a
    # token. Nothing listens on 127.0.0.1:9, so both fail, as an unreachable forge does.
    token = "FAKE-token-in-the-remote-0123"
    remote = f"https://x-access-token:{token}@127.0.0.1:9/acme/demo.git"
    repo = make_repo(files={"README.md": "demo\n"})
    made = worktrees.ensure_worktree(
        repo, "main", tmp_path / "worktrees", "demo", "DEMO-1", remote=remote
    )
    assert made.path is not None
    sha = _git(repo, "rev-parse", "main")
    pushed = merge.push_main_locked(repo, remote, "main", sha)
    fetched = merge.fetch_main_locked(repo, remote, "main")
    assert pushed.status == "error", pushed
    assert fetched.status == "error", fetched
    said = [*made.notes, pushed.detail, fetched.detail]
    for text in said:
        assert token not in text, text
    # The remote is still named: where it is, without who it is.
    assert any("https://***@127.0.0.1:9/acme/demo.git" in text for text in said), said
