"""File and steer tasks: the user's commands shared by the CLI and the API.

Filing a task writes its row, its first job and its folder together; cancel, retry and
approve ask ``domain.decide`` for the move and store it (``store.history``), so a human's
command and the engine move a task the same way. Files an operation writes are removed
again if its transaction does not commit, so nothing is half-written.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain import decide
from orchestrator.domain.stages import (
    STAGE_TRANSITIONS,
    Stage,
    State,
)
from orchestrator.engine.queue import queue_job, queue_next
from orchestrator.errors import NotFoundError, UsageError
from orchestrator.repo_ops import CONTROL_RE, require_repo
from orchestrator.store import dependencies, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow, RepoRow, TaskRow


def require_task(conn: sa.Connection, key: str) -> TaskRow:
    """A task by key, or a clear error for a bad or unknown key."""
    if not taskdir.valid_key(key):
        msg = f"not a task key: {key!r} (keys look like DEMO-7)"
        raise UsageError(msg)
    task = queries.get_task(conn, key)
    if task is None:
        msg = f"unknown task {key} (see `orch task list`)"
        raise NotFoundError(msg)
    return task


def _first_stage(repo: RepoRow) -> Stage:
    return Stage(repo.stages[0])


@dataclass(frozen=True)
class NewTask:
    """The result of filing a task. ``created`` False: the task of that forge issue was
    filed before, and ``task`` is that one (nothing was written)."""

    task: TaskRow
    folder: Path
    patch: Path | None
    after: tuple[str, ...] = ()
    created: bool = True


@dataclass(frozen=True)
class Origin:
    """Where a task came from: who asked, and the forge issue it was filed from."""

    requester: str | None = None
    issue: int | None = None
    url: str | None = None


# More than this many dependencies is a mistake, not a plan (and one IN list per claim).
MAX_AFTER = 100
MAX_AUTHOR_CHARS = 200
MAX_REQUESTER_CHARS = 100
MAX_URL_CHARS = 2000
# "Name <email>": a name with no angle brackets, one space, an address with one "@" and
# no blanks. What git takes as an identity (the merge gate commits with it).
_AUTHOR_RE = re.compile(r"(?P<name>[^<>]+) <(?P<email>[^<>\s@]+@[^<>\s@]+)>\Z")
_AUTHOR_EXAMPLE = "Ada Lovelace <ada@example.org>"


def parse_after(keys: Sequence[str]) -> list[str]:
    """The task keys a new task is to wait for: checked, without repeats, in order given."""
    given = [keys] if isinstance(keys, str) else list(keys)
    out: list[str] = []
    for raw in given:
        key = raw.strip(" ")  # blanks around a key, not line breaks: no silent repair
        if not taskdir.valid_key(key):
            msg = f"not a task key to wait for: {raw!r} (keys look like DEMO-7)"
            raise UsageError(msg)
        if key not in out:
            out.append(key)
    if len(out) > MAX_AFTER:
        msg = f"a task waits for at most {MAX_AFTER} tasks (got {len(out)})"
        raise UsageError(msg)
    return out


def parse_author(value: str | None) -> str | None:
    """A task's author as ``Name <email>``, checked; None when not given."""
    if value is None:
        return None
    text = value.strip(" ")
    if len(text) > MAX_AUTHOR_CHARS:
        msg = f"an author is at most {MAX_AUTHOR_CHARS} characters (got {len(text)})"
        raise UsageError(msg)
    if any(c in A.LINE_BREAKS for c in text):
        msg = f"an author is one line: 'Name <email>', e.g. {_AUTHOR_EXAMPLE!r}"
        raise UsageError(msg)
    bad = CONTROL_RE.search(text)
    if bad:
        # It becomes a git identity and is printed by `orch task show`: an escape
        # sequence or a NUL has no place in either.
        msg = f"an author holds no control characters (found {bad.group()!r})"
        raise UsageError(msg)
    match = _AUTHOR_RE.match(text)
    name = match.group("name").strip() if match else ""
    if match is None or not any(c.isalnum() for c in name):
        msg = f"an author is 'Name <email>', e.g. {_AUTHOR_EXAMPLE!r} (got {text!r})"
        raise UsageError(msg)
    return f"{name} <{match.group('email')}>"


def check_origin(origin: Origin) -> Origin:
    """A task's origin, checked: one-line values that a terminal shows as they are."""
    for value, what, limit in (
        (origin.requester, "a requester", MAX_REQUESTER_CHARS),
        (origin.url, "an issue's URL", MAX_URL_CHARS),
    ):
        if value is None:
            continue
        if not value.strip() or len(value) > limit or CONTROL_RE.search(value):
            msg = f"{what} is one line of 1 to {limit} characters, no control characters"
            raise UsageError(msg)
    if origin.url is not None and not origin.url.startswith(("https://", "http://")):
        msg = f"an issue's URL is an http(s) URL (got {origin.url[:60]!r})"
        raise UsageError(msg)
    if origin.issue is not None and not 0 < origin.issue < 2**31:
        msg = f"an issue number is a positive integer (got {origin.issue})"
        raise UsageError(msg)
    return origin


def waiting_text(deps: Sequence[dependencies.DepRow]) -> str | None:
    """``waiting on DEMO-1 (blocked), DEMO-4 (active)``; None when nothing is waited for."""
    if not deps:
        return None
    return "waiting on " + ", ".join(f"{d.key} ({d.state})" for d in deps)


def task_waiting_on(conn: sa.Connection, task: TaskRow) -> list[dependencies.DepRow]:
    """What holds a live task's jobs back: its dependencies not done; none if it is not live."""
    if task.state not in (State.ACTIVE, State.DEFERRED):
        return []
    return dependencies.waiting_on(conn, task.id)


def _resolve_after(conn: sa.Connection, repo: RepoRow, keys: list[str]) -> list[TaskRow]:
    """The tasks behind ``keys``, or a UsageError naming the first key that is not one."""
    found = queries.get_tasks_by_keys(conn, keys)
    own = f"{repo.key_prefix}-{repo.next_task_number}"
    for key in keys:
        if key in found:
            continue
        if key == own:
            msg = f"a task cannot wait for itself: {key} is the key this task gets"
            raise UsageError(msg)
        msg = f"unknown task {key} to wait for (see `orch task list`)"
        raise UsageError(msg)
    return [found[key] for key in keys]


def _check_no_cycle(conn: sa.Connection, task: TaskRow, after: list[TaskRow]) -> None:
    """Refuse dependencies that would make ``task`` wait, in the end, for itself."""
    # With dependencies set only when a task is filed, a new task has no waiters and only
    # a self-reference closes a cycle; the walk keeps this true if they are ever edited.
    path = dependencies.dependency_path(conn, [t.id for t in after], task.id)
    if path is None:
        return
    keys = {t.id: t.key for t in after} | {task.id: task.key}
    missing = [i for i in path if i not in keys]
    for row in (queries.get_task_by_id(conn, i) for i in missing):
        if row is not None:
            keys[row.id] = row.key
    chain = " -> ".join(keys.get(i, f"#{i}") for i in [task.id, *path])
    msg = f"dependencies of {task.key} would make a cycle: {chain}"
    raise UsageError(msg)


def add_task(
    engine: sa.Engine,
    settings: Settings,
    repo_name: str,
    title: str,
    body: str = "",
    patch: bytes | None = None,
    *,
    after: Sequence[str] = (),
    author: str | None = None,
    origin: Origin | None = None,
    actor: str = "cli",
) -> NewTask:
    """File a task: a row, its first job, ``00-task.md`` and an optional patch.

    ``after``: keys of tasks (of any repo) that must be done, their change on main,
    before the task's first job is claimed. ``author``: ``Name <email>``, kept for the
    task's commit on main. ``origin``: who asked and the forge issue; an issue of the repo
    that has a task already files none (``created`` False, the task it has).
    """
    title = title.strip()
    if not title:
        msg = "a task needs a title"
        raise UsageError(msg)
    if "\n" in title or len(title) > 200:
        msg = "a task title is one line of at most 200 characters"
        raise UsageError(msg)
    bad = CONTROL_RE.search(title)
    if bad:
        # A carriage return or an escape sequence rewrites the terminal line a title is
        # printed on (`orch task list`); a NUL no PostgreSQL text column can hold.
        msg = f"a task title holds no control characters (found {bad.group()!r})"
        raise UsageError(msg)
    if len(title.splitlines()) > 1:
        # U+2028 and U+2029 end a line too (str.splitlines, the artifact reader).
        msg = "a task title is one line of at most 200 characters"
        raise UsageError(msg)
    if "\0" in body:
        # PostgreSQL refuses it (SQLite would keep it): one answer on both backends.
        msg = "a task body holds no NUL character"
        raise UsageError(msg)
    if patch is not None and not patch.strip():
        msg = "the patch file is empty"
        raise UsageError(msg)
    after_keys = parse_after(after)
    author = parse_author(author)
    origin = check_origin(origin or Origin())
    now = time.time()
    folder: Path | None = None
    try:
        with engine.begin() as conn:
            repo = require_repo(conn, repo_name)
            filed = _filed_before(conn, repo, origin, settings)
            if filed is not None:
                return filed
            stage = _first_stage(repo)
            waits_for = _resolve_after(conn, repo, after_keys)
            task = queries.insert_task(
                conn,
                repo_id=repo.id,
                title=title,
                body=body,
                stage=stage.value,
                now=now,
                actor=actor,
                author=author,
                requester=origin.requester,
                forge_issue=origin.issue,
                forge_url=origin.url,
            )
            # The same transaction: no worker sees the task without its dependencies (the
            # claim would take its first job at once), and a refusal writes nothing.
            _check_no_cycle(conn, task, waits_for)
            dependencies.insert_deps(conn, task.id, [t.id for t in waits_for])
            queue_job(conn, repo, task, stage, now=now)
            folder = taskdir.task_dir(settings.tasks_dir, task.key)
            if folder.exists():
                # A leftover folder of a key that never committed (a crash between the
                # two). It holds nothing that the DB knows of: start it afresh.
                shutil.rmtree(folder)
            taskdir.write_atomic(
                folder / A.TASK, taskdir.render_task_md(task.key, repo.name, title, body)
            )
            patch_path = taskdir.add_patch(folder, patch) if patch is not None else None
    except sa.exc.IntegrityError:
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        if origin.issue is None:
            raise
        # PostgreSQL: another transaction filed the same issue between our look and our
        # insert (SQLite's BEGIN IMMEDIATE already kept them apart); the index refused ours.
        with engine.connect() as conn:
            filed = _filed_before(conn, require_repo(conn, repo_name), origin, settings)
        if filed is None:
            raise
        return filed
    except BaseException:
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return NewTask(task, folder, patch_path, tuple(after_keys))


def _filed_before(
    conn: sa.Connection, repo: RepoRow, origin: Origin, settings: Settings
) -> NewTask | None:
    """The task already filed from ``origin``'s issue of ``repo``, or None."""
    if origin.issue is None:
        return None
    task = queries.get_task_by_issue(conn, repo.id, origin.issue)
    if task is None:
        return None
    return NewTask(task, taskdir.task_dir(settings.tasks_dir, task.key), None, created=False)


def cancel_task(engine: sa.Engine, key: str, *, actor: str = "cli", reason: str = "") -> TaskRow:
    """Cancel a task; its running job is asked to stop (the engine kills it)."""
    from orchestrator.store.history import record_transition

    now = time.time()
    with engine.begin() as conn:
        task = require_task(conn, key)
        move = decide.cancel(Stage(task.stage), State(task.state), key, actor=actor, reason=reason)
        return record_transition(conn, task, move, actor=actor, now=now)


def retry_task(
    engine: sa.Engine,
    settings: Settings,
    key: str,
    *,
    patch: bytes | None = None,
    fresh: bool = False,
    actor: str = "cli",
) -> TaskRow:
    """Give a blocked or deferred task another go; budgets start afresh.

    With a patch, the task goes back to development, which applies the newest patch.
    ``fresh`` sends it back to development on a worktree rebuilt from current main: the
    newest patch (when one is attached now) or the branch's old change is applied there.
    """
    if patch is not None and not patch.strip():
        msg = "the patch file is empty"
        raise UsageError(msg)
    now = time.time()
    with engine.begin() as conn:
        task = require_task(conn, key)
        move = decide.retry(
            Stage(task.stage),
            State(task.state),
            key,
            actor=actor,
            running=bool(queries.list_jobs(conn, task_id=task.id, state="running")),
            patch=patch is not None,
            fresh=fresh,
        )
        again, _queued = _store(conn, task, move, actor=actor, now=now)
        if patch is not None:
            taskdir.add_patch(taskdir.task_dir(settings.tasks_dir, key), patch)
        return again


def _store(
    conn: sa.Connection, task: TaskRow, move: decide.Move, *, actor: str, now: float
) -> tuple[TaskRow, JobRow]:
    """Store a human's move that goes on, and queue the job it names."""
    from orchestrator.store.history import record_transition

    assert move.next_job is not None
    fresh = record_transition(conn, task, move, actor=actor, now=now)
    repo = queries.get_repo_by_id(conn, task.repo_id)
    assert repo is not None
    return fresh, queue_next(conn, repo, fresh, move.next_job, now=now)


def approve_task(
    engine: sa.Engine,
    settings: Settings,
    key: str,
    *,
    artifact: bytes | None = None,
    actor: str = "cli",
) -> TaskRow:
    """A human says the blocked stage's work is done. The stage's gates still decide.

    The optional artifact becomes the stage's artifact. A job with the ``approved`` agent
    is queued: the engine starts no process for it and runs the stage's gates, so a human
    can supply work but cannot skip a check (the merge gate included).

    A task waiting at testing for its protected changes (``runners/protected.py``): the
    approval accepts exactly those changes, and the stage's own agent runs again (the
    suite runs with them, as the branch has them), unless an artifact is supplied.
    """
    from orchestrator.runners import protected

    now = time.time()
    if not taskdir.valid_key(key):
        msg = f"not a task key: {key!r} (keys look like DEMO-7)"
        raise UsageError(msg)
    folder = taskdir.task_dir(settings.tasks_dir, key)
    saved = protected.snapshot(folder)
    wrote: list[bool] = []
    try:
        return _approve(engine, key, folder, wrote, artifact=artifact, actor=actor, now=now)
    except BaseException:
        if wrote:
            # The transaction did not commit: the approval of protected changes is not kept.
            protected.restore(folder, saved)
        raise


def _approve(
    engine: sa.Engine,
    key: str,
    folder: Path,
    wrote: list[bool],
    *,
    artifact: bytes | None,
    actor: str,
    now: float,
) -> TaskRow:
    from orchestrator.domain.verdicts import PARSERS
    from orchestrator.runners import protected

    with engine.begin() as conn:
        task = require_task(conn, key)
        stage, state = Stage(task.stage), State(task.state)
        decide.check_approvable(state, key)
        name = STAGE_TRANSITIONS[stage].artifact
        supplied: dict[str, str] = {}
        if artifact is not None:
            # Read as the gate will read it: an artifact the gate refuses is refused here.
            got = taskdir.decode_artifact(artifact)
            if got.problem is not None:
                msg = f"the artifact does not pass as {name}: {got.problem}"
                raise UsageError(msg)
            verdict = PARSERS[name](got.text)
            if not verdict.passed:
                msg = f"the artifact does not pass as {name}: " + "; ".join(verdict.reasons)
                raise UsageError(msg)
            taskdir.write_atomic(folder / name, artifact)
            supplied[name] = taskdir.digest(got.text or "")
        accepted = protected.approve_hold(folder, actor, now) if stage is Stage.TESTING else None
        if accepted is not None:
            wrote.append(True)
        move = decide.approve(
            stage,
            state,
            key,
            actor=actor,
            supplied=name if supplied else None,
            accepted=accepted,
        )
        fresh, approved = _store(conn, task, move, actor=actor, now=now)
        if supplied:
            # The approval's job is the record of the artifact the human supplied.
            jobq.record_artifacts(conn, approved.id, supplied)
        return fresh
