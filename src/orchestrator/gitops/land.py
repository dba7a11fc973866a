"""Landing a task's branch on main: rebase, one commit, the caller's word, CAS, push.

``land`` goes round at most ``max_rounds`` times: read current main (after a fetch when
the repo has a remote), refuse a main that does not descend from the main last landed,
rebase the branch onto it, make it one commit, publish the branch to the user's
repository, ask the caller's ``judge`` whether that candidate may land (the merge gate
checks its regression markers and re-tests it), then advance main by compare-and-swap,
pushing first when there is a remote, never forced. Main moved meanwhile: go round again.
A candidate whose objects the user's repository holds already (a no-op rebase of a
published branch) moves the user's branch in the same transaction as main, without a
remote; should the landing stop first, the branch is published then.

Everything expected is a value: a conflict, a red judgement, a rejected push, a busy lock,
a timeout, main rewound under us all end in a ``Landing``. ``land`` never raises: an
internal error (the judge's too) is an INFRA landing with the error as its last reason.
What the landing means for the task (the verdict, the report, the records) is the
caller's: this module runs git and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.gitops import ancestry, squash, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops import merge as gm
from orchestrator.gitops.ancestry import loose_ref

log = logging.getLogger(__name__)

# WAIT and BLOCKED come only from a publisher (a pull request): its checks or reviews are
# still pending, or pending past the limit.
LandStatus = Literal["MERGED", "CONFLICT", "RED", "INFRA", "WAIT", "BLOCKED"]


@dataclass(frozen=True)
class LandRequest:
    """Which branch to land where, and how hard to try."""

    repo_path: Path  # the user's repository, whose main moves
    main: str
    remote: str | None
    worktree: Path  # the task's worktree, on its branch (the caller made sure it is there)
    key: str
    title: str
    author: str | None  # the task's ``Name <email>``; None: the repo's configured user
    # The main last landed (None: none yet): main must still descend from it.
    main_seen: str | None
    max_rounds: int
    # Lands the candidate instead of moving main here (a pull request merged through the
    # forge's API); None: compare-and-swap of main, and a push when there is a remote.
    publish: Publisher | None = None
    # Will the first round's judge re-test? Asked once, before the landing's own
    # ``git status``, with the tree HEAD holds (None: git's files did not say), which is
    # that round's candidate's when its rebase is a no-op. True: that status lists the
    # untracked files too, and the judge gets it (``Candidate.seen``). None: never.
    retests: Callable[[str | None], bool] | None = None


@dataclass(frozen=True)
class Candidate:
    """The commit that would land, made in round ``round_no`` on main at ``base``."""

    round_no: int
    base: str
    sha: str
    tree: str
    rebase: str  # "ok" (rebased) or "noop" (already on top of main)
    # The worktree as the landing's own ``git status`` saw it, untracked files listed,
    # when nothing can have changed it since: round 1 on a no-op rebase (the commit keeps
    # HEAD's tree, and only the orchestrator's own git reads ran there; no process of the
    # job that ran before the gate outlives it). None: the judge asks git, as it must
    # after a rebase moved the files or an earlier round's re-test ran in them.
    seen: gm.WorktreeStatus | None = None


@dataclass(frozen=True)
class Judgement:
    """The caller's word on a candidate: land it (``stop`` None), or stop as RED or INFRA."""

    stop: LandStatus | None = None
    classification: str | None = None
    reasons: tuple[str, ...] = ()


Judge = Callable[[Candidate], Judgement]


@dataclass(frozen=True)
class Published:
    """A publisher's word on a candidate the judge passed: merged on the remote (main is at
    ``merged_sha`` there), or not yet (WAIT, with ``wait_s``), or not at all (RED, INFRA,
    BLOCKED with the ``alert`` a human gets)."""

    status: LandStatus
    reasons: tuple[str, ...] = ()
    classification: str | None = None
    merged_sha: str | None = None
    wait_s: float | None = None
    alert: str | None = None


Publisher = Callable[[Candidate], Published]


@dataclass(frozen=True)
class Rewound:
    """Main (``main_sha``) does not descend from ``seen``, the main last landed."""

    main_sha: str
    seen: str
    proven: bool  # False: the ancestry could not even be read


@dataclass(frozen=True)
class Landing:
    """How a landing ended, and what it saw on the way; reasons in the order they arose."""

    status: LandStatus
    # conflict, red, or for INFRA the failure class: timeout, lock-busy, other.
    classification: str | None
    reasons: tuple[str, ...]
    rounds: int = 0
    merged_sha: str | None = None
    base_sha: str | None = None
    candidate: str | None = None
    tree: str | None = None
    # Main was rewound or rewritten outside the orchestrator: not built on (INFRA).
    rewound: Rewound | None = None
    # MERGED without moving main: "already-merged" (the task's commit is on main: a crash
    # came between moving main and the bookkeeping), "empty" (main holds every change).
    already: Literal["already-merged", "empty"] | None = None
    # WAIT: come back in this many seconds; BLOCKED: the alert a human gets.
    wait_s: float | None = None
    alert: str | None = None


@dataclass
class _Progress:
    """The landing as it goes; ``landing()`` freezes it (also after an internal error)."""

    status: LandStatus = "INFRA"
    classification: str | None = None
    reasons: list[str] = field(default_factory=list)
    rounds: int = 0
    merged_sha: str | None = None
    base_sha: str | None = None
    candidate: str | None = None
    tree: str | None = None
    rewound: Rewound | None = None
    already: Literal["already-merged", "empty"] | None = None
    wait_s: float | None = None
    alert: str | None = None

    def stop(self, status: LandStatus, classification: str | None, *why: str) -> None:
        self.status = status
        self.classification = classification
        self.reasons.extend(why)

    def landing(self) -> Landing:
        return Landing(
            self.status,
            self.classification,
            tuple(self.reasons),
            self.rounds,
            self.merged_sha,
            self.base_sha,
            self.candidate,
            self.tree,
            self.rewound,
            self.already,
            self.wait_s,
            self.alert,
        )


def land(req: LandRequest, judge: Judge) -> Landing:
    """Land the task's branch on main (see the module docstring); never raises."""
    got = _Progress()
    try:
        _land(req, judge, got)
    except Exception as exc:
        log.exception("merge gate crashed", extra={"task": req.key, "action": "merge"})
        got.stop("INFRA", "other", f"merge gate internal error: {type(exc).__name__}: {exc}")
    return got.landing()


def _land(req: LandRequest, judge: Judge, got: _Progress) -> None:
    # A rebase a crash left half-done would hide the branch's real tip from what follows.
    gm.abort_rebase(req.worktree)
    # HEAD, read once from git's files: the caller's guess is asked with its tree, and
    # round 1 takes its SHA and trailer (nothing moves the workspace's HEAD before then).
    head = ancestry.read_commit(req.worktree, "HEAD")
    # One status for the landing and, when it re-tests, the first round's judge.
    seen = gm.worktree_status(req.worktree, untracked=_first_judge_retests(req, head))
    tracked_clean, detail = seen.clean(untracked=False)
    if not tracked_clean:
        # A judge that re-tests runs in this worktree: with edits to tracked files it would
        # test a tree other than the one that would land on main. Not the code's fault,
        # not ours to discard: a human looks if it persists.
        got.stop(
            "INFRA", "other", f"the worktree has uncommitted changes to tracked files: {detail}"
        )
        return
    for round_no in range(1, req.max_rounds + 1):
        got.rounds = round_no
        first = _First(seen, head) if round_no == 1 else None
        if _round(req, judge, got, round_no, first):
            return
    got.stop("INFRA", "lock-busy", f"main kept moving: gave up after {req.max_rounds} rounds")


def _first_judge_retests(req: LandRequest, head: ancestry.LooseCommit | None) -> bool:
    """The caller's guess (``LandRequest.retests``) that round 1's judge will re-test."""
    if req.retests is None:
        return False
    return req.retests(None if head is None else head.tree)


@dataclass(frozen=True)
class _First:
    """What the landing read before round 1, for round 1."""

    seen: gm.WorktreeStatus  # its status
    head: ancestry.LooseCommit | None  # HEAD from git's files (None: git is asked)


def _round(
    req: LandRequest,
    judge: Judge,
    got: _Progress,
    round_no: int,
    first: _First | None,
) -> bool:
    """One round; False when main moved under us and another round may land. ``first``:
    what the landing read before it, in round 1."""
    worktree, main, key = req.worktree, req.main, req.key
    branch = worktrees.branch_name(key)
    fresh = gm.refresh_main(req.repo_path, main, req.remote)
    if fresh.status != "ok" or fresh.sha is None:
        kind = "timeout" if fresh.status == "timeout" else "other"
        got.stop("INFRA", kind, f"cannot read current main: {fresh.detail}")
        return True
    base = got.base_sha = fresh.sha
    rewound = _rewound(worktree, base, req.main_seen)
    if rewound is not None:
        got.rewound = rewound
        got.stop("INFRA", "other")
        return True
    head: str | None
    if first is not None and first.head is not None:  # as ``head_and_task`` reads it
        head, head_task = first.head.sha, gm.task_of_message(first.head.message)
    else:
        head, head_task = gm.head_and_task(worktree)
    if head is not None and head_task == key and gm.is_ancestor(worktree, head, base):
        # A crash between moving main and the bookkeeping: the branch tip is the gate's
        # own commit for this task and main holds it. Recognise it, never merge twice.
        got.merged_sha, got.already = head, "already-merged"
        got.stop("MERGED", None, f"{branch} ({head[:12]}) is already on {main}: not merged again")
        return True

    rebased = gm.rebase_onto(worktree, base, head=head)
    if rebased.status == "conflict":
        listed = gitcmd.name_paths(rebased.files)
        got.stop(
            "CONFLICT",
            "conflict",
            f"rebase of {branch} onto {main} ({base[:12]}) conflicts in: {listed}",
            "the rebase was aborted; the worktree is as it was before",
        )
        return True
    if rebased.status == "error":
        got.stop("INFRA", rebased.error_kind or "other", f"rebase failed: {rebased.detail}")
        return True
    got.reasons.append(f"round {round_no}: {rebased.detail}")

    # The user's clone holds every object of the branch tip when its orch/<KEY> is there
    # (published by a fetch, which checks that): the commit is then written straight into
    # its store, next to its tree and base, and needs no fetch to be published.
    store = _user_store(req, head) if rebased.status == "noop" else None
    commit = squash.single_commit(
        worktree,
        branch,
        base,
        key,
        req.title,
        author=req.author,
        user_repo=req.repo_path,
        objects=store,
    )
    if store is not None and commit.status == "error":
        # Not there after all: made in the workspace and fetched, as always.
        store = None
        commit = squash.single_commit(
            worktree, branch, base, key, req.title, author=req.author, user_repo=req.repo_path
        )
    if commit.status == "error" or commit.sha is None:
        got.stop("INFRA", "other", f"cannot make the task's commit: {commit.detail}")
        return True
    if commit.status == "empty":
        # Every change of the branch is on main already (git dropped them as applied).
        got.merged_sha, got.already = base, "empty"
        got.stop("MERGED", None, f"{commit.detail}: its changes are already on {main}")
        return True
    candidate = got.candidate = commit.sha
    # The candidate is made in the task's workspace; main is moved in the user's
    # repository, which must hold its objects (and shows the branch as it will land).
    # The user's branch is most likely still at the tip the rebase started from (each
    # development job publishes it): the compare-and-swap tries that value first.
    # Its objects in the user's store already, and main moved in that clone (no remote,
    # no pull request): the branch moves with main in one transaction (``_move_main``),
    # or alone when the landing stops first.
    branch_move = None
    if store is not None and head is not None and req.publish is None and not req.remote:
        branch_move = (f"refs/heads/{branch}", candidate, head)
    elif not _publish(req, got, candidate, head, present=store is not None):
        return True
    tree = got.tree = commit.tree or gm.tree_of(worktree, candidate)
    if tree is None:
        got.stop("INFRA", "other", f"cannot read the tree of {candidate[:12]}")
        _publish_late(req, got, branch_move)
        return True

    # A no-op rebase moved no file: the worktree is as the landing's status saw it.
    seen = first.seen if first is not None and first.seen.untracked_read else None
    unchanged = seen if rebased.status == "noop" else None
    judged = judge(Candidate(round_no, base, candidate, tree, rebased.status, unchanged))
    if judged.stop is not None:
        got.stop(judged.stop, judged.classification, *judged.reasons)
        _publish_late(req, got, branch_move)
        return True
    got.reasons.extend(judged.reasons)
    if req.publish is not None:
        return _published(
            req, got, req.publish(Candidate(round_no, base, candidate, tree, rebased.status))
        )
    return _move_main(req, got, candidate, base, round_no, branch_move)


def _publish(
    req: LandRequest, got: _Progress, tip: str, expect: str | None, *, present: bool
) -> bool:
    """Bring the user's ``orch/<KEY>`` to ``tip`` (``worktrees.publish_branch``); False
    (the landing stopped as INFRA) when it cannot."""
    published, detail = worktrees.publish_branch(
        req.repo_path, req.worktree, req.key, tip=tip, expect=expect, present=present
    )
    if not published:
        got.stop("INFRA", "other", detail)
    return published


def _publish_late(req: LandRequest, got: _Progress, branch_move: gm.RefMove | None) -> None:
    """The landing stopped before main moved: the user's branch still shows the candidate
    it judged, as when it is published before the judge; a branch that cannot be
    published is INFRA, as it would have been then."""
    if branch_move is not None:
        _ref, tip, head = branch_move
        _publish(req, got, tip, head, present=True)


def _user_store(req: LandRequest, head: str | None) -> Path | None:
    """The user's clone's object store when its ``orch/<KEY>`` is at ``head`` (a loose
    branch file) and the workspace borrows from it; else None."""
    if head is None:
        return None
    ref = f"refs/heads/{worktrees.branch_name(req.key)}"
    if loose_ref(req.repo_path / ".git", ref) != head:
        return None
    return worktrees.user_store(req.repo_path, req.worktree)


def _published(req: LandRequest, got: _Progress, done: Published) -> bool:
    """Take the publisher's word; after a merge on the remote, bring main here up to it."""
    got.wait_s, got.alert = done.wait_s, done.alert
    if done.status != "MERGED":
        got.stop(done.status, done.classification, *done.reasons)
        return True
    got.reasons.extend(done.reasons)
    fresh = gm.refresh_main(req.repo_path, req.main, req.remote)
    if fresh.status != "ok" or fresh.sha is None:
        # Merged on the remote: the next refresh brings main here. Not the task's trouble.
        got.reasons.append(f"merged, but main here is not refreshed yet: {fresh.detail}")
    got.merged_sha = done.merged_sha or fresh.sha
    got.stop("MERGED", None)
    return True


def _move_main(
    req: LandRequest,
    got: _Progress,
    candidate: str,
    base: str,
    round_no: int,
    branch_move: gm.RefMove | None = None,
) -> bool:
    """Put ``candidate`` on main, never forced; False when main moved (go round again).
    ``branch_move``: the user's branch moves with main, in the same transaction."""
    repo_path, main = req.repo_path, req.main
    if req.remote:
        pushed = gm.publish_main(repo_path, req.remote, main, candidate, base)
        if pushed.status == "ok":
            got.merged_sha = candidate
            got.stop("MERGED", None, pushed.detail, *(pushed.local.notes if pushed.local else ()))
        elif pushed.status == "rejected":
            # Never forced: the remote's main moved, or a hook said no. Local main has not
            # moved (push first, local CAS after), so it is not left ahead of the remote.
            got.stop("INFRA", "lock-busy", f"push rejected: {pushed.detail}")
        else:
            kind = "timeout" if pushed.status == "timeout" else "other"
            got.stop("INFRA", kind, pushed.detail)
        return True
    cas = gm.advance_main(repo_path, main, candidate, base, also=branch_move)
    if cas.status != "ok" and branch_move is not None:
        # Refused (or timed out): the branch is published alone (the long way when the
        # user moved it), then main's CAS again when the branch may be what refused it.
        _ref, tip, head = branch_move
        if not _publish(req, got, tip, head, present=True):
            return True
        if cas.status in ("lock-busy", "error"):
            cas = gm.advance_main(repo_path, main, candidate, base)
    if cas.status == "ok":
        got.merged_sha = candidate
        got.stop("MERGED", None, cas.detail, *cas.notes)
        return True
    if cas.status == "moved":
        got.reasons.append(f"round {round_no}: main moved under us ({cas.detail}); again")
        return False
    kind = cas.status if cas.status in ("lock-busy", "timeout") else "other"
    got.stop("INFRA", kind, f"compare-and-swap of {main} failed: {cas.detail}")
    return True


def _rewound(worktree: Path, base: str, seen: str | None) -> Rewound | None:
    """Main is no base to build on unless it descends from ``seen``, the main last landed
    (a fast-forward by anyone is fine; a rewind or a rewrite is not)."""
    if seen is None or seen == base:
        return None
    descends = gm.is_ancestor(worktree, seen, base)
    if descends:
        return None
    return Rewound(base, seen, proven=descends is False)
