"""Pushing a task's branch to the forge: the one place a push may replace a branch.

A pull request's head is the task branch ``orch/<KEY>``; after the merge gate rebases it
onto a newer main and makes it one commit, the forge's copy can only follow by being
replaced. That is allowed for a task branch and for nothing else: ``push_task_branch``
builds the one refspec itself, for a valid task key, and refuses any destination that is
not ``refs/heads/orch/<KEY>`` (main above all). Git runs through ``gitops.git`` (a timeout,
no prompts, no hooks, a scrubbed environment); the forge's git credentials are the user's
clone's own (a credential helper or ``http.extraHeader``), never the API token.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.merge import explain
from orchestrator.masking import masked_remote

__all__ = ["TASK_BRANCH_RE", "push_task_branch", "task_branch_ref"]

# What a task branch is: orch/ and a task key (DEMO-7). Nothing else may be replaced.
TASK_BRANCH_RE = re.compile(r"refs/heads/orch/[A-Z][A-Z0-9]{0,15}-[1-9][0-9]{0,9}\Z")
_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")
PUSH_TIMEOUT_S = 300.0


def task_branch_ref(key: str) -> str | None:
    """``refs/heads/orch/<KEY>`` for a valid task key; None for anything else."""
    ref = f"refs/heads/orch/{key}"
    return ref if TASK_BRANCH_RE.match(ref) else None


def push_task_branch(
    repo_path: Path, remote: str, key: str, sha: str, *, main: str
) -> tuple[bool, str]:
    """Make the forge's ``orch/<KEY>`` point at ``sha`` (replacing what it held); (ok, detail).

    ``repo_path``: the user's repository, which holds ``sha`` and the remote's credentials."""
    ref = task_branch_ref(key)
    if ref is None or ref == f"refs/heads/{main}":
        return False, f"refusing to replace {key!r} on the forge: not a task branch"
    if not _SHA_RE.match(sha):
        return False, f"refusing to push {sha!r}: not a commit id"
    if remote.startswith("-"):
        return False, f"refusing remote {masked_remote(remote)!r}"
    forced = "+" + sha + ":" + ref
    res = gitcmd.git(["push", "--porcelain", remote, forced], repo_path, timeout_s=PUSH_TIMEOUT_S)
    if res.timed_out:
        return False, f"push of {ref} timed out"
    if not res:
        return False, f"push of {ref} failed: {explain(res)}"
    return True, f"pushed {sha[:12]} to {masked_remote(remote)} {ref}"
