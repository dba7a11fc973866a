"""A task's commits in its workspace: what an attempt changed, committed or undone.

What an agent (or the patch backend) leaves in the workspace is committed from outside the
sandbox, by-products left out (``CHANGE_PATHSPEC``). Conflict debris (unmerged paths, added
lines that look like conflict markers) is never committed: the attempt is undone
(``restore_to_head``) and the workspace is back at the task branch's last commit, so no
half-merged file survives into the next step. ``has_diff_vs`` and ``branch_markers`` read
what the branch changes against its base. The workspace itself (made, published, removed)
is ``gitops/worktrees.py``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.gitops import ancestry, index_file
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops.git import CHANGE_PATHSPEC, GitResult, name_paths


def _explain(res: GitResult) -> str:
    text = (res.stderr or res.stdout).strip()
    return text.splitlines()[-1] if text else f"git exited {res.returncode}"


def _git_message(res: GitResult) -> str:
    """Everything git said, on one line (bounded): the reason a human reads."""
    text = (res.stderr or res.stdout).strip()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())[:800] or (
        f"git exited {res.returncode}"
    )


def patch_present(worktree: Path, patch: Path) -> bool:
    """Whether the worktree already holds the patch's changes (it would apply in reverse)."""
    return bool(gitcmd.git(["apply", "--reverse", "--check", str(patch)], worktree))


def changed_paths(worktree: Path) -> tuple[list[str] | None, str]:
    """Paths whose files differ from HEAD (tracked changes, untracked files, unmerged),
    by-products left out; (None, why) when git cannot tell."""
    # The paths are read to be counted and shown: a name that is not UTF-8 is no crash.
    res = gitcmd.git(
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *CHANGE_PATHSPEC],
        worktree,
        errors="replace",
    )
    if not res:
        return None, f"git status failed: {_explain(res)}"
    paths: list[str] = []
    entries = iter(res.stdout.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(entries, None)  # the rename's source path follows as its own entry
    return paths, "clean" if not paths else f"{len(paths)} changed path(s): {name_paths(paths)}"


def restore_to_head(worktree: Path) -> tuple[bool, str]:
    """Put index and files back at HEAD: unmerged entries, staged and unstaged changes and
    untracked files (ignored ones stay) are gone. (restored?, detail).

    What a failed patch apply or an agent's refused attempt leaves must never be committed
    later as someone's work. ``read-tree --reset -u`` rewrites the index from HEAD and the
    files with it (a path only the index had is removed); untracked files are deleted one
    by one, which is all ``git clean`` would do here.
    """
    res = gitcmd.git(["read-tree", "--reset", "-u", "HEAD"], worktree)
    if not res:
        return False, f"cannot restore the worktree to HEAD: {_git_message(res)}"
    # Names as their bytes (a task's file may be named in any): each goes back to the file
    # system as it came (``surrogateescape``, as ``os.fsdecode`` reads a name).
    others = gitcmd.git(
        ["ls-files", "-z", "--others", "--exclude-standard"], worktree, errors="surrogateescape"
    )
    if not others:
        return False, f"cannot list untracked files: {_git_message(others)}"
    root = worktree.resolve()
    for name in filter(None, others.stdout.split("\0")):
        path = worktree / name
        # ls-files names paths inside the worktree (a symlink as itself); a folder on the
        # way that resolves elsewhere is never followed into.
        if not path.parent.resolve().is_relative_to(root):
            continue
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == worktree or not parent.is_relative_to(worktree):
                break
            try:
                parent.rmdir()  # only empty folders
            except OSError:
                break
    left, detail = changed_paths(worktree)
    if left:
        return False, f"the worktree is still not at HEAD: {detail}"
    return True, "the worktree is back at the task branch's last commit"


def apply_patch(worktree: Path, patch: Path) -> tuple[bool, str]:
    """Apply a patch with a three-way merge (staged); (applied?, detail).

    A patch that does not apply leaves nothing behind: ``git apply --3way`` writes conflict
    markers and unmerged entries, and those are undone here, so the worktree is exactly at
    the task branch's last commit and the next attempt sees git's real message, not the
    debris of this one.
    """
    res = gitcmd.git(["apply", "--3way", "--whitespace=nowarn", str(patch)], worktree)
    if not res:
        detail = f"the patch does not apply: {_git_message(res)}"
        restored, how = restore_to_head(worktree)
        return False, detail if restored else f"{detail}; {how}"
    return True, "applied"


def commit_problems(worktree: Path) -> list[str]:
    """Why the staged change must not be committed: unmerged paths, or added lines that
    look like conflict markers (what ``git diff --check`` reports)."""
    problems: list[str] = []
    index = index_file.read_index(worktree)
    if index is None or index.unmerged:  # git names them (or says why it cannot)
        # The names are only shown: one that is not UTF-8 is no crash.
        unmerged = gitcmd.git(["ls-files", "-z", "--unmerged"], worktree, errors="replace")
        if not unmerged:
            return [f"git ls-files --unmerged failed: {_git_message(unmerged)}"]
        names = sorted({e.split("\t", 1)[1] for e in unmerged.stdout.split("\0") if "\t" in e})
        if names:
            problems.append(f"unmerged paths (a conflict left unresolved): {name_paths(names)}")
    problems.extend(_staged_markers(worktree))
    return problems


def branch_markers(worktree: Path, base: str) -> tuple[list[str] | None, str]:
    """``file:line`` of conflict-marker lines the branch adds against ``base``: (those,
    "") or (None, why) when git cannot tell (that is no "none")."""
    markers, why = _diff_check_markers(worktree, f"{base}...HEAD")
    if markers is None:
        return None, f"git diff --check against {base} failed: {why}"
    return markers, ""


def _diff_check_markers(worktree: Path, *spec: str) -> tuple[list[str] | None, str]:
    """``file:line`` of each line ``git diff --check <spec>`` takes for a conflict marker:
    (those, "") or (None, why git could not look)."""
    # It names the files as their bytes (never quoted): read to be shown.
    check = gitcmd.git(
        ["diff", "--check", *spec, "--", *CHANGE_PATHSPEC], worktree, errors="replace"
    )
    # Exit 2: it found problems; 0: none; anything else: it could not look.
    if check.timed_out or check.returncode not in (0, 2):
        return None, _explain(check)
    return [
        line.split(": leftover conflict marker")[0]
        for line in check.stdout.splitlines()
        if line.endswith("leftover conflict marker")
    ], ""


def has_diff_vs(worktree: Path, base: str) -> tuple[bool, str]:
    """Whether the task branch changes anything against ``base`` (its merge base)."""
    # Only its last line (the totals) is read; the lines above it name the files, as their
    # bytes where a user's ``core.quotePath`` is false.
    res = gitcmd.git(["diff", "--stat", f"{base}...HEAD"], worktree, errors="replace")
    if not res:
        return False, f"git diff against {base} failed: {_explain(res)}"
    stat = res.stdout.strip()
    if not stat:
        return False, f"the branch has no diff against {base}"
    return True, stat.splitlines()[-1].strip()


@dataclass(frozen=True)
class Committed:
    """What committing an attempt did: ``committed``, ``empty`` (nothing to commit),
    ``refused`` (conflict debris: undone, never committed) or ``error``."""

    status: Literal["committed", "empty", "refused", "error"]
    detail: str
    # git commit's summary of the change (its diffstat line), when it committed one.
    summary: str | None = None
    # The branch's whole change against ``main`` is this commit's (its only parent was
    # main): its summary, as ``has_diff_vs`` would have found it. None: not known.
    branch_diff: str | None = None

    def __bool__(self) -> bool:
        return self.status == "committed"


_ORCH_COMMITTER = ["-c", "user.name=orchestrator", "-c", "user.email=orchestrator@localhost"]
# A commit in a task's workspace starts no `git maintenance run --auto` (a process of its
# own, ~2 ms, on every attempt): the workspace is a scratch repository whose own objects
# are a task's few attempts, and it is deleted with the task. The user's clone keeps its
# automatic maintenance (a fetch that publishes a branch runs it there; a branch is
# published by a copy only while that maintenance is not due: ``objects.bring_tip``).
WORKSPACE_COMMIT = ["-c", "maintenance.auto=false"]


def commit_all(worktree: Path, message: str, *, main: str | None = None) -> Committed:
    """Commit everything the agent left in the worktree, by-products left out.

    Conflict debris (unmerged paths, added conflict-marker lines) is refused, and the
    worktree is put back at the branch's last commit: nothing half-merged is committed or
    survives into the next step.

    Two git calls, ``add`` and ``commit``, when there is something to commit and git's
    files can tell the rest (this sits between a development job and its gate): unmerged
    paths are looked for once, before ``add`` (which would mark them resolved; nothing can
    become unmerged after it), in the index file (``index_file``); what ``add`` staged is
    the index after it against the index before it, which held HEAD's tree, and its files
    are looked at for lines that could be conflict markers: only when one could be is
    ``diff --cached --check`` asked. ``commit`` itself tells whether anything was staged
    (``_commit_or_empty``). Whatever the files cannot tell exactly is asked of git, one
    call each, as before.

    ``main``: the main branch the development gate compares the branch with. When the
    branch was at main itself and this commit's only parent is it, the branch's change is
    exactly this commit's: ``branch_diff`` carries the commit's summary, and the gate needs
    no ``git diff`` (``has_diff_vs``) to know it, nor ``diff --check`` for its markers,
    which were looked for in this very change (staged, against the same parent).
    """
    on_main = None if main is None else ancestry.head_on_main(worktree, main)
    done = _commit_all(worktree, message)
    if not done or on_main is None or done.summary is None:
        return done
    made = ancestry.read_commit(worktree, "HEAD")
    if made is None or made.parents != (on_main,):
        return done
    return dataclasses.replace(done, branch_diff=done.summary)


def _commit_all(worktree: Path, message: str) -> Committed:
    # The index and HEAD's tree, read from git's files where that is exact (else git is
    # asked, as it always was): whether anything is unmerged, and, once ``add`` has run,
    # exactly what it staged against HEAD.
    before = index_file.read_index(worktree)
    if before is None:
        # Only whether there are any is read here.
        unmerged = gitcmd.git(["ls-files", "-z", "--unmerged"], worktree, errors="replace")
        if not unmerged:
            return Committed("error", f"git ls-files --unmerged failed: {_explain(unmerged)}")
        if unmerged.stdout.strip("\0"):
            return _refuse(worktree, commit_problems(worktree))
    elif before.unmerged:
        return _refuse(worktree, commit_problems(worktree))
    add = gitcmd.git(["add", "-A", "--", *CHANGE_PATHSPEC], worktree)
    if not add:
        return Committed("error", f"git add failed: {_explain(add)}")
    staged = None if before is None else _staged(worktree, before)
    markers = _staged_markers(worktree, staged)
    if markers:
        return _refuse(worktree, markers)
    return _commit_or_empty(worktree, message, staged)


def _staged(worktree: Path, before: index_file.Index) -> index_file.Staged | None:
    """What ``add`` staged against HEAD, from the index read before it and after it; None
    when the files cannot tell (git is asked)."""
    head = ancestry.read_commit(worktree, "HEAD")
    after = index_file.read_index(worktree)
    if head is None or after is None:
        return None
    return index_file.staged_against(before, after, head.tree)


def commit_staged(worktree: Path, message: str) -> Committed:
    """Commit exactly what is staged (the patch backend: what ``git apply`` produced)."""
    problems = commit_problems(worktree)
    if problems:
        return _refuse(worktree, problems)
    return _commit_or_empty(worktree, message, None)


# A line ``git diff --check`` takes for a conflict marker starts with one of these, whatever
# size a ``conflict-marker-size`` attribute gives markers (git's ``is_conflict_marker``: at
# least one of ``<=>|``, the same one, then white space). A staged file without such a line
# adds none.
_MAY_BE_MARKER = re.compile(rb"(?:\A|\n)[<=>|]")
# Modes of a file whose blob ``diff --check`` reads (a file, an executable, a symbolic
# link); a submodule's entry (160000) is a line ``Subproject commit <sha>``, never a marker.
_BLOB_MODES = (0o100644, 0o100755, 0o120000)
_GITLINK_MODE = 0o160000
# Staged bytes read here before the question is left to git.
_MAX_STAGED_BYTES = 16 << 20


def _staged_markers(worktree: Path, staged: index_file.Staged | None = None) -> list[str]:
    """The problem of staged lines that look like conflict markers, if any.

    ``staged``: what is staged against HEAD, exactly (``_staged``). When none of its files
    has a line that could be a marker, ``diff --cached --check`` could report none (every
    line it checks is a line of one of them): git is not asked."""
    if staged is not None and not _may_hold_markers(worktree, staged):
        return []
    markers, why = _diff_check_markers(worktree, "--cached")
    if markers is None:  # not "none": the attempt is refused as with markers
        return [f"git diff --cached --check failed: {why}"]
    if markers:
        return [f"added lines look like conflict markers: {name_paths(markers)}"]
    return []


def _may_hold_markers(worktree: Path, staged: index_file.Staged) -> bool:
    """Whether a staged file may hold a conflict-marker line (True, too, when its bytes
    cannot be read here)."""
    entries = [e for e in staged.changed.values() if e.mode != _GITLINK_MODE]
    if any(e.mode not in _BLOB_MODES for e in entries):
        return True
    blobs = ancestry.loose_blobs(worktree, (e.sha for e in entries), _MAX_STAGED_BYTES)
    if blobs is None:
        return True
    return any(_MAY_BE_MARKER.search(data) for data in blobs.values())


def _commit_or_empty(worktree: Path, message: str, staged: index_file.Staged | None) -> Committed:
    """``git commit`` what is staged; when it fails, whether that was for want of a change
    (``staged``, when known, says; else ``diff --cached --quiet``).

    The commit is tried first: asking ``diff --cached --quiet`` beforehand would cost a
    git call on every attempt that has a change, to save one on the rare attempt without.
    """
    # Not quiet: its summary says what changed ("[branch sha] subject", then the diffstat
    # line), which a branch made of this one commit is told by. The lines after it name
    # new files, as their bytes where a user's ``core.quotePath`` is false: only shown.
    res = gitcmd.git(
        [*_ORCH_COMMITTER, *WORKSPACE_COMMIT, "commit", "--no-verify", "-m", message],
        worktree,
        errors="replace",
    )
    if res:
        lines = res.stdout.splitlines()
        said = lines[1].strip() if len(lines) > 1 and lines[0].startswith("[") else ""
        return Committed("committed", "committed", summary=said or None)
    if not res.timed_out and (not staged if staged is not None else _nothing_staged(worktree)):
        return Committed("empty", "nothing to commit")
    return Committed("error", f"git commit failed: {_explain(res)}")


def _nothing_staged(worktree: Path) -> bool:
    return bool(gitcmd.git(["diff", "--cached", "--quiet"], worktree))


def _refuse(worktree: Path, problems: list[str]) -> Committed:
    restored, how = restore_to_head(worktree)
    tail = "the attempt was undone" if restored else how
    return Committed("refused", f"not committed: {'; '.join(problems)}; {tail}")
