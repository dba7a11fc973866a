"""User operations shared by the CLI and the API: register repos, file and steer tasks.

Each operation validates all of its input first, then writes in one transaction; files it
writes are removed again if the transaction does not commit, so nothing is half-written.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.agents.registry import LLM_BACKENDS, default_agents, parse_agent_assignments
from orchestrator.alerts import resolve_task_alerts
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain import breaker
from orchestrator.domain.stages import (
    DEFAULT_STAGES,
    PIPELINE,
    STAGE_TRANSITIONS,
    Stage,
    State,
    TransitionKind,
    next_stage,
    validate_pipeline,
)
from orchestrator.domain.verdicts import PARSERS
from orchestrator.engine.queue import agent_for, queue_job
from orchestrator.errors import NotFoundError, UsageError
from orchestrator.gitops.git import (
    branch_exists,
    current_branch,
    is_git_repo,
    rev_parse_branch,
)
from orchestrator.runners import protected
from orchestrator.store import breakers, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.queries import RepoRow, TaskRow, TransitionRow

# \Z, not $: "$" also matches before a trailing newline ("demo\n" is no repo name).
_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9]{0,15}\Z")

# The agent that stands for "a human finished this stage": no process, only the gates.
APPROVED_AGENT = "approved"
# C0 controls, DEL and C1 controls: never part of a one-line title.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def split_command(value: str | None, option: str) -> list[str] | None:
    """A command given as one string, split with shlex into argv (never a shell)."""
    import shlex

    if value is None:
        return None
    if not value.strip():
        return []
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        msg = f"{option}: cannot split {value!r}: {exc}"
        raise UsageError(msg) from exc
    return argv


def default_prefix(name: str) -> str:
    """A task-key prefix from a repo name: ``my-app`` → ``MYAPP``."""
    letters = re.sub(r"[^A-Za-z0-9]", "", name).upper()
    letters = letters.lstrip("0123456789")
    return letters[:10]


@dataclass(frozen=True)
class RepoInput:
    """What a user may give when registering or changing a repo."""

    main_branch: str | None = None
    remote: str | None = None
    test_cmd: str | None = None
    staging_cmd: str | None = None
    deploy_cmd: str | None = None
    health_url: str | None = None
    stages: Sequence[str] | None = None
    agents: Sequence[str] = ()
    agent_env: Sequence[str] | None = None
    prefix: str | None = None
    self_hosting: bool | None = None
    # Repeatable options: None is "not given"; a list holding only empty values clears.
    smoke_urls: Sequence[str] | None = None
    regression_markers: Sequence[str] | None = None
    keep_branches: bool | None = None
    sandbox_ro: Sequence[str] | None = None
    sandbox_rw: Sequence[str] | None = None
    # Globs of the paths a task may not change without a human (runners/protected.py);
    # a list holding only empty values restores the defaults.
    protected_paths: Sequence[str] | None = None
    # Accept main as it is now as the base to build on (after a rewind a human checked).
    trust_main: bool = False


# The seed's marker of the self-hosting repo: the merge gate's own re-test classifier, which
# a task once dropped from main without a red test (ORCH-110).
SELFHOST_MARKER = {
    "task": "ORCH-110",
    "symbol": "classify_retest_failure",
    "path": "src/orchestrator/gates/merge_gate.py",
}
_MARKER_TASK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_MAX_OPTION_VALUES = 50


def _check_health_url(url: str | None) -> None:
    if url is None or url == "":
        return
    # The monitor's own parser: a URL registered here is one the monitor will probe (not
    # refuse after a deploy), and a malformed one ("http://[::1") is a usage error, not a
    # ValueError out of urlsplit. Health checks only ever go to this machine's loopback.
    from orchestrator.runners.base import parse_loopback_url

    parsed, why = parse_loopback_url(url, schemes=("http", "https"))
    if parsed is None:
        msg = f"--health-url: {why}"
        raise UsageError(msg)


def _given(values: Sequence[str], option: str) -> list[str]:
    """The non-empty values of a repeatable option (``[]``: the user cleared it)."""
    if isinstance(values, str):
        values = [values]
    out = [v.strip() for v in values if v.strip()]
    if len(out) > _MAX_OPTION_VALUES:
        msg = f"{option}: at most {_MAX_OPTION_VALUES} values (got {len(out)})"
        raise UsageError(msg)
    return out


def check_smoke_urls(urls: Sequence[str]) -> list[str]:
    """``--smoke-url`` values: plain-http loopback URLs only, as the test-runner probes them."""
    from orchestrator.runners.base import parse_loopback_url

    out: list[str] = []
    for url in _given(urls, "--smoke-url"):
        # The smoke check's own parser and schemes: a URL taken here is one it will GET,
        # never one it refuses after a green suite.
        parsed, why = parse_loopback_url(url, schemes=("http",))
        if parsed is None:
            msg = f"--smoke-url: {why}"
            raise UsageError(msg)
        if url not in out:
            out.append(url)
    return out


def check_sandbox_paths(paths: Sequence[str], option: str) -> list[str]:
    """``--sandbox-ro`` / ``--sandbox-rw`` values: absolute paths of existing folders or
    files, never ``/`` itself (the system is already visible read-only)."""
    out: list[str] = []
    for raw in _given(paths, option):
        path = Path(raw).expanduser()
        if not path.is_absolute() or _CONTROL_RE.search(raw):
            msg = f"{option} {raw!r}: give an absolute path"
            raise UsageError(msg)
        resolved = str(path.resolve())
        if resolved == "/" or not path.exists():
            msg = f"{option} {raw!r}: not an existing folder or file other than /"
            raise UsageError(msg)
        if resolved not in out:
            out.append(resolved)
    return out


def parse_marker(value: str) -> dict[str, str]:
    """``ID:SYMBOL:PATH`` as the merge gate reads a marker: ``{task, symbol, path}``.

    The symbol may hold ``:`` (``Foo::bar``); the ID and the path may not.
    """
    task, sep, rest = value.partition(":")
    symbol, sep2, path = rest.rpartition(":")
    task, path = task.strip(), path.strip()
    problem = None
    if not (sep and sep2 and task and symbol.strip() and path):
        problem = "give ID:SYMBOL:PATH, e.g. ORCH-110:classify_retest_failure:src/app.py"
    elif not _MARKER_TASK_RE.match(task):
        problem = f"the ID {task!r} is letters, digits, '.', '_' or '-'"
    elif _CONTROL_RE.search(value):
        problem = "no control characters"
    elif path.startswith("/") or ".." in Path(path).parts:
        problem = f"the path {path!r} is relative to the top of the repo, without '..'"
    if problem is not None:
        msg = f"--regression-marker {value!r}: {problem}"
        raise UsageError(msg)
    return {"task": task, "symbol": symbol, "path": path}


def parse_markers(values: Sequence[str]) -> list[dict[str, str]]:
    """Every ``--regression-marker`` value, checked, without repeats."""
    out: list[dict[str, str]] = []
    for value in _given(values, "--regression-marker"):
        marker = parse_marker(value)
        if marker not in out:
            out.append(marker)
    return out


def _check_known_options(options: dict[str, Any]) -> None:
    """Options written as data (``set_repo_options``) pass the checks the CLI's do."""
    if "smoke_urls" in options:
        urls = options["smoke_urls"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            msg = "smoke_urls must be a list of URLs"
            raise UsageError(msg)
        check_smoke_urls(urls)
    if "regression_markers" in options:
        from orchestrator.gates.merge_gate import parse_markers as gate_markers

        _found, problems = gate_markers(options)
        if problems:
            raise UsageError("; ".join(problems))
    for key in ("sandbox_ro", "sandbox_rw"):
        if key in options:
            paths = options[key]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                msg = f"{key} must be a list of paths"
                raise UsageError(msg)
            check_sandbox_paths(paths, key)
    if "keep_branches" in options and not isinstance(options["keep_branches"], bool):
        msg = "keep_branches must be true or false"
        raise UsageError(msg)
    if options.get("protected_paths") is not None:
        globs = options["protected_paths"]
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            msg = "protected_paths must be a list of globs"
            raise UsageError(msg)
        if check_protected_paths(globs) != globs or not globs:
            msg = "protected_paths must be a non-empty list of distinct globs, one per item"
            raise UsageError(msg)


def check_protected_paths(values: Sequence[str]) -> list[str]:
    """``--protected-paths`` values (repeatable, comma lists), checked; ``[]``: the defaults."""
    try:
        return protected.parse_globs(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _option_changes(spec: RepoInput) -> dict[str, Any]:
    """The ``repo.options`` keys a RepoInput sets, checked."""
    changes: dict[str, Any] = {}
    if spec.smoke_urls is not None:
        changes["smoke_urls"] = check_smoke_urls(spec.smoke_urls)
    if spec.regression_markers is not None:
        changes["regression_markers"] = parse_markers(spec.regression_markers)
    if spec.keep_branches is not None:
        changes["keep_branches"] = spec.keep_branches
    if spec.sandbox_ro is not None:
        changes["sandbox_ro"] = check_sandbox_paths(spec.sandbox_ro, "--sandbox-ro")
    if spec.sandbox_rw is not None:
        changes["sandbox_rw"] = check_sandbox_paths(spec.sandbox_rw, "--sandbox-rw")
    if spec.protected_paths is not None:
        # None stored: the defaults (runners.protected.DEFAULT_PROTECTED_PATHS).
        changes["protected_paths"] = check_protected_paths(spec.protected_paths) or None
    return changes


def _check_env_names(names: Sequence[str]) -> list[str]:
    out = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            msg = f"--agent-env: {name!r} is not an environment variable name"
            raise UsageError(msg)
        out.append(name)
    return out


def selfhost_staging_cmd() -> list[str]:
    """A self-hosting repo's default staging command: smoke the worktree's own orchestrator."""
    return [sys.executable, "-m", "orchestrator.selfhost_staging"]


def add_repo(engine: sa.Engine, name: str, path: Path, spec: RepoInput) -> RepoRow:
    """Register a managed repository after checking every input."""
    if not _REPO_NAME_RE.match(name):
        msg = f"repo name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        raise UsageError(msg)
    path = path.expanduser().resolve()
    if not path.exists():
        msg = f"{path}: no such directory"
        raise UsageError(msg)
    if not is_git_repo(path):
        msg = f"{path} is not the top of a git repository"
        raise UsageError(msg)
    main = spec.main_branch or current_branch(path) or "main"
    if not branch_exists(path, main):
        msg = f"{path}: branch {main!r} does not exist (give --main BRANCH)"
        raise UsageError(msg)
    stages = validate_pipeline(spec.stages) if spec.stages else DEFAULT_STAGES
    agents = default_agents(stages)
    agents.update(parse_agent_assignments(list(spec.agents), stages))
    prefix = (spec.prefix or default_prefix(name)).upper()
    if not _PREFIX_RE.match(prefix):
        msg = f"task key prefix {prefix!r}: give --prefix with letters and digits"
        raise UsageError(msg)
    _check_health_url(spec.health_url)
    test_cmd = split_command(spec.test_cmd, "--test-cmd")
    staging_cmd = split_command(spec.staging_cmd, "--staging-cmd")
    if spec.self_hosting and staging_cmd is None:
        staging_cmd = selfhost_staging_cmd()
    deploy_cmd = split_command(spec.deploy_cmd, "--deploy-cmd")
    agent_env = _check_env_names(spec.agent_env or ())
    options = _option_changes(spec)
    if spec.self_hosting and "regression_markers" not in options:
        options["regression_markers"] = [dict(SELFHOST_MARKER)]
    now = time.time()
    with engine.begin() as conn:
        if queries.get_repo(conn, name) is not None:
            msg = f"repo {name!r} is already registered (use `orch repo set`)"
            raise UsageError(msg)
        taken = [r.name for r in queries.list_repos(conn) if r.key_prefix == prefix]
        if taken:
            msg = f"task key prefix {prefix} is used by repo {taken[0]}; give --prefix"
            raise UsageError(msg)
        return queries.insert_repo(
            conn,
            name=name,
            path=str(path),
            key_prefix=prefix,
            now=now,
            main_branch=main,
            # Main as the user registers it is the first main the merge gate must build
            # on top of: a rewind before the first merge is caught too.
            main_seen=rev_parse_branch(path, main),
            remote=spec.remote,
            test_cmd=test_cmd,
            staging_cmd=staging_cmd,
            deploy_cmd=deploy_cmd,
            health_url=spec.health_url or None,
            stages=[s.value for s in stages],
            agents=agents,
            agent_env=agent_env,
            options=options,
            self_hosting=bool(spec.self_hosting),
        )


def set_repo(engine: sa.Engine, name: str, spec: RepoInput) -> RepoRow:
    """Change a registered repo; only the given fields move."""
    with engine.begin() as conn:
        repo = require_repo(conn, name)
        fields: dict[str, Any] = {}
        path = Path(repo.path)
        if spec.main_branch is not None:
            if not branch_exists(path, spec.main_branch):
                msg = f"{path}: branch {spec.main_branch!r} does not exist"
                raise UsageError(msg)
            fields["main_branch"] = spec.main_branch
        if spec.remote is not None:
            fields["remote"] = spec.remote or None
        for attr, option in (
            ("test_cmd", "--test-cmd"),
            ("staging_cmd", "--staging-cmd"),
            ("deploy_cmd", "--deploy-cmd"),
        ):
            value = getattr(spec, attr)
            if value is not None:
                fields[attr] = split_command(value, option) or None
        if spec.health_url is not None:
            _check_health_url(spec.health_url)
            fields["health_url"] = spec.health_url or None
        stages = tuple(Stage(s) for s in repo.stages)
        agents = dict(repo.agents)
        if spec.stages:
            stages = validate_pipeline(spec.stages)
            fresh = default_agents(stages)
            agents = {s: agents.get(s, fresh[s]) for s in fresh}
            fields["stages"] = [s.value for s in stages]
        if spec.agents:
            agents.update(parse_agent_assignments(list(spec.agents), stages))
        if spec.stages or spec.agents:
            fields["agents"] = agents
        if spec.agent_env is not None:
            fields["agent_env"] = _check_env_names(spec.agent_env)
        if spec.self_hosting is not None:
            fields["self_hosting"] = spec.self_hosting
        if spec.prefix is not None:
            msg = "the task key prefix cannot change once tasks may exist"
            raise UsageError(msg)
        if spec.trust_main:
            main = fields.get("main_branch", repo.main_branch)
            sha = rev_parse_branch(path, str(main))
            if sha is None:
                msg = f"{path}: cannot read branch {main}"
                raise UsageError(msg)
            fields["main_seen"] = sha
        changes = _option_changes(spec)
        options = dict(repo.options or {})
        if spec.self_hosting and "regression_markers" not in {**options, **changes}:
            # Made self-hosting now: the seed's marker, unless markers were chosen already
            # (an empty list is a choice too).
            changes["regression_markers"] = [dict(SELFHOST_MARKER)]
        if changes:
            fields["options"] = {**options, **changes}
        if not fields:
            msg = "nothing to change: give at least one option"
            raise UsageError(msg)
        return queries.update_repo(conn, name, now=time.time(), **fields)


def set_repo_options(engine: sa.Engine, name: str, options: dict[str, Any]) -> RepoRow:
    """Merge free-form per-repo options (monitor checks, regression markers, ...).

    The options the CLI sets (smoke URLs, markers, keep_branches) are checked as it checks
    them: a malformed value is refused here, not found by the engine later.
    """
    _check_known_options(options)
    with engine.begin() as conn:
        repo = require_repo(conn, name)
        merged = {**dict(repo.options or {}), **options}
        return queries.update_repo(conn, name, now=time.time(), options=merged)


def require_repo(conn: sa.Connection, name: str) -> RepoRow:
    """A repo by name, or a NotFoundError that says how to list them."""
    # A name no repo can have is not looked up: a NUL in it is an error PostgreSQL raises
    # for any text parameter ("text fields cannot contain NUL"), not "unknown repo".
    repo = queries.get_repo(conn, name) if _REPO_NAME_RE.match(name) else None
    if repo is None:
        msg = f"unknown repo {name!r} (see `orch repo list`)"
        raise NotFoundError(msg)
    return repo


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
    """The result of filing a task."""

    task: TaskRow
    folder: Path
    patch: Path | None
    after: tuple[str, ...] = ()


# More than this many dependencies is a mistake, not a plan (and one IN list per claim).
MAX_AFTER = 100
MAX_AUTHOR_CHARS = 200
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
    bad = _CONTROL_RE.search(text)
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


def waiting_text(deps: Sequence[queries.DepRow]) -> str | None:
    """``waiting on DEMO-1 (blocked), DEMO-4 (active)``; None when nothing is waited for."""
    if not deps:
        return None
    return "waiting on " + ", ".join(f"{d.key} ({d.state})" for d in deps)


def task_waiting_on(conn: sa.Connection, task: TaskRow) -> list[queries.DepRow]:
    """What holds a live task's jobs back: its dependencies not done; none if it is not live."""
    if task.state not in (State.ACTIVE, State.DEFERRED):
        return []
    return queries.waiting_on(conn, task.id)


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
    path = queries.dependency_path(conn, [t.id for t in after], task.id)
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
) -> NewTask:
    """File a task: a row, its first job, ``00-task.md`` and an optional patch.

    ``after``: keys of tasks (of any repo) that must be done, their change on main,
    before the task's first job is claimed. ``author``: ``Name <email>``, kept for the
    task's commit on main.
    """
    title = title.strip()
    if not title:
        msg = "a task needs a title"
        raise UsageError(msg)
    if "\n" in title or len(title) > 200:
        msg = "a task title is one line of at most 200 characters"
        raise UsageError(msg)
    bad = _CONTROL_RE.search(title)
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
    now = time.time()
    folder: Path | None = None
    try:
        with engine.begin() as conn:
            repo = require_repo(conn, repo_name)
            stage = _first_stage(repo)
            waits_for = _resolve_after(conn, repo, after_keys)
            task = queries.insert_task(
                conn,
                repo_id=repo.id,
                title=title,
                body=body,
                stage=stage.value,
                now=now,
                author=author,
            )
            # The same transaction: no worker sees the task without its dependencies (the
            # claim would take its first job at once), and a refusal writes nothing.
            _check_no_cycle(conn, task, waits_for)
            queries.insert_deps(conn, task.id, [t.id for t in waits_for])
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
    except BaseException:
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return NewTask(task, folder, patch_path, tuple(after_keys))


def _record(
    conn: sa.Connection,
    task: TaskRow,
    kind: str,
    *,
    to_stage: str,
    to_state: str,
    reasons: list[str],
    actor: str,
    now: float,
    **fields: Any,
) -> TransitionRow:
    queries.update_task(
        conn, task.id, now=now, stage=to_stage, state=to_state, reasons=reasons, **fields
    )
    return queries.insert_transition(
        conn,
        task_id=task.id,
        kind=kind,
        from_stage=task.stage,
        to_stage=to_stage,
        from_state=task.state,
        to_state=to_state,
        reasons=reasons,
        actor=actor,
        now=now,
    )


def cancel_task(engine: sa.Engine, key: str, *, actor: str = "cli", reason: str = "") -> TaskRow:
    """Cancel a task; its running job is asked to stop (the engine kills it)."""
    now = time.time()
    with engine.begin() as conn:
        task = require_task(conn, key)
        if task.state in (State.DONE, State.CANCELLED):
            msg = f"{key} is {task.state}; nothing to cancel"
            raise UsageError(msg)
        reasons = [f"cancelled by {actor}" + (f": {reason}" if reason else "")]
        jobq.request_cancel(conn, task.id, now=now)
        resolve_task_alerts(conn, task.id, now)
        _record(
            conn,
            task,
            "cancel",
            to_stage=task.stage,
            to_state=State.CANCELLED,
            reasons=reasons,
            actor=actor,
            now=now,
        )
        return require_task(conn, key)


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
        if task.state not in (State.BLOCKED, State.DEFERRED):
            msg = f"{key} is {task.state}; only a blocked or deferred task can be retried"
            raise UsageError(msg)
        if queries.list_jobs(conn, task_id=task.id, state="running"):
            msg = f"{key} has a running job; wait for it or cancel the task"
            raise UsageError(msg)
        repo = queries.get_repo_by_id(conn, task.repo_id)
        assert repo is not None
        stage = Stage(task.stage)
        reasons = [f"retried by {actor}; retry budgets start afresh"]
        if patch is not None:
            stage = Stage.DEVELOPMENT
            reasons.append("a new patch was attached; back to development")
        fresh_start = None
        if fresh:
            stage = Stage.DEVELOPMENT
            fresh_start = "patch" if patch is not None else "carry"
            reasons.append("a fresh start: the worktree is rebuilt from current main")
        jobq.drop_queued(conn, task.id, now=now, reason=f"superseded by a retry by {actor}")
        resolve_task_alerts(conn, task.id, now)
        _record(
            conn,
            task,
            "retry",
            to_stage=stage.value,
            to_state=State.ACTIVE,
            reasons=reasons,
            actor=actor,
            now=now,
            developer_retries=0,
            infra_retries=0,
            gate_retries=0,
        )
        again = require_task(conn, key)
        queue_job(conn, repo, again, stage, now=now, fresh_start=fresh_start)
        if patch is not None:
            taskdir.add_patch(taskdir.task_dir(settings.tasks_dir, key), patch)
        return again


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
    with engine.begin() as conn:
        task = require_task(conn, key)
        if task.state != State.BLOCKED:
            msg = f"{key} is {task.state}; only a blocked task can be approved"
            raise UsageError(msg)
        repo = queries.get_repo_by_id(conn, task.repo_id)
        assert repo is not None
        stage = Stage(task.stage)
        name = STAGE_TRANSITIONS[stage].artifact
        reasons = [f"approved by {actor}: {stage.value} is to be gated"]
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
            reasons.append(f"{name} supplied by {actor}")
        agent = APPROVED_AGENT
        accepted = protected.approve_hold(folder, actor, now) if stage is Stage.TESTING else None
        if accepted is not None:
            wrote.append(True)
            reasons.append(f"protected changes accepted by {actor}: {', '.join(accepted)}")
            if artifact is None:
                agent = agent_for(repo, stage)
                reasons[0] = (
                    f"approved by {actor}: testing runs again, with the protected changes "
                    f"(the gates still run)"
                )
        jobq.drop_queued(conn, task.id, now=now, reason=f"superseded by an approval by {actor}")
        resolve_task_alerts(conn, task.id, now)
        _record(
            conn,
            task,
            "approve",
            to_stage=stage.value,
            to_state=State.ACTIVE,
            reasons=reasons,
            actor=actor,
            now=now,
        )
        fresh = require_task(conn, key)
        approved = queue_job(conn, repo, fresh, stage, now=now, agent=agent)
        if supplied:
            # The approval's job is the record of the artifact the human supplied.
            jobq.record_artifacts(conn, approved.id, supplied)
        return fresh


def stage_after(repo: RepoRow, stage: Stage) -> Stage | None:
    """The stage after ``stage`` in a repo's pipeline."""
    return next_stage(tuple(Stage(s) for s in repo.stages), stage)


KNOWN_TRANSITION_KINDS = frozenset(
    {"create", "cancel", "retry", "approve", *(k.value for k in TransitionKind)}
)
ALL_STAGES = tuple(s.value for s in PIPELINE)


def list_backends(engine: sa.Engine) -> list[breakers.BackendRow]:
    """The model backends' breakers, by name (a backend no job has used has none)."""
    with engine.connect() as conn:
        return breakers.list_backends(conn)


def resume_backend(engine: sa.Engine, name: str) -> breakers.BackendRow:
    """Probe a paused model backend at once (``orch backend resume``): its next job runs as
    the probe, and the model answering it closes the breaker."""
    with engine.begin() as conn:
        breakers.lock_spend(conn)
        # Only a backend's name is looked up (a NUL is an error on PostgreSQL).
        row = breakers.get(conn, name) if name in LLM_BACKENDS else None
        if row is None:
            known = ", ".join(r.state.name for r in breakers.list_backends(conn)) or "none yet"
            msg = f"no model backend {name!r} has run a job (known: {known})"
            raise NotFoundError(msg)
        if row.state.paused:
            now = time.time()
            breakers.save(conn, breaker.resume(row.state, now), now=now)
            # Its waiting jobs may run now: the first one claimed is the probe.
            jobq.wake_waiting(conn, now=now, said=breaker.paused_mark(name))
        fresh = breakers.get(conn, name)
    assert fresh is not None
    return fresh
