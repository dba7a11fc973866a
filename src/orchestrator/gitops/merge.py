"""Git operations of the merge gate: fetch, rebase, one commit per task, CAS of main, push.

Expected conditions are returned values: a conflict, main moved under us, a rejected push,
a held lock, a timeout. Nothing here ever forces anything: no ``--force`` of any kind, no
``+refspec``, no ``reset --hard``. Every git call goes through ``run_git``, which refuses such
arguments outright (a second line of defence behind the code simply not writing them), and
then through ``orchestrator.gitops.git.git``, which bounds it with a timeout.

Locking: functions named ``*_locked`` expect the caller to hold ``lock.repo_lock`` on
the repo; the public entry points that move main (``refresh_main``, ``advance_main``,
``publish_main``) take it themselves. flock is not re-entrant across open files, so a
caller that already holds the lock (worktree creation) uses the ``*_locked`` forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.gitops import ancestry
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.git import (
    CHANGE_PATHSPEC,
    RECEIVE_PACK,
    UPLOAD_PACK,
    GitResult,
    name_paths,
)
from orchestrator.gitops.lock import repo_lock
from orchestrator.masking import masked_remote

# Network operations get longer than local ones; both are bounded.
NETWORK_TIMEOUT_S = 300.0
LOCAL_TIMEOUT_S = 120.0
# The trailer that marks a commit the merge gate made for a task.
TASK_TRAILER = "Orch-Task"
ORCH_IDENTITY = {
    "GIT_COMMITTER_NAME": "orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
}
_REFLOG_MESSAGE = "orchestrator merge gate"

FailureKind = Literal["timeout", "lock-busy", "other"]

# Arguments that would let a git call rewrite history someone else may hold.
_FORCE_ARGS = frozenset({"--force", "-f", "--mirror", "--delete", "-d", "--hard", "--prune"})
_FORCE_PREFIXES = ("--force-", "+")


def force_problem(args: Sequence[str]) -> str | None:
    """Why ``args`` could force something, or None. ``commit-tree -F -`` style is fine."""
    for arg in args:
        if arg in _FORCE_ARGS or arg.startswith(_FORCE_PREFIXES):
            return f"refused git argument {arg!r}: the merge gate never forces"
    return None


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout_s: float = LOCAL_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    errors: str = "strict",
) -> GitResult:
    """``gitcmd.git`` (``errors`` as there), unless a test forces a problem on ``args``."""
    problem = force_problem(args)
    if problem is not None:
        return GitResult(("git", *args), -1, "", problem)
    # Through the module attribute, so a test that wraps gitops.git.git sees every call.
    return gitcmd.git(args, cwd, timeout_s=timeout_s, env=env, input_text=input_text, errors=errors)


def explain(res: GitResult) -> str:
    """The last line git printed, for a reason."""
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def classify_git_failure(res: GitResult) -> FailureKind:
    """A failed git call: our timeout, a lock another process holds, or anything else."""
    if res.timed_out:
        return "timeout"
    text = f"{res.stderr}\n{res.stdout}"
    if ".lock" in text and ("File exists" in text or "Unable to create" in text):
        return "lock-busy"
    if "cannot lock ref" in text:
        return "lock-busy"
    return "other"


# --------------------------------------------------------------------------- small reads


def rev_parse(cwd: Path, rev: str) -> str | None:
    """The full SHA of ``rev`` (peeled to a commit or tree as asked), or None."""
    res = run_git(["rev-parse", "--verify", "--quiet", rev], cwd)
    if not res:
        return None
    return res.stdout.strip() or None


def tree_of(cwd: Path, commit: str) -> str | None:
    """The tree hash of ``commit``: read from its loose object when ``ancestry`` can tell
    (a full SHA, a plain history), else git's answer."""
    loose = ancestry.read_commit(cwd, commit)
    if loose is not None:
        return loose.tree
    return rev_parse(cwd, f"{commit}^{{tree}}")


def is_ancestor(cwd: Path, ancestor: str, descendant: str) -> bool | None:
    """Whether ``ancestor`` is reachable from ``descendant`` (equal counts); None on error.

    Read from the loose commits when ``ancestry.descends`` can tell (a workspace's new
    commits), else git's answer."""
    known = ancestry.descends(cwd, ancestor, descendant)
    if known is not None:
        return known
    res = run_git(["merge-base", "--is-ancestor", ancestor, descendant], cwd)
    if res.returncode in (0, 1) and not res.timed_out:
        return res.returncode == 0
    return None


def commits_between(cwd: Path, base: str, head: str) -> list[str] | None:
    """Commits reachable from ``head`` and not from ``base``, oldest first; None on error."""
    res = run_git(["rev-list", "--reverse", f"{base}..{head}"], cwd)
    return res.stdout.split() if res else None


def commit_message(cwd: Path, commit: str) -> str | None:
    """The full message of ``commit``."""
    # UTF-8 whatever i18n.logOutputEncoding says: run_git reads git's output as UTF-8.
    res = run_git(["log", "-1", "--encoding=UTF-8", "--format=%B", commit], cwd)
    return res.stdout if res else None


def task_of_commit(cwd: Path, commit: str) -> str | None:
    """The task key in ``commit``'s ``Orch-Task:`` trailer, when the merge gate made it."""
    message = commit_message(cwd, commit)
    return None if message is None else task_of_message(message)


def task_of_message(message: str) -> str | None:
    """The task key in a commit message's (last) ``Orch-Task:`` trailer, or None."""
    found = None
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == TASK_TRAILER:
            found = value.strip()
    return found


def head_and_task(cwd: Path) -> tuple[str | None, str | None]:
    """(HEAD's SHA, the task key of its ``Orch-Task:`` trailer); (None, None) when HEAD
    cannot be read. From git's files when HEAD is a loose commit (``ancestry.read_commit``:
    the workspace's own commit), else in one git call."""
    loose = ancestry.read_commit(cwd, "HEAD")
    if loose is not None:
        return loose.sha, task_of_message(loose.message)
    res = run_git(["log", "-1", "--encoding=UTF-8", "--format=%H%x00%B", "HEAD"], cwd)
    sha, sep, message = res.stdout.partition("\0") if res else ("", "", "")
    if not sep or not sha.strip():
        return None, None
    return sha.strip(), task_of_message(message)


@dataclass(frozen=True)
class WorktreeStatus:
    """What one ``git status`` of a worktree printed (ignored files and a suite's
    by-products never count), or why it failed."""

    lines: tuple[str, ...] | None  # its porcelain lines; None: git status failed
    untracked_read: bool  # untracked files were asked for (their lines start "??")
    detail: str = ""  # why git status failed

    def clean(self, *, untracked: bool = True) -> tuple[bool | None, str]:
        """(clean?, detail) as ``is_clean`` gives it: no tracked change and
        (``untracked``) no untracked file either. None when git failed, or when untracked
        files count and were not asked for (fail closed)."""
        if self.lines is None:
            return None, self.detail
        if untracked and not self.untracked_read:
            return None, "git status did not list untracked files"
        dirty = [line[3:] for line in self.lines if untracked or not line.startswith("??")]
        if dirty:
            return False, f"{len(dirty)} uncommitted path(s): {name_paths(dirty)}"
        return True, "clean"


def worktree_status(worktree: Path, *, untracked: bool = True) -> WorktreeStatus:
    """``git status`` of ``worktree``, untracked files listed too when ``untracked``."""
    mode = "--untracked-files=normal" if untracked else "--untracked-files=no"
    # Its names are only shown (``name_paths``); under a ``core.quotePath`` of false git
    # prints them as their bytes, and a task's files are named by the agent.
    res = run_git(
        ["status", "--porcelain", mode, "--", *CHANGE_PATHSPEC], worktree, errors="replace"
    )
    if not res:
        return WorktreeStatus(None, untracked, f"git status failed: {explain(res)}")
    return WorktreeStatus(tuple(li for li in res.stdout.splitlines() if li.strip()), untracked)


def is_clean(worktree: Path, *, untracked: bool = True) -> tuple[bool | None, str]:
    """(clean?, detail): no tracked change and (``untracked``) no untracked file either.

    Ignored files never count, and neither do a suite's by-products (bytecode, caches).
    """
    return worktree_status(worktree, untracked=untracked).clean(untracked=untracked)


def path_has_symbol(cwd: Path, commit: str, path: str, symbol: str) -> tuple[bool | None, str]:
    """Whether ``path`` exists in ``commit`` and contains ``symbol`` (None: git failed)."""
    exists = run_git(["cat-file", "-e", f"{commit}:{path}"], cwd)
    if exists.timed_out:
        return None, f"git cat-file timed out on {path}"
    if not exists:
        return False, f"{path} does not exist"
    # git grep reads the blob from the object store: no checkout, no decoding of our own.
    found = run_git(["grep", "-q", "-F", "-e", symbol, commit, "--", f":(literal){path}"], cwd)
    if found.returncode == 0:
        return True, f"{path} contains {symbol!r}"
    if found.returncode == 1 and not found.timed_out:
        return False, f"{path} no longer contains {symbol!r}"
    return None, f"git grep failed on {path}: {explain(found)}"


# --------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    """The remote's main after a fetch, or why it could not be read."""

    status: Literal["ok", "timeout", "error"]
    sha: str | None = None
    detail: str = ""


def fetch_main_locked(repo_path: Path, remote: str, main: str) -> FetchResult:
    """Fetch the remote's ``main`` into the repo (objects + FETCH_HEAD); its SHA.

    FETCH_HEAD is one file per repository: the caller holds repo_lock, so no other fetch
    of this host can overwrite it between the fetch and the read.
    """
    res = run_git(
        ["fetch", "--no-tags", "--quiet", UPLOAD_PACK, remote, f"refs/heads/{main}"],
        repo_path,
        timeout_s=NETWORK_TIMEOUT_S,
    )
    # The detail becomes a task's reasons, which reads show: a URL's token stays out.
    shown = masked_remote(remote)
    if res.timed_out:
        return FetchResult("timeout", detail=f"git fetch {shown} timed out")
    if not res:
        return FetchResult("error", detail=f"git fetch {shown} {main}: {explain(res)}")
    sha = rev_parse(repo_path, "FETCH_HEAD^{commit}")
    if sha is None:
        return FetchResult("error", detail=f"git fetch {shown} {main}: no FETCH_HEAD")
    return FetchResult("ok", sha, f"{shown}/{main} is at {sha[:12]}")


# --------------------------------------------------------------------------- CAS of main


@dataclass(frozen=True)
class CasResult:
    """A compare-and-swap of ``refs/heads/<main>``, and what became of the checkout."""

    status: Literal["ok", "moved", "lock-busy", "timeout", "error"]
    detail: str
    current: str | None = None  # where main is now, when known
    # The main repo's checkout: "synced", "dirty" (left alone), "not-checked-out",
    # "failed" (ref moved, files could not follow), or "" when the ref did not move.
    checkout: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Checkout:
    checked_out: bool
    clean: bool
    detail: str


def _checkout_state(repo_path: Path, main: str) -> _Checkout:
    # The branch HEAD names, from the clone's files when they say it plainly; else git.
    plain = ancestry.checked_out_plainly(repo_path)
    if plain is None:
        # Both in one call: "true"/"false", then the branch HEAD names ("HEAD" if detached).
        found = run_git(
            ["rev-parse", "--is-bare-repository", "--symbolic-full-name", "HEAD"], repo_path
        )
        bare, head = ([*found.stdout.split(), "", ""] if found else ["", ""])[:2]
        if head != f"refs/heads/{main}":
            return _Checkout(False, False, f"{main} is not checked out in {repo_path}")
        if bare == "true":
            return _Checkout(False, False, f"{repo_path} is bare")
    elif plain != [f"refs/heads/{main}"]:
        return _Checkout(False, False, f"{main} is not checked out in {repo_path}")
    # Tracked changes only: an untracked file is the user's and read-tree below refuses
    # to overwrite one anyway.
    # Only whether it says anything counts; names of files landed from tasks may not be
    # UTF-8 (printed as their bytes under a ``core.quotePath`` of false).
    res = run_git(["status", "--porcelain", "--untracked-files=no"], repo_path, errors="replace")
    if not res:
        if plain is not None and _is_bare(repo_path):
            # A ``.git`` folder whose config says ``core.bare``: status has no work tree.
            return _Checkout(False, False, f"{repo_path} is bare")
        return _Checkout(True, False, f"git status failed: {explain(res)}")
    if res.stdout.strip():
        return _Checkout(True, False, f"the checkout of {main} in {repo_path} has local changes")
    return _Checkout(True, True, "clean")


def _is_bare(repo_path: Path) -> bool:
    found = run_git(["rev-parse", "--is-bare-repository"], repo_path)
    return bool(found) and found.stdout.strip() == "true"


# A ref's compare-and-swap that rides with another's: (ref, new, old).
RefMove = tuple[str, str, str]


def cas_ref(cwd: Path, ref: str, new: str, old: str, *, also: RefMove | None = None) -> CasResult:
    """``git update-ref <ref> <new> <old>``: moves ``ref`` only if it still is ``old``.

    ``also``: another ref's compare-and-swap, in the same transaction (``update-ref
    --stdin``): both move, or neither does. The result speaks for ``ref``; when ``ref``
    did not move although it still is ``old``, ``also`` may be why.
    For main, call it under repo_lock (``advance_main``); a task branch is the task's own.
    """
    if also is None:
        res = run_git(["update-ref", "-m", _REFLOG_MESSAGE, ref, new, old], cwd)
    else:
        # -z: each field ends in a NUL; every update names the value it must find.
        text = "".join(f"update {r}\0{n}\0{o}\0" for r, n, o in ((ref, new, old), also))
        res = run_git(["update-ref", "-m", _REFLOG_MESSAGE, "-z", "--stdin"], cwd, input_text=text)
    if res:
        return CasResult("ok", f"{ref}: {old[:12]} -> {new[:12]}", new)
    now = rev_parse(cwd, ref)
    if res.timed_out:
        return CasResult("timeout", f"git update-ref {ref} timed out", now)
    if now is not None and now != old:
        return CasResult("moved", f"{ref} moved to {now[:12]} (expected {old[:12]})", now)
    kind = classify_git_failure(res)
    status: Literal["lock-busy", "error"] = "lock-busy" if kind == "lock-busy" else "error"
    return CasResult(status, f"git update-ref {ref}: {explain(res)}", now)


def advance_main_locked(
    repo_path: Path, main: str, new: str, old: str, *, also: RefMove | None = None
) -> CasResult:
    """CAS ``refs/heads/<main>`` from ``old`` to ``new`` and keep a clean checkout in step;
    ``also``: another ref's CAS in the same transaction (``cas_ref``).

    The ref moves only by ``update-ref <new> <old>``, never by ``merge`` or ``checkout``:
    the CAS is what guarantees nobody's commit on main is lost. When the main repo has
    ``main`` checked out, its index and files still show ``old`` after the CAS; if they
    were clean, ``git read-tree -m -u <old> <new>`` moves them to ``new`` (a two-tree
    fast-forward that refuses, without touching anything, to overwrite a local change or
    an untracked file). A dirty checkout is left alone and the result says so: its owner
    sees main ahead of their files and decides.
    """
    checkout = _checkout_state(repo_path, main)
    cas = cas_ref(repo_path, f"refs/heads/{main}", new, old, also=also)
    if cas.status != "ok":
        return cas
    if not checkout.checked_out:
        return CasResult("ok", cas.detail, new, "not-checked-out", (checkout.detail,))
    if not checkout.clean:
        note = f"{checkout.detail}: left alone (main moved to {new[:12]}; its files did not)"
        return CasResult("ok", cas.detail, new, "dirty", (note,))
    res = run_git(["read-tree", "-m", "-u", old, new], repo_path)
    if not res:
        note = f"main moved, but its checkout in {repo_path} could not follow: {explain(res)}"
        return CasResult("ok", cas.detail, new, "failed", (note,))
    return CasResult("ok", cas.detail, new, "synced", (f"checkout of {main} updated",))


def fast_forward_local_locked(repo_path: Path, main: str, target: str) -> CasResult:
    """Bring local ``main`` to ``target`` when that is a fast-forward; else leave it alone."""
    local = rev_parse(repo_path, f"refs/heads/{main}")
    if local is None:
        return CasResult("error", f"{repo_path} has no branch {main}")
    if local == target:
        return CasResult("ok", f"local {main} is at {target[:12]}", target)
    ahead = is_ancestor(repo_path, local, target)
    if not ahead:
        note = (
            f"local {main} ({local[:12]}) is not an ancestor of {target[:12]}: left alone "
            f"(it holds commits the remote does not have)"
        )
        return CasResult("ok", note, local, notes=(note,))
    return advance_main_locked(repo_path, main, target, local)


def refresh_main_locked(repo_path: Path, main: str, remote: str | None) -> FetchResult:
    """Current main: the remote's after a fetch (local main fast-forwarded to it), or local."""
    if not remote:
        # A loose branch file is git's answer (``ancestry.loose_ref``); else git is asked.
        sha = ancestry.loose_ref(repo_path / ".git", f"refs/heads/{main}") or rev_parse(
            repo_path, f"refs/heads/{main}^{{commit}}"
        )
        if sha is None:
            return FetchResult("error", detail=f"{repo_path} has no branch {main}")
        return FetchResult("ok", sha, f"{main} is at {sha[:12]}")
    fetched = fetch_main_locked(repo_path, remote, main)
    if fetched.status != "ok" or fetched.sha is None:
        return fetched
    synced = fast_forward_local_locked(repo_path, main, fetched.sha)
    notes = "; ".join(synced.notes)
    return FetchResult("ok", fetched.sha, f"{fetched.detail}{'; ' + notes if notes else ''}")


def refresh_main(repo_path: Path, main: str, remote: str | None) -> FetchResult:
    """``refresh_main_locked`` under the repo lock."""
    with repo_lock(repo_path):
        return refresh_main_locked(repo_path, main, remote)


def advance_main(
    repo_path: Path, main: str, new: str, old: str, *, also: RefMove | None = None
) -> CasResult:
    """``advance_main_locked`` under the repo lock: two workers of a host never move main
    at once; the CAS itself guards against anyone else (another host, a human)."""
    with repo_lock(repo_path):
        return advance_main_locked(repo_path, main, new, old, also=also)


# --------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushResult:
    """A push of main to the remote, never forced."""

    status: Literal["ok", "rejected", "timeout", "error"]
    detail: str
    local: CasResult | None = None  # local main brought in step after an accepted push


def push_main_locked(repo_path: Path, remote: str, main: str, sha: str) -> PushResult:
    """``git push <remote> <sha>:refs/heads/<main>``: a fast-forward, or rejected."""
    res = run_git(
        ["push", "--porcelain", RECEIVE_PACK, remote, f"{sha}:refs/heads/{main}"],
        repo_path,
        timeout_s=NETWORK_TIMEOUT_S,
    )
    shown = masked_remote(remote)  # as in a fetch's detail: reasons are read without a token
    if res.timed_out:
        return PushResult("timeout", f"git push {shown} timed out")
    if res:
        return PushResult("ok", f"pushed {sha[:12]} to {shown}/{main}")
    text = f"{res.stdout}\n{res.stderr}"
    flagged = [line for line in res.stdout.splitlines() if line.startswith("!")]
    if flagged or "[rejected]" in text or "[remote rejected]" in text:
        why = flagged[0].split("\t")[-1] if flagged else explain(res)
        return PushResult("rejected", f"the remote refused {sha[:12]} on {main}: {why}")
    return PushResult("error", f"git push {shown}: {explain(res)}")


def publish_main(repo_path: Path, remote: str, main: str, new: str, old: str) -> PushResult:
    """Push ``new`` as the remote's main, then bring local main in step; under the lock.

    The remote is the authority when there is one, so the order is push first, local CAS
    second. A rejected push therefore never leaves local main ahead of the remote: the
    local ref has not moved yet and is left as it was. A crash after the push and before
    the local CAS leaves local main behind, which the next ``refresh_main`` fast-forwards.
    """
    with repo_lock(repo_path):
        pushed = push_main_locked(repo_path, remote, main, new)
        if pushed.status != "ok":
            return pushed
        local = rev_parse(repo_path, f"refs/heads/{main}")
        if local == old:
            synced = advance_main_locked(repo_path, main, new, old)
        else:
            synced = fast_forward_local_locked(repo_path, main, new)
        return PushResult("ok", pushed.detail, synced)


# --------------------------------------------------------------------------- rebase


@dataclass(frozen=True)
class RebaseResult:
    """A rebase of the task branch onto main, in the task's worktree."""

    status: Literal["ok", "noop", "conflict", "error"]
    head: str | None = None
    files: list[str] = field(default_factory=list)  # conflicting files
    detail: str = ""
    error_kind: FailureKind | None = None


_REBASE_DIRS = ("rebase-merge", "rebase-apply")


def _rebase_in_progress(worktree: Path) -> bool:
    """Whether a rebase is stopped in ``worktree`` (git keeps its state in the git dir).

    A task workspace's git dir is its own ``.git`` folder, looked at without git (the merge
    gate asks this twice per run); anything else (a ``git worktree``, whose ``.git`` is a
    file) asks ``git rev-parse --git-path``, for both names in one call.
    """
    git_dir = worktree / ".git"
    if git_dir.is_dir() and not git_dir.is_symlink():
        return any((git_dir / name).exists() for name in _REBASE_DIRS)
    args = [arg for name in _REBASE_DIRS for arg in ("--git-path", name)]
    res = run_git(["rev-parse", *args], worktree)
    if not res:
        return False
    for line in res.stdout.splitlines():
        path = Path(line.strip())
        if not path.is_absolute():
            path = worktree / path
        if line.strip() and path.exists():
            return True
    return False


def abort_rebase(worktree: Path) -> GitResult | None:
    """Abort a rebase left in progress (by a conflict, a timeout or a crash), if any."""
    if not _rebase_in_progress(worktree):
        return None
    return run_git(["rebase", "--abort"], worktree)


def rebase_onto(worktree: Path, onto: str, *, head: str | None = None) -> RebaseResult:
    """Rebase the worktree's branch onto ``onto``; a conflict is aborted and returned.

    ``head``: HEAD as the caller just read it (the merge gate has), not read again."""
    abort_rebase(worktree)  # a crash mid-rebase must not wedge every later attempt
    head = head or rev_parse(worktree, "HEAD")
    if head is None:
        return RebaseResult("error", detail=f"no HEAD in {worktree}", error_kind="other")
    on_top = is_ancestor(worktree, onto, head)
    if on_top is None:
        return RebaseResult("error", head, detail="git merge-base failed", error_kind="other")
    if on_top:
        return RebaseResult("noop", head, detail=f"already on top of {onto[:12]}")
    res = run_git(
        # No automatic maintenance in the workspace (see commits.WORKSPACE_COMMIT).
        [
            "-c",
            "rebase.autoStash=false",
            "-c",
            "maintenance.auto=false",
            "rebase",
            "--no-verify",
            onto,
        ],
        worktree,
        env=ORCH_IDENTITY,
        # Read only to be shown: git names the files it merges as their bytes.
        errors="replace",
    )
    if res:
        new_head = rev_parse(worktree, "HEAD")
        return RebaseResult("ok", new_head, detail=f"rebased onto {onto[:12]}")
    # The conflicting files as their names (-z: unquoted; ``surrogateescape``: exact).
    unmerged = run_git(
        ["diff", "-z", "--name-only", "--diff-filter=U"], worktree, errors="surrogateescape"
    )
    files = sorted(set(unmerged.stdout.split("\0")) - {""}) if unmerged else []
    aborted = abort_rebase(worktree)
    abort_note = "" if aborted is None or aborted else f"; rebase --abort: {explain(aborted)}"
    if files and not res.timed_out:
        return RebaseResult(
            "conflict", head, files, f"conflict rebasing onto {onto[:12]}{abort_note}"
        )
    return RebaseResult(
        "error",
        head,
        detail=f"git rebase onto {onto[:12]}: {explain(res)}{abort_note}",
        error_kind=classify_git_failure(res),
    )


# --------------------------------------------------------------------------- one commit
