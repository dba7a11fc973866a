"""One commit per task: a task's branch squashed onto main's tip, authored as it should be.

The commit carries the task's author (or the repo's configured user), the agents that
worked on the branch as co-authors, the branch's commit list and the ``Orch-Task`` trailer
that tells the merge gate a change is already on main. It is made with ``commit-tree`` on
the tree the branch holds: nothing in the worktree changes, and nothing is forced.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.gitops import ancestry, workspace_refs
from orchestrator.gitops.config_read import KeptAnswers
from orchestrator.gitops.merge import (
    ORCH_IDENTITY,
    TASK_TRAILER,
    explain,
    run_git,
    task_of_message,
)
from orchestrator.gitops.objects import Limits


@dataclass(frozen=True)
class CommitResult:
    """The commit the merge gate puts on main for a task."""

    status: Literal["ok", "empty", "error"]
    sha: str | None = None
    detail: str = ""
    squashed: int = 0  # how many branch commits it stands for
    tree: str | None = None  # the commit's tree (the branch tip's), when one was made


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
    Every landing asks, so git's answer is kept with the bytes of every config file it read
    (``config_read.KeptAnswers``): a change to any of them asks git again.
    """
    return _user_config(repo_path).ident


@dataclass(frozen=True)
class _UserConfig:
    """What the merge gate's commit takes from the user's clone's config (one git call)."""

    ident: Ident | None
    # ``-c key=value`` for each setting of how the clone writes objects (``_WRITE_KEYS``).
    writes: tuple[str, ...] = ()
    # The clone checks the objects it fetches (``fetch.fsckObjects``, else
    # ``transfer.fsckObjects``; a value git may read as true counts), or git did not say.
    checks_fetched: bool = True
    # When a fetch would keep what it brings as a pack, or run the clone's automatic
    # maintenance: a copy of an attempt's objects then leaves it to the fetch.
    limits: Limits = field(default_factory=lambda: Limits(unpack_limit=0))


# How a repository writes its objects: a commit written into the user's store from the
# workspace (``single_commit``'s ``objects``) is written as the clone itself would write it
# (a group-shared clone's objects readable by its group, fsync'ed if it says so).
_WRITE_KEYS = (
    "core.sharedrepository",
    "core.fsync",
    "core.fsyncobjectfiles",
    "core.fsyncmethod",
    "core.compression",
    "core.loosecompression",
)


# The settings by which a fetch into the clone checks what it receives (fsck).
_FSCK_KEYS = ("fetch.fsckobjects", "transfer.fsckobjects")
# What tells whether a fetch keeps what it brings as a pack, and runs maintenance.
_LIMIT_KEYS = ("fetch.unpacklimit", "transfer.unpacklimit", "gc.auto", "maintenance.auto")
# What git reads as false. Anything else (a key with no value is true; an empty value is
# false to git) counts as true here: a value not known for false keeps the fetch.
_FALSE = frozenset({"false", "no", "off", "0"})


def copy_limits(repo_path: Path) -> Limits | None:
    """The clone's unpack limit and automatic maintenance, as a fetch there reads them,
    when an object copied into its store as git writes one is what a fetch would have
    left: the clone sets none of ``_WRITE_KEYS`` (shared-repository modes, fsync or
    compression of its own) and lets a fetch take objects unchecked (no fsck on fetch).
    None otherwise, and whenever git did not answer. Kept as ``configured_user`` is (the
    same git call)."""
    found = _user_config(repo_path)
    return None if found.writes or found.checks_fetched else found.limits


def _git_int(text: str | None, default: int) -> int | None:
    """A git integer (``100``, ``1k``); ``default`` when unset, None when not one."""
    if text is None:
        return default
    value = text.strip().lower()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(value[-1:], 1)
    digits = value[:-1] if scale > 1 else value
    return int(digits) * scale if digits.isdigit() else None


def _limits(found: dict[str, str]) -> Limits:
    unpack = _git_int(found.get("fetch.unpacklimit", found.get("transfer.unpacklimit")), 100)
    gc_auto = _git_int(found.get("gc.auto"), 6700)
    auto = found.get("maintenance.auto")
    if unpack is None or gc_auto is None:
        return Limits(unpack_limit=0)
    return Limits(
        unpack_limit=unpack,
        gc_auto=gc_auto,
        auto_maintenance=auto is None or auto.lower() not in _FALSE,
    )


def _user_config(repo_path: Path) -> _UserConfig:
    return _USERS.ask(repo_path, lambda: _ask_user(repo_path))


def _ask_user(repo_path: Path) -> tuple[_UserConfig, bool]:
    # One call for all; a key set more than once counts by its last value, as --get has.
    # -z: "key\nvalue\0", so a value with a line break in it stays one value (and fails).
    asked = ("user.name", "user.email", *_WRITE_KEYS, *_FSCK_KEYS, *_LIMIT_KEYS)
    keys = "|".join(k.replace(".", r"\.") for k in asked)
    res = run_git(["config", "-z", "--get-regexp", f"^({keys})$"], repo_path)
    # Exit 1 is "no such key": an answer too; anything else is asked again next time.
    answered = res.returncode in (0, 1) and not res.timed_out
    found: dict[str, str] = {}
    for entry in res.stdout.split("\0") if res else []:
        name, _, value = entry.partition("\n")
        found[name.lower()] = value.strip()
    writes = tuple(f"{k}={found[k]}" for k in _WRITE_KEYS if k in found)
    # fetch.fsckObjects wins over transfer.fsckObjects when both are set.
    fsck = found.get("fetch.fsckobjects", found.get("transfer.fsckobjects"))
    checks = not answered or (fsck is not None and fsck.lower() not in _FALSE)
    values = [found.get("user.name", ""), found.get("user.email", "")]
    ident = None
    if all(values) and not any(_UNSAFE_RE.search(v) or "<" in v or ">" in v for v in values):
        ident = Ident(values[0], values[1])
    limits = _limits(found) if answered else Limits(unpack_limit=0)
    return _UserConfig(ident, writes, checks, limits), answered


_USERS: KeptAnswers[_UserConfig] = KeptAnswers()


def _clean(text: str) -> str:
    return " ".join(_UNSAFE_RE.sub(" ", text).split())


@dataclass(frozen=True)
class _BranchCommit:
    sha: str
    tree: str
    line: str  # "<abbreviated sha> <subject>", for the squashed commit's list
    author: Ident
    date: str  # the author date
    message: str


# One record per commit of the branch: everything the squash reads, in one `git log`.
_FIELDS = ("%H", "%T", "%s", "%an", "%ae", "%aI", "%B")
# An author header as git writes it: the name (to the first "<", git's white space after
# it trimmed), the address (to the first ">"), seconds since the epoch and the zone.
_SPACE = f"[{ancestry.GIT_SPACE}]*"
_AUTHOR_RE = re.compile(
    rf"(?P<name>[^<]*?){_SPACE}<(?P<email>[^>]*)>{_SPACE}"
    r"(?P<seconds>[0-9]{1,12}) (?P<zone>[+-][0-9]{4})"
)


def _branch_commits(worktree: Path, base: str) -> list[_BranchCommit] | None:
    """The commits of ``base..HEAD``, oldest first (HEAD last); None when git cannot say.

    From git's files when the branch is a line of loose commits on ``base``
    (``ancestry.commits_since``), each field as ``git log`` would print it; else git.
    NUL-separated (-z, and %x00 between fields): a name is the agent's to choose, and may
    hold what splitlines would take for a line break; git keeps NUL out of every field.
    """
    walked = ancestry.commits_since(worktree, base)
    if walked is not None:
        read = [_read_commit(c) for c in walked]
        if all(c is not None for c in read):
            return [c for c in read if c is not None]
    res = run_git(
        # UTF-8 whatever i18n.logOutputEncoding says: run_git reads git's output as UTF-8.
        [
            "log",
            "-z",
            "--reverse",
            "--encoding=UTF-8",
            f"--format={'%x00'.join(_FIELDS)}",
            f"{base}..HEAD",
        ],
        worktree,
    )
    if not res:
        return None
    fields = res.stdout.removesuffix("\0").split("\0") if res.stdout else []
    n = len(_FIELDS)
    if len(fields) % n:
        return None
    return [
        _BranchCommit(
            sha=fields[i].strip(),
            tree=fields[i + 1].strip(),
            line=f"{fields[i].strip()[:12]} {fields[i + 2]}",
            author=Ident(_clean(fields[i + 3]), _clean(fields[i + 4])),
            date=_zone_spelled(fields[i + 5].strip()),
            message=fields[i + 6],
        )
        for i in range(0, len(fields), n)
    ]


def _read_commit(commit: ancestry.LooseCommit) -> _BranchCommit | None:
    """``commit`` as ``git log --format`` with ``_FIELDS`` gives it; None for an author
    header git would read otherwise than this does (git is asked)."""
    found = _AUTHOR_RE.fullmatch(commit.author)
    if found is None:
        return None
    zone = int(found["zone"])  # +0530 -> 530; git prints -0000 as +00:00
    minutes = (abs(zone) // 100 * 60 + abs(zone) % 100) * (1 if zone >= 0 else -1)
    try:
        when = datetime.datetime.fromtimestamp(
            int(found["seconds"]), datetime.timezone(datetime.timedelta(minutes=minutes))
        )
    except (ValueError, OverflowError, OSError):
        return None
    date = (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:"
        f"{when.second:02d}{'+' if zone >= 0 else '-'}{abs(zone) // 100:02d}:{abs(zone) % 100:02d}"
    )
    return _BranchCommit(
        sha=commit.sha,
        tree=commit.tree,
        line=f"{commit.sha[:12]} {_as_read(_subject(commit.message))}",
        author=Ident(_clean(_as_read(found["name"])), _clean(_as_read(found["email"]))),
        date=date,
        message=_as_read(commit.message),
    )


def _zone_spelled(date: str) -> str:
    """``%aI`` with UTC spelled ``+00:00``, as git 2.39 prints it; newer gits (2.50 does)
    print ``Z``. One spelling whichever git runs: the one ``_read_commit`` gives."""
    return f"{date.removesuffix('Z')}+00:00" if date.endswith("Z") else date


def _as_read(text: str) -> str:
    """``text`` as ``run_git`` reads git's output: in text mode, every CR LF and CR a LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _subject(message: str) -> str:
    """``%s``: the first paragraph after any blank lines, its lines joined by a space."""
    lines = message.split("\n")
    while lines and not lines[0].strip(ancestry.GIT_SPACE):
        lines.pop(0)
    first: list[str] = []
    for line in lines:
        if not line.strip(ancestry.GIT_SPACE):
            break
        first.append(line.rstrip(ancestry.GIT_SPACE))
    return " ".join(first)


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
    objects: Path | None = None,
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

    ``objects``: the object store the commit is written to (the user's clone's, which
    already holds ``base`` and the branch tip's tree: see ``land``); None: the workspace's
    own. Only there is the tree looked for, so a store without it is an error, never a
    commit whose tree the store lacks. It is written as ``user_repo`` writes objects (its
    ``core.sharedRepository``, fsync and compression settings), as a fetch there would.
    """
    commits = _branch_commits(worktree, base)
    if commits is None:
        return CommitResult("error", detail=f"cannot list the commits of {branch} on {base[:12]}")
    if not commits:
        return CommitResult("empty", base, f"{branch} has no commit on top of {base[:12]}")
    tip = commits[-1]
    head, tree = tip.sha, tip.tree
    if len(commits) == 1 and task_of_message(tip.message) == key:
        return CommitResult("ok", head, f"{head[:12]} is already the task's commit", 1, tree)
    main_author = None
    if author is not None:
        main_author = parse_ident(author)
        if main_author is None:
            # Fail closed: a misread author is not to be replaced by a guess.
            why = f"the task's author {author!r} is not 'Name <email>'"
            return CommitResult("error", detail=why)
    elif user_repo is not None:
        main_author = configured_user(user_repo)
    if not tree:
        return CommitResult("error", detail=f"cannot read the commits of {branch}")
    first, first_date = commits[0].author, commits[0].date
    main_author = main_author or first
    if not (main_author.name and main_author.email):
        return CommitResult("error", detail=f"no author for the commit of {branch}")
    subject = " ".join(title.split())[:200] or "merge"
    listed = "\n".join(f"- {_clean(c.line)}" for c in commits)
    trailers = "".join(
        f"Co-authored-by: {who}\n" for who in _co_authors([c.author for c in commits], main_author)
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
    written_as: list[str] = []
    if objects is not None:
        env["GIT_OBJECT_DIRECTORY"] = str(objects)
        # Written into the user's store: as the clone writes objects, not as the workspace.
        for setting in _user_config(user_repo).writes if user_repo is not None else ():
            written_as += ["-c", setting]
    made = run_git(
        [*written_as, "commit-tree", tree, "-p", base, "-F", "-"],
        worktree,
        env=env,
        input_text=message,
    )
    sha = made.stdout.strip()
    if not made or not sha:
        return CommitResult("error", detail=f"git commit-tree: {explain(made)}")
    moved = workspace_refs.cas(worktree, f"refs/heads/{branch}", sha, head)
    if moved.status != "ok":
        return CommitResult("error", detail=f"moving {branch} to its commit: {moved.detail}")
    return CommitResult(
        "ok", sha, f"{len(commits)} commit(s) made one: {sha[:12]}", len(commits), tree
    )
