"""Register and change managed repositories: every option checked before one write.

Shared by the CLI (``orch repo``) and the API. Each operation validates all of its input
first, then writes in one transaction.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator.domain.stages import (
    DEFAULT_STAGES,
    Stage,
    validate_pipeline,
)
from orchestrator.errors import NotFoundError, UsageError
from orchestrator.forge.settings import (
    ForgeInput,
    check_forge_options,
    forge_option_changes,
    forge_settings,
    land_of,
)
from orchestrator.masking import masked_remote
from orchestrator.store import queries
from orchestrator.store.rows import RepoRow

# \Z, not $: "$" also matches before a trailing newline ("demo\n" is no repo name).
_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9]{0,15}\Z")
# C0 controls, DEL and C1 controls: never part of a one-line value (a title, a path).
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    # The forge the repo's issues come from and its pull requests go to (forge/settings.py).
    forge: ForgeInput = field(default_factory=ForgeInput)


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
    from orchestrator.runners.loopback import parse_loopback_url

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
    from orchestrator.runners.loopback import parse_loopback_url

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


def _why(exc: Exception) -> str:
    """What went wrong looking a path up, in a few words."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def check_sandbox_paths(paths: Sequence[str], option: str) -> list[str]:
    """``--sandbox-ro`` / ``--sandbox-rw`` values: absolute paths of existing folders or
    files, never ``/`` itself (the system is already visible read-only)."""
    out: list[str] = []
    for raw in _given(paths, option):
        try:
            path = Path(raw).expanduser()
            resolved, found = str(path.resolve()), path.exists()
        except (OSError, RuntimeError) as exc:  # a name too long; ~user of no such user
            msg = f"{option} {raw!r}: cannot be read: {_why(exc)}"
            raise UsageError(msg) from exc
        if not path.is_absolute() or CONTROL_RE.search(raw):
            msg = f"{option} {raw!r}: give an absolute path"
            raise UsageError(msg)
        if resolved == "/" or not found:
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
    elif CONTROL_RE.search(value):
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
        from orchestrator.gates.markers import parse_markers as gate_markers

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
    from orchestrator.runners import protected_globs

    try:
        return protected_globs.parse_globs(values)
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
        # None stored: the defaults (runners.protected_globs.DEFAULT_PROTECTED_PATHS).
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
    from orchestrator.agents.registry import default_agents, parse_agent_assignments
    from orchestrator.gitops.git import branch_exists, current_branch, is_git_repo, rev_parse_branch

    if not _REPO_NAME_RE.match(name):
        msg = f"repo name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        raise UsageError(msg)
    try:
        path = path.expanduser().resolve()
        found = path.exists()
    except (OSError, RuntimeError) as exc:  # a name too long; ~user of no such user
        msg = f"{path}: cannot be read: {_why(exc)}"
        raise UsageError(msg) from exc
    if not found:
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
    forge = forge_option_changes({}, spec.forge)
    options.update({k: v for k, v in forge.items() if v is not None})
    now = time.time()
    with engine.begin() as conn:
        if queries.get_repo(conn, name) is not None:
            msg = f"repo {name!r} is already registered (use `orch repo set`)"
            raise UsageError(msg)
        _check_forge_repo_free(conn, name, options)
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
    from orchestrator.agents.registry import default_agents, parse_agent_assignments
    from orchestrator.gitops.git import branch_exists, rev_parse_branch

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
        changes.update(forge_option_changes(options, spec.forge))
        if spec.self_hosting and "regression_markers" not in {**options, **changes}:
            # Made self-hosting now: the seed's marker, unless markers were chosen already
            # (an empty list is a choice too).
            changes["regression_markers"] = [dict(SELFHOST_MARKER)]
        if changes:
            merged = {**options, **changes}
            if merged.get("forge", "") is None:
                del merged["forge"]  # `--forge none`
            _check_forge_repo_free(conn, name, merged)
            fields["options"] = merged
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
        if "forge" in options or "land" in options:
            check_forge_options(merged)
            _check_forge_repo_free(conn, name, merged)
        return queries.update_repo(conn, name, now=time.time(), options=merged)


def _check_forge_repo_free(conn: sa.Connection, name: str, options: dict[str, Any]) -> None:
    """One registered repo per forge repository: a webhook names the forge's repository,
    and must lead to one repo's tasks."""
    mine = forge_settings(options)
    if mine is None:
        return
    for other in queries.list_repos(conn):
        theirs = forge_settings(other.options)
        # GitHub's names are case-insensitive: Octo/Demo and octo/demo are one repository.
        if other.name != name and theirs is not None and theirs.repo.lower() == mine.repo.lower():
            msg = f"--forge-repo {mine.repo}: repo {other.name} is already that forge repository"
            raise UsageError(msg)


def repo_view(r: RepoRow) -> dict[str, object]:
    """A repo as `orch repo show --json` and the API show it: never a token."""
    from orchestrator.runners import protected_globs

    return {
        "name": r.name,
        "path": r.path,
        "main_branch": r.main_branch,
        # A URL remote may carry a token (``https://user:token@host/...``): shown without it.
        "remote": masked_remote(r.remote) if r.remote else r.remote,
        "key_prefix": r.key_prefix,
        "test_cmd": r.test_cmd,
        "staging_cmd": r.staging_cmd,
        "deploy_cmd": r.deploy_cmd,
        "health_url": r.health_url,
        "stages": list(r.stages),
        "agents": dict(r.agents),
        "agent_env": list(r.agent_env),
        "self_hosting": r.self_hosting,
        "smoke_urls": _option(r, "smoke_urls", []),
        "regression_markers": _option(r, "regression_markers", []),
        "keep_branches": _option(r, "keep_branches", False),
        "sandbox_ro": _option(r, "sandbox_ro", []),
        "sandbox_rw": _option(r, "sandbox_rw", []),
        "protected_paths": list(protected_globs.globs_of(r.options)[0]),
        # The forge's settings name the token's environment variable, never the token.
        "forge": forge.as_dict() if (forge := forge_settings(r.options)) is not None else None,
        "land": land_of(r.options),
        "main_seen": r.main_seen,
    }


def _option(r: RepoRow, key: str, default: Any) -> Any:
    # As stored: a value written some other way is shown as it is, not tidied into a lie.
    options = r.options if isinstance(r.options, dict) else {}
    return options.get(key, default)


def require_repo(conn: sa.Connection, name: str) -> RepoRow:
    """A repo by name, or a NotFoundError that says how to list them."""
    # A name no repo can have is not looked up: a NUL in it is an error PostgreSQL raises
    # for any text parameter ("text fields cannot contain NUL"), not "unknown repo".
    repo = queries.get_repo(conn, name) if _REPO_NAME_RE.match(name) else None
    if repo is None:
        msg = f"unknown repo {name!r} (see `orch repo list`)"
        raise NotFoundError(msg)
    return repo
