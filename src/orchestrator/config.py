"""Settings: every knob declared once, with type, default, unit and a one-line description.

Each field reads the environment variable ``ORCH_<NAME>`` (and a ``.env`` file in the
working directory). ``.env.example`` and ``docs/configuration.md`` are rendered from this
class (``config_docs.py``); a test keeps them in step.

``Settings`` is a plain dataclass, and ``load_settings`` reads the environment without
pydantic when every value in it is one whose meaning is beyond doubt (a number in digits,
``true``) and there is no ``.env``: reading the settings through pydantic-settings (its
import, pydantic's, the model) took ~80 ms of CPU, a fifth of a short command such as
`orch status`; read so, ~5 ms. Any other value, a ``.env`` file, or an argument other than
``home`` go to the pydantic-settings model made from the same fields (``settings_model``),
which reads them as it always did and whose errors are the ones shown.
``tests/unit/test_settings_reading.py`` holds the two readings to the same settings.

The module is longer than most because it is one declaration: the ``Settings`` fields, each
with its description, the validators and cross-key invariants that guard them, how they are
read, and the parsers of the values those validators check (``sandbox_network_for``,
``host_names``, ``in_scope``). Split, a setting's rules would live apart from the setting.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

ENV_PREFIX = "ORCH_"

# Claude Code's --permission-mode choices, plus the flag that skips every check.
CLAUDE_PERMISSION_MODES = (
    "acceptEdits",
    "auto",
    "dontAsk",
    "plan",
    "bypassPermissions",
    "dangerously-skip-permissions",
)
CODEX_SANDBOXES = ("read-only", "workspace-write", "danger-full-access")


def _default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".orchestrator"


def setting(
    default: Any = MISSING,
    *,
    description: str,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    secret: bool = False,
) -> Any:
    """One field of ``Settings``: its default (or a factory of it), what it does, and the
    bounds of a number (pydantic's ``ge``, ``gt``, ``le``), kept in the field's metadata.
    A ``secret`` one (a token, a URL that may carry a password) is left out of the repr."""
    bounds = {name: v for name, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    meta = {"description": description, "bounds": bounds}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the orchestrator. Environment: ``ORCH_<NAME>``, read by
    ``load_settings``; made directly, it reads nothing and checks nothing."""

    home: Path = setting(  # noqa: RUF009 (a dataclasses.field, with its default_factory)
        default_factory=_default_home,
        description="State directory: database, task folders, worktrees, logs.",
    )
    database_url: str = setting(
        default="",
        secret=True,
        description="SQLAlchemy URL; empty means SQLite at <home>/orchestrator.db.",
    )
    db_pool_size: int = setting(
        default=5, ge=1, description="Database connections each process keeps open."
    )
    db_max_overflow: int = setting(
        default=10, ge=0, description="Connections a process may open beyond the pool at peaks."
    )
    db_pool_timeout_s: float = setting(
        default=30.0, gt=0, description="Wait for a free pooled connection before an error."
    )
    db_listen_enabled: bool = setting(
        default=True,
        description="PostgreSQL: wake workers by LISTEN/NOTIFY; off, they find work by polling.",
    )
    max_parallel_jobs: int = setting(
        default=4,
        ge=1,
        description="Jobs running at once, all repos and all workers of the database.",
    )
    max_parallel_jobs_per_repo: int = setting(
        default=2, ge=1, description="Jobs running at once for one repo, all workers."
    )
    developer_retry_budget: int = setting(
        default=3, ge=0, description="Rollbacks to development before the task is blocked."
    )
    infra_retry_budget: int = setting(
        default=3, ge=0, description="Deferrals for tool errors (timeout, crash) before blocking."
    )
    infra_retry_backoff_s: float = setting(
        default=5.0, ge=0, description="First backoff of a deferred job; doubles on each retry."
    )
    agent_timeout_s: float = setting(
        default=1800.0, gt=0, description="Wall-clock limit of one agent job."
    )
    test_runner_timeout_s: float = setting(
        default=900.0, gt=0, description="Wall-clock limit of the test-runner's suite run."
    )
    kill_grace_s: float = setting(
        default=5.0, ge=0, description="Wait between SIGTERM and SIGKILL of a process group."
    )
    reaper_max_running_s: float = setting(
        default=3600.0, gt=0, description="A job running longer than this is killed (timeout)."
    )
    merge_retest_timeout_s: float = setting(
        default=900.0, gt=0, description="Wall-clock limit of the merge gate's re-test."
    )
    test_runner_enabled: bool = setting(
        default=True, description="Kill-switch: run tests with the deterministic test-runner."
    )
    test_runner_repos: str = setting(
        default="*", description="CSV of repos the test-runner serves; * means all."
    )
    staging_runner_enabled: bool = setting(
        default=True, description="Kill-switch: run staging with the deterministic runner."
    )
    staging_runner_repos: str = setting(
        default="*", description="CSV of repos the staging-runner serves; * means all."
    )
    staging_runner_timeout_s: float = setting(
        default=900.0, gt=0, description="Wall-clock limit of the staging command."
    )
    staging_runner_infra_retry_budget: int = setting(
        default=2, ge=0, description="Deferrals of a staging tool error before blocking."
    )
    merge_gate_infra_retry_budget: int = setting(
        default=3,
        ge=0,
        description="Gate-only retries of the merge gate's infra trouble before blocking.",
    )
    merge_gate_infra_retry_backoff_s: float = setting(
        default=30.0, ge=0, description="First backoff of a merge-gate retry; doubles each time."
    )
    forge_checks_timeout_s: float = setting(
        default=86_400.0,
        gt=0,
        description="How long a pull request may wait for checks and approvals before an alert.",
    )
    subprocess_tree_kill_enabled: bool = setting(
        default=True,
        description="Run commands in their own process group and kill the whole tree.",
    )
    merge_retest_skip_when_current_enabled: bool = setting(
        default=True, description="Skip the merge re-test when the exact tree was validated."
    )
    job_lease_s: float = setting(
        default=30.0, gt=0, description="Lease of a claimed job; heartbeats renew it."
    )
    heartbeat_interval_s: float = setting(
        default=5.0, gt=0, description="How often a worker renews its leases."
    )
    poll_interval_s: float = setting(
        default=1.0, gt=0, description="How often a worker looks for work other processes made."
    )
    paused: bool = setting(default=False, description="Global kill switch: claim no new jobs.")
    api_token: str = setting(
        default="",
        secret=True,
        description=(
            "Bearer token of the API (every request but /health); empty: the one in "
            "<home>/api-token."
        ),
    )
    api_host: str = setting(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = setting(default=8765, ge=0, le=65535, description="Port the API binds to.")
    api_allowed_hosts: str = setting(
        default="",
        description="CSV of Host names the API answers besides 127.0.0.1, localhost, ::1.",
    )
    api_max_body_bytes: int = setting(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API reads (a 5 MB patch fits); more: 413.",
    )
    alert_webhook_url: str = setting(
        default="",
        secret=True,
        description="POST alerts as JSON here (Slack-compatible); empty: off.",
    )
    forge_poll_s: float = setting(
        default=60.0,
        ge=0,
        description="How often a forge is read: labeled issues (0: never), waiting pull requests.",
    )
    github_webhook_secret_env: str = setting(
        default="ORCH_GITHUB_WEBHOOK_SECRET",
        description="Env var holding the secret of POST /webhooks/github; unset: refused.",
    )
    github_webhook_max_body_bytes: int = setting(
        default=1024 * 1024,
        ge=1024,
        description="Largest GitHub webhook body read (signed, so read whole); more: 413.",
    )
    agent_stall_timeout_s: float = setting(
        default=600.0,
        gt=0,
        description="Kill an LLM agent whose log and worktree stay unchanged this long.",
    )
    llm_budget_per_task_usd: float = setting(
        default=10.0, ge=0, description="LLM spend allowed for one task; 0 means no limit."
    )
    llm_budget_per_day_usd: float = setting(
        default=100.0,
        ge=0,
        description="LLM spend allowed over the last 24 hours, all tasks; 0 means no limit.",
    )
    backend_breaker_threshold: int = setting(
        default=3,
        ge=1,
        description="Model-API outage failures in a row (any task) that pause a model backend.",
    )
    backend_probe_first_s: float = setting(
        default=30.0,
        gt=0,
        description="First wait before a paused model backend is probed; doubles per failure.",
    )
    backend_probe_max_s: float = setting(
        default=600.0,
        gt=0,
        description="Longest wait between probes of a paused backend (and after a 401/403).",
    )
    claude_command: str = setting(
        default="claude", description="The Claude Code executable (split with shlex)."
    )
    claude_model: str = setting(
        default="", description="Model for Claude Code (--model); empty: the CLI's default."
    )
    claude_max_turns: int = setting(
        default=50, ge=1, description="Claude Code --max-turns: agent turns in one job."
    )
    claude_max_retries: int = setting(
        default=2, ge=0, description="CLAUDE_CODE_MAX_RETRIES: API retries inside one job."
    )
    claude_permission_mode: str = setting(
        default="acceptEdits",
        description="acceptEdits, auto, dontAsk, plan, bypassPermissions or "
        "dangerously-skip-permissions.",
    )
    claude_allowed_tools: str = setting(
        default="", description="CSV of tool rules Claude Code may use unasked (--allowedTools)."
    )
    # Claude Code's streamed spend is priced with these while it runs (its own total comes
    # only at the end). Defaults: the pinned CLI's (2.1.330) table for its default model.
    claude_price_in_per_mtok_usd: float = setting(
        default=4.0,
        ge=0,
        description="USD per million input tokens, for Claude Code's spend while it runs.",
    )
    claude_price_out_per_mtok_usd: float = setting(
        default=20.0,
        ge=0,
        description="USD per million output tokens, for Claude Code's spend while it runs.",
    )
    claude_price_cache_write_per_mtok_usd: float = setting(
        default=5.0,
        ge=0,
        description="USD per million cache-write input tokens, for Claude Code's running spend.",
    )
    claude_price_cache_read_per_mtok_usd: float = setting(
        default=0.2,
        ge=0,
        description="USD per million cache-read input tokens, for Claude Code's running spend.",
    )
    codex_command: str = setting(
        default="codex", description="The Codex executable (split with shlex)."
    )
    codex_model: str = setting(
        default="gpt-5.5",
        description="Model for Codex: one its model catalog knows, else it offers no apply_patch.",
    )
    codex_base_url: str = setting(
        default="https://api.openai.com/v1",
        description="Codex model provider base_url; the repo's OPENAI_BASE_URL wins.",
    )
    codex_api_key_env: str = setting(
        default="OPENAI_API_KEY",
        description="Env var (passed with --agent-env) holding Codex's API key.",
    )
    codex_sandbox: str = setting(
        default="workspace-write",
        description="Codex sandbox_mode: read-only, workspace-write or danger-full-access.",
    )
    codex_max_retries: int = setting(
        default=2, ge=0, description="Codex request and stream retries inside one job."
    )
    codex_price_in_per_mtok_usd: float = setting(
        default=1.25, ge=0, description="USD per million input tokens, for Codex's cost."
    )
    codex_price_out_per_mtok_usd: float = setting(
        default=10.0, ge=0, description="USD per million output tokens, for Codex's cost."
    )
    aider_command: str = setting(
        default="aider", description="The aider executable (split with shlex)."
    )
    aider_model: str = setting(
        default="", description="Model for aider (--model); empty: aider's default."
    )

    sandbox: bool = setting(
        default=True,
        description="Run agents and suites under bubblewrap (off: bare, unsafe, warned).",
    )
    sandbox_network: str = setting(
        default="shared",
        description="Sandbox network: shared or none, or per kind: agent=shared,suite=none.",
    )
    sandbox_deploy: bool = setting(
        default=False, description="Run the deploy command inside the sandbox too."
    )
    sandbox_ro: str = setting(
        default="",
        description="CSV of paths every sandbox may read (per repo: orch repo set --sandbox-ro).",
    )

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the setting, or SQLite under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'orchestrator.db'}"

    @property
    def tasks_dir(self) -> Path:
        """Where each task's folder (``00-task.md``, artifacts, ``runs/``) lives."""
        return self.home / "tasks"

    @property
    def worktrees_dir(self) -> Path:
        """Where per-task git worktrees live."""
        return self.home / "worktrees"


def _check_sandbox_network(value: str) -> str:
    sandbox_network_for(value, "agent")  # raises ValueError when malformed
    return value


def _check_allowed_hosts(value: str) -> str:
    host_names(value)  # raises ValueError when an entry is no host name
    return value


def _check_secret_env(value: str) -> str:
    # The NAME of a variable: a secret written here by mistake would be shown by
    # /status and `orch config`, and is refused instead.
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", value):
        msg = "give the NAME of an environment variable (A-Z, 0-9, _), never the secret"
        raise ValueError(msg)
    return value


def _expand_home(value: Path) -> Path:
    # `~/.orchestrator` as written in .env.example must mean the user's home.
    return value.expanduser()


def _check_permission_mode(value: str) -> str:
    if value not in CLAUDE_PERMISSION_MODES:
        msg = f"{value!r} is not one of {', '.join(CLAUDE_PERMISSION_MODES)}"
        raise ValueError(msg)
    return value


def _check_codex_sandbox(value: str) -> str:
    if value not in CODEX_SANDBOXES:
        msg = f"{value!r} is not one of {', '.join(CODEX_SANDBOXES)}"
        raise ValueError(msg)
    return value


# A setting's own rule, run on its value wherever it came from (the environment, `.env`, an
# argument, its default): it returns the value to keep, or raises ValueError, the error
# named by the setting.
CHECKS: dict[str, Callable[[Any], Any]] = {
    "sandbox_network": _check_sandbox_network,
    "api_allowed_hosts": _check_allowed_hosts,
    "github_webhook_secret_env": _check_secret_env,
    "home": _expand_home,
    "claude_permission_mode": _check_permission_mode,
    "codex_sandbox": _check_codex_sandbox,
}


def invariant_problems(s: Settings) -> list[str]:
    """Cross-key rules, each broken one named by its keys."""
    problems: list[str] = []
    # The reaper kills any job running longer than reaper_max_running_s. A re-test or a
    # suite that is allowed longer would be killed while legitimate.
    for key in (
        "merge_retest_timeout_s",
        "test_runner_timeout_s",
        "staging_runner_timeout_s",
        "agent_timeout_s",
    ):
        value = getattr(s, key)
        if value >= s.reaper_max_running_s:
            problems.append(
                f"{key} ({value:g}) must be below reaper_max_running_s "
                f"({s.reaper_max_running_s:g}), or the reaper would kill a legitimate run"
            )
    if s.heartbeat_interval_s * 2 > s.job_lease_s:
        # One missed heartbeat must not cost a healthy worker its jobs.
        problems.append(
            f"heartbeat_interval_s ({s.heartbeat_interval_s:g}) must be at most half of "
            f"job_lease_s ({s.job_lease_s:g})"
        )
    if s.max_parallel_jobs_per_repo > s.max_parallel_jobs:
        problems.append(
            f"max_parallel_jobs_per_repo ({s.max_parallel_jobs_per_repo}) must not exceed "
            f"max_parallel_jobs ({s.max_parallel_jobs})"
        )
    if s.db_pool_size + s.db_max_overflow < s.max_parallel_jobs + 1:
        # Each running job and the scheduler loop may hold a connection at the same moment;
        # a smaller pool would make finished jobs queue for a connection.
        problems.append(
            f"db_pool_size + db_max_overflow ({s.db_pool_size} + {s.db_max_overflow}) must be "
            f"at least max_parallel_jobs + 1 ({s.max_parallel_jobs + 1})"
        )
    if s.api_host not in ("127.0.0.1", "localhost", "::1") and not s.api_token:
        problems.append(
            f"api_host ({s.api_host}) is beyond loopback: set api_token, or bind 127.0.0.1"
        )
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Load settings from the environment and ``.env``, ``overrides`` (by field name) over
    both; a value that is not one, or a broken invariant, is a ConfigError."""
    read = read_plainly(overrides)
    return read if read is not None else read_by_pydantic(overrides)


def read_by_pydantic(overrides: dict[str, Any]) -> Settings:
    """``load_settings`` through pydantic-settings (``settings_model``): whatever the
    environment, ``.env`` and ``overrides`` hold, with pydantic's errors."""
    from pydantic import ValidationError

    try:
        model = settings_model()(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            where = f"ORCH_{loc.upper()}: " if loc else ""
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}{msg}")
        msg = "invalid settings: " + "; ".join(lines)
        raise ConfigError(msg) from exc
    loaded = Settings(**{f.name: getattr(model, f.name) for f in fields(Settings)})
    problems = invariant_problems(loaded)
    if problems:
        # As pydantic would word a model validator's error: no key, the problems.
        msg = "invalid settings: " + "; ".join(problems)
        raise ConfigError(msg)
    return loaded


@functools.cache
def settings_model() -> type[Any]:
    """``Settings`` as a pydantic-settings model: each field with its type, default,
    description and bounds, and its check (``CHECKS``) as a validator. It reads what
    ``read_plainly`` leaves to it: ``.env``, the arguments, a value not beyond doubt."""
    import typing

    from pydantic import Field, create_model, field_validator
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Base(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_file=".env",
            env_file_encoding="utf-8",
            extra="ignore",
            validate_default=True,
        )

    types = typing.get_type_hints(Settings)
    declared: dict[str, Any] = {}
    for f in fields(Settings):
        meta = f.metadata
        default: dict[str, Any] = (
            {"default": f.default}
            if f.default_factory is MISSING
            else {"default_factory": f.default_factory}
        )
        spec = Field(**default, description=meta["description"], **meta["bounds"])
        declared[f.name] = (types[f.name], spec)
    checks: dict[str, Any] = {
        f"_check_{name}": field_validator(name, mode="after")(staticmethod(check))
        for name, check in CHECKS.items()
    }
    model: type[Any] = create_model("Settings", __base__=Base, __validators__=checks, **declared)
    return model


# What ``read_plainly`` takes from the environment, by the field's type: the spellings whose
# meaning pydantic shares beyond doubt. Anything else (a sign, a leading zero, an exponent,
# `yes`, an empty path) is pydantic's to read or refuse.
_PLAIN_INT = re.compile(r"0|[1-9][0-9]{0,17}")
_PLAIN_FLOAT = re.compile(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,15})?")
# Every lower-case spelling pydantic reads as a bool (the documented ORCH_SANDBOX=off too).
_PLAIN_BOOL = {
    **dict.fromkeys(("true", "1", "on", "yes", "t", "y"), True),
    **dict.fromkeys(("false", "0", "off", "no", "f", "n"), False),
}
_UNSURE = object()


def _plain_value(kind: str, text: str) -> Any:
    """``text`` from the environment as a value of ``kind`` (a field's type, as written),
    or ``_UNSURE``."""
    if kind == "str":
        return text
    if kind == "int" and _PLAIN_INT.fullmatch(text):
        return int(text)
    if kind == "float" and _PLAIN_FLOAT.fullmatch(text):
        return float(text)
    if kind == "bool":
        return _PLAIN_BOOL.get(text, _UNSURE)
    if kind == "Path" and text:
        return Path(text)
    return _UNSURE


def _within(value: Any, bounds: dict[str, float]) -> bool:
    low, above, high = bounds.get("ge"), bounds.get("gt"), bounds.get("le")
    return (
        (low is None or value >= low)
        and (above is None or value > above)
        and (high is None or value <= high)
    )


# The types an argument (``load_settings(api_port=...)``) is taken in as it is: pydantic keeps
# a value that already has its field's own type, exactly (not a bool for an int, an int for
# a float, a str for a path: those it converts).
_ARGUMENT_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _plain_argument(kind: str, value: object) -> bool:
    if kind == "Path":
        return isinstance(value, Path)
    wanted = _ARGUMENT_TYPES.get(kind)
    return wanted is not None and type(value) is wanted


def read_plainly(overrides: dict[str, Any]) -> Settings | None:
    """The settings from the environment, read as pydantic-settings reads them, when there
    is nothing to doubt: no ``.env`` here, every argument of its field's own type
    (``_plain_argument``: `orch serve --port`'s int, a home's path), and every ``ORCH_*``
    value a plain spelling (``_plain_value``), each passing its field's bounds and check,
    the whole passing the invariants. Else None: pydantic's to read or refuse."""
    if os.path.lexists(".env"):
        return None
    kinds = {f.name: str(f.type) for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in kinds or not _plain_argument(kinds[name], value):
            return None
        values[name] = value
    # As pydantic-settings reads it (case_sensitive=False): names lower-cased, the last of
    # two spellings of one name winning.
    prefix = ENV_PREFIX.lower()
    env = {k.lower(): v for k, v in os.environ.items() if k[: len(prefix)].lower() == prefix}
    for f in fields(Settings):
        if f.name in values:
            continue
        text = env.get(prefix + f.name)
        if text is None:
            values[f.name] = f.default if f.default_factory is MISSING else f.default_factory()
            continue
        value = _plain_value(str(f.type), text)
        if value is _UNSURE:
            return None
        values[f.name] = value
    for f in fields(Settings):
        value = values[f.name]
        if not _within(value, f.metadata["bounds"]):
            return None
        check = CHECKS.get(f.name)
        if check is not None:
            try:
                values[f.name] = check(value)
            except ValueError:
                return None
    read = Settings(**values)
    return None if invariant_problems(read) else read


SANDBOX_KINDS = ("agent", "suite", "deploy")


def sandbox_network_for(value: str, kind: str) -> bool:
    """Whether a sandboxed process of ``kind`` keeps the network, by ``ORCH_SANDBOX_NETWORK``:
    ``shared`` or ``none`` for all, or ``kind=shared|none`` pairs (unnamed kinds: shared)."""
    choices = {"shared": True, "none": False}
    text = value.strip()
    if text in choices:
        return choices[text]
    found = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, choice = part.partition("=")
        if not sep or name.strip() not in SANDBOX_KINDS or choice.strip() not in choices:
            msg = (
                f"sandbox network {value!r}: give shared, none, or kind=shared|none "
                f"for kinds {', '.join(SANDBOX_KINDS)}"
            )
            raise ValueError(msg)
        found[name.strip()] = choices[choice.strip()]
    return found.get(kind, True)


# A DNS name or an IPv4 address: letters, digits, dots, hyphens (IPv6 is checked apart).
_HOST_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


def _is_ipv6(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).version == 6
    except ValueError:
        return False


def host_names(csv: str) -> list[str]:
    """The host names of a CSV such as ``api_allowed_hosts``: lower case, no port, no dot
    at the end; ``ValueError`` for an entry that is not a host name (a URL, a port, ``*``)."""
    names = []
    for part in filter(None, (p.strip() for p in csv.split(","))):
        name = part.lower().removesuffix(".").removeprefix("[").removesuffix("]")
        if not (_is_ipv6(name) if ":" in name else _HOST_NAME_RE.fullmatch(name)):
            msg = (
                f"{part!r} is not a host name: give names or addresses without a scheme, "
                "port or wildcard, e.g. orch.internal,192.0.2.7"
            )
            raise ValueError(msg)
        names.append(name)
    return names


def in_scope(csv: str, repo: str) -> bool:
    """Whether ``repo`` is in a CSV scope such as ``test_runner_repos`` (``*`` is all)."""
    names = {part.strip() for part in csv.split(",") if part.strip()}
    return "*" in names or repo in names
