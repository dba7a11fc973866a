"""A workspace per task: its own git repository on branch ``orch/<KEY>``, made from main.

The workspace (still called the task's worktree) is not a ``git worktree`` of the user's
repository: it is a repository of its own whose object store borrows the user's (git's
alternates, as ``git clone --shared`` makes), with one branch, no remote and a config the
orchestrator wrote. Inside the sandbox its ``.git`` is read-only and the user's repository
is out of sight, so the agent edits files and nothing else; the orchestrator commits from
outside and publishes the branch to the user's ``refs/heads/orch/<KEY>`` by a fetch and a
compare-and-swap (the merge gate's commit of a published tip is written into the user's
store itself, and only swapped in: ``land``). Nothing an agent writes is ever config, a
hook or a ref that one of the orchestrator's git calls reads.

This module makes, reuses, rebuilds, publishes and removes workspaces; what an attempt
leaves in one is committed or undone by ``gitops/commits.py``.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator import taskdir
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops import merge, objects, squash, workspace_refs
from orchestrator.gitops.ancestry import checked_out_plainly, descends, is_hex, loose_ref
from orchestrator.gitops.git import GitResult
from orchestrator.gitops.lock import repo_lock
from orchestrator.masking import masked_remote
from orchestrator.private_files import create_private, private_dir
from orchestrator.realpath import realpath

log = logging.getLogger(__name__)


def branch_name(key: str) -> str:
    """The task branch of task ``key``."""
    return f"orch/{key}"


def worktree_path(worktrees_root: Path, repo_name: str, key: str) -> Path:
    """``<home>/worktrees/<repo>/<KEY>``."""
    return worktrees_root / repo_name / key


@dataclass(frozen=True)
class WorktreeResult:
    """A worktree, or why none could be made (an infra problem, not the code's)."""

    path: Path | None
    created: bool
    error: str | None = None
    notes: tuple[str, ...] = ()  # how it was made (e.g. which main it started from)


def _explain(res: GitResult) -> str:
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def _git_message(res: GitResult) -> str:
    """Everything git said, on one line (bounded): the reason a human reads."""
    text = (res.stderr or res.stdout).strip()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())[:800] or (
        f"git exited {res.returncode}"
    )


# What every workspace's own ``info/attributes`` says (it takes precedence over the tree's
# ``.gitattributes``, which is the agent's to write): no filter, diff or merge driver is
# ever chosen by a path's attributes, so no program named in any config runs on a file the
# agent wrote when the orchestrator adds, diffs, checks out or rebases it.
NEUTRAL_ATTRIBUTES = "* !filter !diff !merge\n"
_STAGING_SUFFIX = ".new"
# A removed workspace set aside to be deleted out of the repository's lock; one a crash left
# there is deleted by the next prune.
_GONE_SUFFIX = ".gone-"


def git_dir_path(repo_path: Path, name: str) -> Path | None:
    """``git rev-parse --git-path NAME`` in ``repo_path``, absolute.

    A clone whose ``.git`` is a repository folder of its own (not a link, not a ``git
    worktree``'s, no ``GIT_*`` variable moving its parts) keeps it at ``.git/NAME``: no
    git call then."""
    git_dir = repo_path / ".git"
    env = gitcmd.git_environment()
    if (
        name == "objects"
        and not any(v in env for v in ("GIT_DIR", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY"))
        and git_dir.is_dir()
        and not git_dir.is_symlink()
        and not (git_dir / "commondir").exists()
        and (git_dir / "HEAD").is_file()
        and (git_dir / "refs").is_dir()
        and (git_dir / "objects").is_dir()
    ):
        return Path(realpath(git_dir / "objects"))
    res = gitcmd.git(["rev-parse", "--git-path", name], repo_path)
    if not res or not res.stdout.strip():
        return None
    found = Path(res.stdout.strip())
    return Path(realpath(found if found.is_absolute() else repo_path / found))


def plain_objects() -> bool:
    """No environment moves where git reads and writes objects (a workspace's object
    store and the one it borrows are then what their files say)."""
    env = gitcmd.git_environment()
    return not any(name in env for name in _OBJECTS_ENV)


_OBJECTS_ENV = (
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
)


def borrowed_stores(workspace: Path) -> list[Path]:
    """The object stores a workspace borrows (its ``objects/info/alternates``), as written."""
    try:
        text = (workspace / ".git" / "objects" / "info" / "alternates").read_text()
    except OSError:
        return []
    return [Path(line) for line in text.splitlines() if line.strip()]


def is_workspace(path: Path) -> bool:
    """Whether ``path`` holds a task workspace of the current kind (its own ``.git`` folder)."""
    git_dir = path / ".git"
    return git_dir.is_dir() and not git_dir.is_symlink()


def sync_main(
    workspace: Path, repo_path: Path, main_branch: str, *, sha: str | None = None
) -> str | None:
    """Point the workspace's ``refs/heads/<main>`` at the user's main (objects are shared),
    so ``main`` names the same commit in both; None, or why it could not.

    ``sha``: the user's main as the caller just read it. Every job starts here, so both
    refs are read as files when git keeps them loose (``loose_ref``), and the write is
    skipped when the workspace already records that main: no git call at all then.
    """
    ref = f"refs/heads/{main_branch}"
    if sha is None:
        sha = _main_of(repo_path, main_branch)
    if sha is None:
        return f"cannot read {main_branch} in {repo_path}"
    if is_workspace(workspace):
        recorded = loose_ref(workspace / ".git", ref)
        if recorded == sha:
            return None
        if recorded is not None and workspace_refs.swap(workspace / ".git", ref, sha, recorded):
            return None
    res = gitcmd.git(["update-ref", ref, sha], workspace)
    return None if res else f"cannot record {main_branch} in the workspace: {_explain(res)}"


def _make_workspace(
    repo_path: Path,
    path: Path,
    branch: str,
    start_sha: str,
    main_branch: str,
    *,
    main_sha: str | None = None,
) -> str | None:
    """Create the workspace at ``path`` on ``branch`` at ``start_sha``; None, or the error.

    It is built beside its place and renamed into it, so a crash never leaves a half-made
    workspace that looks whole.
    """
    objects = git_dir_path(repo_path, "objects")
    if objects is None:
        return f"cannot find the object store of {repo_path}"
    staging = path.with_name(f".{path.name}{_STAGING_SUFFIX}")
    if staging.exists():
        shutil.rmtree(staging)
    # The workspace folder is the user's alone (0700), made before git fills it; what git
    # checks out in it has the modes git gives it.
    private_dir(staging)
    # --template= : no sample hooks or anything else copied in from a template folder.
    made = gitcmd.git(
        ["init", "-q", "--template=", f"--initial-branch={branch}", str(staging)], path.parent
    )
    if not made:
        return f"git init: {_explain(made)}"
    git_dir = staging / ".git"
    (git_dir / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
    main_sha = main_sha or _main_of(repo_path, main_branch)
    if main_sha is None:
        shutil.rmtree(staging, ignore_errors=True)
        return f"cannot read {main_branch} in {repo_path}"
    # The task's branch and the user's main (what sync_main records): written as files in
    # this new repository that nothing else sees yet, else by git in one transaction.
    refs = {f"refs/heads/{branch}": start_sha, f"refs/heads/{main_branch}": main_sha}
    written = all([workspace_refs.swap(git_dir, ref, sha, None) for ref, sha in refs.items()])
    stdin = "".join(f"update {ref} {sha}\n" for ref, sha in refs.items())
    steps = [] if written else [(["update-ref", "--stdin"], stdin)]
    for step, text in (*steps, (["read-tree", "--reset", "-u", "HEAD"], None)):
        res = gitcmd.git(step, staging, input_text=text)
        if not res:
            shutil.rmtree(staging, ignore_errors=True)
            return f"git {step[0]}: {_explain(res)}"
    staging.rename(path)
    return None


def _main_of(repo_path: Path, main_branch: str) -> str | None:
    """The user's main: its loose branch file, else git's answer."""
    return loose_ref(repo_path / ".git", f"refs/heads/{main_branch}") or gitcmd.rev_parse_branch(
        repo_path, main_branch
    )


def _drop_stale(repo_path: Path, path: Path) -> None:
    """Remove what is at ``path`` that is not a usable workspace: a half-made one, or a
    ``git worktree`` of the user's repository from an earlier release (its committed work
    is on the user's ``orch/<KEY>``, which the new workspace starts from)."""
    if path.exists() or path.is_symlink():
        legacy = _is_legacy_worktree(path)
        _drop_worktree_dir(path)
        if legacy:
            gitcmd.git(["worktree", "prune"], repo_path)


def ensure_worktree(
    repo_path: Path,
    main_branch: str,
    worktrees_root: Path,
    repo_name: str,
    key: str,
    *,
    remote: str | None = None,
) -> WorktreeResult:
    """The task's workspace, created from a fresh main on first use and reused after.

    With a ``remote``, main is fetched first (and local main fast-forwarded to it), so a
    new task starts from what the remote has, not from a stale local copy. A task whose
    ``orch/<KEY>`` exists already (a workspace removed, or made by an earlier release)
    starts from that branch. Every use records the user's current main in the workspace.
    """
    path = worktree_path(worktrees_root, repo_name, key)
    if is_workspace(path):
        why = sync_main(path, repo_path, main_branch)
        if why is not None:
            return WorktreeResult(None, created=False, error=why)
        return WorktreeResult(path, created=False)
    with repo_lock(repo_path):
        return _add_worktree(repo_path, main_branch, path, key, remote)


def _start_point(repo_path: Path, main_branch: str, remote: str | None) -> tuple[str, list[str]]:
    """Where a new task branch starts: the fetched remote main, else local main."""
    if not remote:
        return main_branch, []
    fresh = merge.refresh_main_locked(repo_path, main_branch, remote)
    if fresh.status == "ok" and fresh.sha is not None:
        return fresh.sha, [fresh.detail]
    # The merge gate rebases onto the remote's main anyway: a stale start costs a bigger
    # rebase later, not correctness, so an unreachable remote does not stop the task.
    return main_branch, [
        f"fetch of {masked_remote(remote)} failed, started from local {main_branch}: {fresh.detail}"
    ]


def _add_worktree(
    repo_path: Path, main_branch: str, path: Path, key: str, remote: str | None
) -> WorktreeResult:
    _drop_stale(repo_path, path)
    branch = branch_name(key)
    ref = f"refs/heads/{branch}"
    notes: list[str] = []
    start_sha = loose_ref(repo_path / ".git", ref)
    main_sha = None
    if start_sha is None and not remote:
        # A task's first job, the usual case: create the branch at main if it does not
        # exist ("" as the old value), which tells whether it did; only if it did is it
        # read. (Asking first cost a git call on every new task.)
        main_sha = _main_of(repo_path, main_branch)
        if main_sha is None:
            return WorktreeResult(None, created=False, error=f"cannot read {main_branch}")
        if gitcmd.git(["update-ref", ref, main_sha, ""], repo_path):
            start_sha = main_sha
        else:
            main_sha = None
    if start_sha is None:
        start_sha = gitcmd.rev_parse(repo_path, f"{ref}^{{commit}}")
    if start_sha is None:
        start, notes = _start_point(repo_path, main_branch, remote)
        local = start == main_branch
        start_sha = (
            _main_of(repo_path, main_branch)
            if local
            else gitcmd.rev_parse(repo_path, f"{start}^{{commit}}")
        )
        if start_sha is None:
            return WorktreeResult(None, created=False, error=f"cannot read {main_branch}")
        # Local main, just read: the workspace records it as its main without reading it
        # again (a start fetched from the remote is not necessarily local main).
        main_sha = start_sha if local else None
        # The user's clone shows the task's branch from its first job on ("" as the old
        # value: only if no such branch exists yet).
        made = gitcmd.git(["update-ref", ref, start_sha, ""], repo_path)
        if not made:
            return WorktreeResult(None, False, f"cannot create {branch}: {_explain(made)}")
    error = _make_workspace(repo_path, path, branch, start_sha, main_branch, main_sha=main_sha)
    if error is not None:
        return WorktreeResult(None, created=False, error=error)
    return WorktreeResult(path, created=True, notes=tuple(notes))


def publish_branch(
    repo_path: Path,
    workspace: Path,
    key: str,
    *,
    tip: str | None = None,
    expect: str | None = None,
    present: bool = False,
) -> tuple[bool, str]:
    """Bring the user's ``orch/<KEY>`` to the workspace's branch tip; (published?, detail).

    The workspace is where the branch is made (the orchestrator commits and rebases there);
    the user's repository fetches the objects from it (no FETCH_HEAD is written, so fetches
    of two workers never race on it) and moves its ref by compare-and-swap from the value
    it read. Only ``git-upload-pack`` runs in the workspace, with every safe setting.

    A development attempt adds commits on top of the branch: one fetch whose refspec names
    the user's branch moves it, and git moves a ref that way only by a fast-forward from
    the value it read (never forced: no ``+``). The merge gate, which rewrites the branch,
    passes the ``tip`` it made; so does anyone for whom the fast-forward was refused (the
    user's branch moved on, or is checked out): then the ref is read and moved by
    ``update-ref <tip> <old>``. A development attempt's few objects need no fetch where
    a copy leaves what the fetch would (``_copied_to_user``): its tip is then swapped in
    the same way. ``expect``: where the caller believes the user's branch is;
    the compare-and-swap tries that value before reading the ref. ``present``: the user's
    repository holds every object of ``tip`` already (the merge gate wrote its commit
    there): no fetch; should the compare-and-swap fail, the long way (fetch, read, swap).
    """
    branch = branch_name(key)
    ref = f"refs/heads/{branch}"
    if tip is None and not present:
        tip = _copied_to_user(repo_path, workspace, ref)
        present = tip is not None
    if tip is None:
        forward = gitcmd.git([*_FETCH_FROM_WORKSPACE, str(workspace), f"{ref}:{ref}"], repo_path)
        if forward:
            return True, f"{branch} is published"
        tip = gitcmd.rev_parse(workspace, f"{ref}^{{commit}}")
        if tip is None:
            return False, f"the workspace has no {branch}"
    # A belief is only tried for a move: that the branch already is at the tip is read,
    # never assumed (main's compare-and-swap needs the tip's objects in the user's clone).
    guess = expect is not None and expect != tip
    current = (
        expect if guess else loose_ref(repo_path / ".git", ref) or gitcmd.rev_parse(repo_path, ref)
    )
    if current == tip:
        return True, f"{branch} is at {tip[:12]}"
    if present:
        moved = gitcmd.git(["update-ref", ref, tip, current or ""], repo_path)
        if moved:
            return True, f"{branch} is at {tip[:12]}"
        return publish_branch(repo_path, workspace, key, tip=tip)
    fetched = gitcmd.git([*_FETCH_FROM_WORKSPACE, str(workspace), ref], repo_path)
    if not fetched:
        return False, f"cannot fetch {branch} from the workspace: {_git_message(fetched)}"
    moved = gitcmd.git(["update-ref", ref, tip, current or ""], repo_path)
    if not moved and guess:
        # Not where the caller believed: read it, and compare-and-swap from what it is.
        current = gitcmd.rev_parse(repo_path, ref)
        if current == tip:
            return True, f"{branch} is at {tip[:12]}"
        moved = gitcmd.git(["update-ref", ref, tip, current or ""], repo_path)
    if not moved:
        return False, f"cannot move {branch} in {repo_path}: {_git_message(moved)}"
    return True, f"{branch} is at {tip[:12]}"


def _copied_to_user(repo_path: Path, workspace: Path, ref: str) -> str | None:
    """The workspace's branch tip, once every object it reaches is in the user's clone by
    a copy of the workspace's own loose objects it reaches (``objects.bring_tip``, where
    that is what a fetch would leave) and git says so (``rev-list --objects``: what a
    fetch's own connectivity check asks); None: leave it to the fetch."""
    store = user_store(repo_path, workspace)
    limits = None if store is None else squash.copy_limits(repo_path)
    if store is None or limits is None:
        return None
    tip = loose_ref(workspace / ".git", ref)
    if tip is None or not objects.bring_tip(workspace, store, tip, limits):
        return None
    # Objects the user's branch reaches are there (as those of every ref are, to a fetch):
    # only what the attempt adds is looked for.
    known = loose_ref(repo_path / ".git", ref)
    have = [known] if known is not None else ["--all"]
    whole = gitcmd.git(["rev-list", "--objects", "--quiet", tip, "--not", *have], repo_path)
    return tip if whole else None


def user_store(repo_path: Path, workspace: Path) -> Path | None:
    """The user's clone's object store when the workspace borrows exactly it and no
    environment moves where git reads objects; else None."""
    if not plain_objects():
        return None
    store = repo_path / ".git" / "objects"
    return store if borrowed_stores(workspace) == [store.resolve()] else None


_FETCH_FROM_WORKSPACE = (
    "fetch",
    "--quiet",
    "--no-tags",
    "--no-write-fetch-head",
    # A user's fetch.prune must not reach refs this fetch does not name.
    "--no-prune",
    gitcmd.UPLOAD_PACK,
)


def rebuild_from_main(
    repo_path: Path,
    main_branch: str,
    worktrees_root: Path,
    repo_name: str,
    key: str,
    *,
    carry_to: Path,
    remote: str | None = None,
) -> WorktreeResult:
    """Start the task's workspace again from current main (``orch task retry --fresh``, or
    a branch that no longer rebases).

    The branch's old change (a binary diff from where it forked off main to its tip) is
    saved to ``carry_to`` first, for the next attempt to offer or re-apply; a file already
    there is kept (the same job run again after a crash must not replace the old change by
    its own half-done one). The branch then moves to main by compare-and-swap.
    """
    path = worktree_path(worktrees_root, repo_name, key)
    branch = branch_name(key)
    ref = f"refs/heads/{branch}"
    with repo_lock(repo_path):
        if is_workspace(path):
            # The workspace may hold a commit the user's branch has not got yet (a crash
            # between the commit and its publication): the old change is the whole of it.
            published, detail = publish_branch(repo_path, path, key)
            if not published:
                return WorktreeResult(None, False, f"cannot save the old change: {detail}")
        start, notes = _start_point(repo_path, main_branch, remote)
        start_sha = gitcmd.rev_parse(repo_path, f"{start}^{{commit}}")
        if start_sha is None:
            return WorktreeResult(None, created=False, error=f"cannot read {main_branch}")
        old = gitcmd.rev_parse(repo_path, ref)
        if old is not None and not carry_to.exists():
            fork = gitcmd.git(["merge-base", start_sha, old], repo_path)
            if fork:
                # git keeps the mode of a file its --output truncates: the task's code, the
                # user's alone (0600).
                create_private(carry_to)
                diff = gitcmd.git(
                    [
                        "diff",
                        "--no-ext-diff",
                        "--no-textconv",
                        "--binary",
                        "--full-index",
                        f"--output={carry_to}",
                        fork.stdout.strip(),
                        old,
                        "--",
                    ],
                    repo_path,
                )
                if not diff:
                    carry_to.unlink(missing_ok=True)
                    why = _explain(diff)
                    return WorktreeResult(None, False, f"cannot save the old change: {why}")
                if carry_to.stat().st_size == 0:
                    carry_to.unlink()
        _drop_stale(repo_path, path)
        moved = gitcmd.git(["update-ref", ref, start_sha, old or ""], repo_path)
        if not moved:
            return WorktreeResult(None, False, f"cannot move {branch}: {_explain(moved)}")
        error = _make_workspace(repo_path, path, branch, start_sha, main_branch)
        if error is not None:
            return WorktreeResult(None, False, error)
    notes.append(f"started again from {main_branch} at {start_sha[:12]}")
    if carry_to.exists():
        notes.append(f"the old change is kept in {carry_to}")
    return WorktreeResult(path, created=True, notes=tuple(notes))


def _is_legacy_worktree(path: Path) -> bool:
    """Whether ``path`` is a ``git worktree`` of the user's repository (an earlier release's
    workspace: a ``.git`` file naming the repository's admin entry for it).

    Only removing one of those leaves git something to prune; a workspace of the current
    kind is a folder of its own, and a task's first job pays no ``git worktree prune``.
    """
    git_file = path / ".git"
    return git_file.is_file() and not git_file.is_symlink()


def _drop_worktree_dir(path: Path) -> None:
    # A workspace is a folder of ours: deleting it is all removal takes. (A `git worktree`
    # of an earlier release is pruned after by `git worktree prune`, which needs none of
    # the force flags gitops/ never holds, as a test checks.)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
    _drop_staging(path)


def _drop_staging(path: Path) -> None:
    # A workspace a crash left half-made beside its place.
    shutil.rmtree(path.with_name(f".{path.name}{_STAGING_SUFFIX}"), ignore_errors=True)


def _set_aside(path: Path) -> Path | None:
    """Rename a workspace folder out of its place (``.<KEY>.gone-<random>`` beside it),
    under the lock, so that deleting it can wait until the lock is free and no new
    workspace made at the same place is ever deleted with it; None: delete it in place."""
    if path.is_symlink() or not path.is_dir():
        return None
    aside = path.with_name(f".{path.name}{_GONE_SUFFIX}{uuid.uuid4().hex[:12]}")
    try:
        path.rename(aside)
    except OSError:
        return None
    _drop_staging(path)
    return aside


def remove_worktree(
    repo_path: Path,
    worktrees_root: Path,
    repo_name: str,
    key: str,
    *,
    merged_into: str | None = None,
) -> BranchCleanup | None:
    """Remove a task's worktree; with ``merged_into`` (a done task's main branch), delete
    its branch too when that branch holds it (``delete_merged_branch_locked``).

    Without ``merged_into`` the branch stays (cancelled, or kept on purpose): None.
    """
    path = worktree_path(worktrees_root, repo_name, key)
    aside: Path | None = None
    cleanup: BranchCleanup | None = None
    with repo_lock(repo_path):
        if path.exists():
            legacy = _is_legacy_worktree(path)
            aside = None if legacy else _set_aside(path)
            if aside is None:
                _drop_worktree_dir(path)
            if legacy:
                gitcmd.git(["worktree", "prune"], repo_path)
        if merged_into is not None:
            cleanup = delete_merged_branch_locked(repo_path, merged_into, key)
    if aside is not None:
        # Out of the lock: the next task's workspace in this repository need not wait.
        shutil.rmtree(aside, ignore_errors=True)
    if cleanup is None:
        return None
    level = logging.WARNING if cleanup.status == "error" else logging.INFO
    log.log(level, cleanup.detail, extra={"task": key, "action": f"branch-{cleanup.status}"})
    return cleanup


@dataclass(frozen=True)
class BranchCleanup:
    """What became of a done task's branch: ``deleted``, ``kept`` (why) or ``error``."""

    status: Literal["deleted", "kept", "error"]
    detail: str


def delete_merged_branch_locked(repo_path: Path, main_branch: str, key: str) -> BranchCleanup:
    """Delete ``orch/<KEY>`` from the user's clone, only when ``main_branch`` holds its tip.

    The caller holds ``repo_lock``. A branch with a commit main lacks is never deleted, nor
    one checked out anywhere. The deletion is a compare-and-delete (``update-ref --stdin``:
    ``delete <ref> <tip>``): if anyone moved the branch after the checks, git refuses and
    the branch, with their commit, stays. No force of any kind is needed or used.
    """
    branch = branch_name(key)
    ref = f"refs/heads/{branch}"
    git_dir = repo_path / ".git"
    # Each answer from git's files where they hold it (loose refs, loose commits, the one
    # HEAD of a clone without linked worktrees), else from git: a done task's branch is
    # usually main's tip itself, which no walk is needed to find under main.
    tip = loose_ref(git_dir, ref) or gitcmd.rev_parse(repo_path, f"{ref}^{{commit}}")
    if not tip:
        return BranchCleanup("kept", f"{branch}: no such branch, nothing to delete")
    main = _main_of(repo_path, main_branch)
    if not main:
        return BranchCleanup("kept", f"{branch} kept: no branch {main_branch} to compare with")
    on_main = descends(repo_path, tip, main)
    if on_main is None:
        merged = gitcmd.git(["merge-base", "--is-ancestor", tip, main], repo_path)
        if merged.timed_out or merged.returncode not in (0, 1):
            return BranchCleanup("error", f"{branch} kept: git merge-base: {_explain(merged)}")
        on_main = merged.returncode == 0
    if not on_main:
        return BranchCleanup(
            "kept", f"{branch} kept: its tip {tip[:12]} is not on {main_branch} (unmerged work)"
        )
    checked_out = checked_out_plainly(repo_path)
    if checked_out is None:
        listed = gitcmd.git(["worktree", "list", "--porcelain"], repo_path)
        if not listed:
            return BranchCleanup("error", f"{branch} kept: git worktree list: {_explain(listed)}")
        checked_out = [
            line.removeprefix("branch ")
            for line in listed.stdout.splitlines()
            if line.startswith("branch ")
        ]
    if ref in checked_out:
        return BranchCleanup("kept", f"{branch} kept: it is checked out in a worktree")
    res = gitcmd.git(["update-ref", "--stdin"], repo_path, input_text=f"delete {ref} {tip}\n")
    if not res:
        return BranchCleanup("error", f"{branch} kept: git update-ref: {_explain(res)}")
    return BranchCleanup("deleted", f"{branch} deleted: {main_branch} holds its tip {tip[:12]}")


def _set_aside_name(name: str) -> bool:
    """Whether ``name`` is what ``_set_aside`` names a workspace it set aside."""
    key, sep, tag = name.removeprefix(".").rpartition(_GONE_SUFFIX)
    return name.startswith(".") and bool(sep) and taskdir.valid_key(key) and is_hex(tag, 12)


def prune_orphan_worktrees(
    repo_path: Path, worktrees_root: Path, repo_name: str, live_keys: Iterable[str]
) -> list[str]:
    """Remove ``<root>/<repo>/<KEY>`` worktrees of tasks not in ``live_keys``; the keys removed.

    The caller passes the keys that must be kept (tasks that exist and are neither done nor
    cancelled; a blocked task keeps its worktree for the human). Only entries named like a
    task key are touched, and workspaces ``remove_worktree`` set aside and a crash left
    there: anything else in the folder is not ours to delete.
    """
    keep = set(live_keys)
    folder = worktrees_root / repo_name
    removed: list[str] = []
    legacy = False
    with repo_lock(repo_path):
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                name = entry.name
                if _set_aside_name(name) and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                if name in keep or not entry.is_dir() or not taskdir.valid_key(name):
                    continue
                legacy = legacy or _is_legacy_worktree(entry)
                _drop_worktree_dir(entry)
                removed.append(name)
        if legacy:
            gitcmd.git(["worktree", "prune"], repo_path)
    return removed
