"""One commit per task: a task's branch squashed onto main's tip, authored as it should be.

The commit carries the task's author (or the repo's configured user), the agents that
worked on the branch as co-authors, the branch's commit list and the ``Orch-Task`` trailer
that tells the merge gate a change is already on main. It is made with ``commit-tree`` on
the tree the branch holds: nothing in the worktree changes, and nothing is forced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.gitops.merge import (
    ORCH_IDENTITY,
    TASK_TRAILER,
    cas_ref,
    commits_between,
    explain,
    rev_parse,
    run_git,
    task_of_commit,
    tree_of,
)


@dataclass(frozen=True)
class CommitResult:
    """The commit the merge gate puts on main for a task."""

    status: Literal["ok", "empty", "error"]
    sha: str | None = None
    detail: str = ""
    squashed: int = 0  # how many branch commits it stands for


@dataclass(frozen=True)
class Ident:
    """A git identity, ``Name <email>``."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


# "Name <email>": what `orch task add --author` stores. Git itself drops "<", ">" and line
# breaks from an identity; none may be in a part.
_IDENT_RE = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<email>[^<>]*)>")
# Line breaks and other controls: a branch author is the agent's to choose, and one such
# character in a trailer line would start a line of its own ("Orch-Task: OTHER-1").
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def parse_ident(text: str) -> Ident | None:
    """``Name <email>`` as an Ident; None unless both parts are there and clean."""
    text = text.strip()
    match = _IDENT_RE.fullmatch(text)
    if match is None or _UNSAFE_RE.search(text):
        return None
    name, email = match.group("name").strip(), match.group("email").strip()
    return Ident(name, email) if name and email else None


def configured_user(repo_path: Path) -> Ident | None:
    """The git user configured for the user's clone (``user.name`` and ``user.email`` as
    ``git config`` reads them there), or None when either is unset.

    Read explicitly: left to itself, git would make an address up from the host name.
    """
    got = [run_git(["config", "--get", k], repo_path) for k in ("user.name", "user.email")]
    values = [res.stdout.strip() if res else "" for res in got]
    if not all(values) or any(_UNSAFE_RE.search(v) or "<" in v or ">" in v for v in values):
        return None
    return Ident(values[0], values[1])


def _clean(text: str) -> str:
    return " ".join(_UNSAFE_RE.sub(" ", text).split())


def _branch_authors(worktree: Path, base: str, head: str) -> list[tuple[Ident, str]] | None:
    """(author, author date) of each commit in ``base..head``, oldest first."""
    # NUL-separated (-z): a name is the agent's to choose, and may hold what splitlines
    # would take for a line break.
    res = run_git(
        ["log", "-z", "--reverse", "--format=%an%x00%ae%x00%aI", f"{base}..{head}"], worktree
    )
    fields = res.stdout.removesuffix("\0").split("\0") if res else []
    if not fields or len(fields) % 3:
        return None
    return [
        (Ident(_clean(fields[i]), _clean(fields[i + 1])), fields[i + 2].strip())
        for i in range(0, len(fields), 3)
    ]


def _co_authors(authors: Sequence[Ident], main: Ident) -> list[Ident]:
    """Each distinct branch author (by address, any case) other than the main author."""
    seen = {main.email.lower()}
    out: list[Ident] = []
    for who in authors:
        if who.email and who.name and who.email.lower() not in seen:
            seen.add(who.email.lower())
            out.append(who)
    return out


def single_commit(
    worktree: Path,
    branch: str,
    base: str,
    key: str,
    title: str,
    *,
    author: str | None = None,
    user_repo: Path | None = None,
) -> CommitResult:
    """Make the branch one commit on ``base``, carrying the ``Orch-Task: <key>`` trailer.

    Why one commit: main must hold only trees that passed the suite, and the intermediate
    commits of a branch never ran it. The commit keeps the branch tip's tree exactly, so
    the worktree stays clean, and the branch moves to it by CAS (``update-ref new old``).
    A branch that already is such a commit on ``base`` is kept as it is (same SHA), so a
    no-op rebase stays a no-op.

    Its author is the task's ``author`` (``Name <email>``) when given, else the git user
    configured in ``user_repo`` (the user's clone), else the branch's first author. Whoever
    else wrote the branch's commits (the agent) gets a ``Co-authored-by:`` trailer; the
    committer is the orchestrator, and ``Orch-Task: <key>`` is the last trailer.
    """
    head = rev_parse(worktree, "HEAD")
    commits = commits_between(worktree, base, "HEAD") if head else None
    if head is None or commits is None:
        return CommitResult("error", detail=f"cannot list the commits of {branch} on {base[:12]}")
    if not commits:
        return CommitResult("empty", base, f"{branch} has no commit on top of {base[:12]}")
    if len(commits) == 1 and task_of_commit(worktree, head) == key:
        return CommitResult("ok", head, f"{head[:12]} is already the task's commit", 1)
    main_author = None
    if author is not None:
        main_author = parse_ident(author)
        if main_author is None:
            # Fail closed: a misread author is not to be replaced by a guess.
            why = f"the task's author {author!r} is not 'Name <email>'"
            return CommitResult("error", detail=why)
    elif user_repo is not None:
        main_author = configured_user(user_repo)
    tree = tree_of(worktree, head)
    log = run_git(["log", "--reverse", "--format=%h %s", f"{base}..{head}"], worktree)
    authors = _branch_authors(worktree, base, head)
    if tree is None or not log or not authors:
        return CommitResult("error", detail=f"cannot read the commits of {branch}")
    first, first_date = authors[0]
    main_author = main_author or first
    if not (main_author.name and main_author.email):
        return CommitResult("error", detail=f"no author for the commit of {branch}")
    subject = " ".join(title.split())[:200] or "merge"
    listed = "\n".join(f"- {_clean(line)}" for line in log.stdout.splitlines())
    trailers = "".join(
        f"Co-authored-by: {who}\n" for who in _co_authors([a for a, _ in authors], main_author)
    )
    message = (
        f"{key}: {subject}\n\nSquashed from {len(commits)} commit(s) of {branch}:\n"
        f"{listed}\n\n{trailers}{TASK_TRAILER}: {key}\n"
    )
    env = {
        **ORCH_IDENTITY,
        "GIT_AUTHOR_NAME": main_author.name,
        "GIT_AUTHOR_EMAIL": main_author.email,
        "GIT_AUTHOR_DATE": first_date,
    }
    made = run_git(
        ["commit-tree", tree, "-p", base, "-F", "-"], worktree, env=env, input_text=message
    )
    sha = made.stdout.strip()
    if not made or not sha:
        return CommitResult("error", detail=f"git commit-tree: {explain(made)}")
    moved = cas_ref(worktree, f"refs/heads/{branch}", sha, head)
    if moved.status != "ok":
        return CommitResult("error", detail=f"moving {branch} to its commit: {moved.detail}")
    return CommitResult("ok", sha, f"{len(commits)} commit(s) made one: {sha[:12]}", len(commits))
