"""What every deterministic runner shares: its context, its result, its scope, and safe I/O.

A runner never raises. Whatever goes wrong inside it (a bad worktree, an unwritable
artifact folder, a bug of ours) becomes a tool-error outcome with a reason, and the runner
still tries to leave a fail-closed artifact behind, so a gate that reads the folder later
can never mistake a crash for a success.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings, in_scope
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners.suite import SuiteRequest, SuiteSandbox, run_suite
from orchestrator.taskdir import write_atomic

_log = logging.getLogger(__name__)

TEST_RUNNER = "test-runner"
STAGING_RUNNER = "staging-runner"
DEPLOY_FINALIZER = "deploy-finalizer"
POST_DEPLOY_MONITOR = "post-deploy-monitor"
RUNNERS = (TEST_RUNNER, STAGING_RUNNER, DEPLOY_FINALIZER, POST_DEPLOY_MONITOR)

# How much of a run's log an artifact quotes.
TAIL_LINES = 40
# Bytes read from the end of a log to find that tail: a suite may print megabytes.
_TAIL_BYTES = 256_000
# The header proc_group writes at the start of every run appended to a log.
_RUN_HEADER = "===== orchestrator run "
_OUTPUT_HEADER = "----- output -----\n"
# Bytes of an HTTP body read by a smoke or health check.
_MAX_BODY_BYTES = 1_000_000
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class RunContext:
    """What the engine gives every deterministic runner."""

    task_key: str
    repo_name: str
    worktree: Path
    artifact_dir: Path
    log_path: Path
    env: Mapping[str, str]
    settings: Settings
    cancel: threading.Event | None = None
    on_start: Callable[[int, int], None] | None = None
    # The env marker of the job's processes; the engine derives it from the job row so that
    # recovery after a crash can sweep what the job left behind. None: a fresh one per run.
    marker: str | None = None
    # The suite runs the task's code: inside the sandbox (see orchestrator.sandbox), with
    # the repo's clone hidden. None: no repo to hide, and a bare run (unit tests of runners).
    repo_path: Path | None = None
    sandbox_kind: str = "suite"
    repo_options: Mapping[str, object] = field(default_factory=dict)
    # {artifact name: text} of every report this run wrote (``write_report`` fills it):
    # the runner's verdict as it made it, which the gate reads instead of the file.
    produced: dict[str, str] = field(default_factory=dict)

    @property
    def runs_dir(self) -> Path:
        """``<artifact_dir>/runs``: logs and evidence files (JUnit XML, coverage data)."""
        return self.artifact_dir / "runs"

    @property
    def out_dir(self) -> Path:
        """``runs/<log stem>.out``: the one folder besides the worktree a suite may write
        (its JUnit XML, coverage data)."""
        return self.runs_dir / f"{self.log_path.stem}.out"


@dataclass(frozen=True)
class RunnerResult:
    """What a runner did. Its verdict is the artifact text it produced, which reaches the
    gate in memory (``produced``); the file in the task folder is the record of it."""

    outcome: OutcomeKind
    artifact_name: str
    artifact_path: Path | None
    exit_code: int | None
    reasons: list[str]
    duration_s: float
    counts: Mapping[str, int] = field(default_factory=dict)
    # {artifact name: text} the run wrote (its RunContext's ``produced``), for the gate.
    produced: Mapping[str, str] = field(default_factory=dict)
    # The IDs of the tests a passing suite run passed (sorted), for the record of its tree
    # as validated; None when the run did not pass or gave no JUnit evidence.
    passed_tests: tuple[str, ...] | None = None


# --------------------------------------------------------------------------- scope


def _switch(settings: Settings, runner: str) -> tuple[bool, str, str] | None:
    """(enabled, scope CSV, env name stem) of a runner's kill-switch, or None if it has none."""
    if runner == TEST_RUNNER:
        return settings.test_runner_enabled, settings.test_runner_repos, "TEST_RUNNER"
    if runner == STAGING_RUNNER:
        return settings.staging_runner_enabled, settings.staging_runner_repos, "STAGING_RUNNER"
    return None


def runner_available(settings: Settings, runner: str, repo_name: str) -> tuple[bool, str]:
    """Whether ``runner`` may serve ``repo_name``: its kill-switch and scope CSV, with why."""
    if runner not in RUNNERS:
        return False, f"{runner!r} is not a deterministic runner (known: {', '.join(RUNNERS)})"
    switch = _switch(settings, runner)
    if switch is None:
        # deploy-finalizer and post-deploy-monitor have no setting of their own (yet).
        return True, f"{runner} has no kill-switch or scope setting: always available"
    enabled, csv, stem = switch
    if not enabled:
        return False, f"{runner} is switched off (ORCH_{stem}_ENABLED=false)"
    if not in_scope(csv, repo_name):
        return False, (
            f"{runner} does not serve repo {repo_name} "
            f"(repo {repo_name} is not in ORCH_{stem}_REPOS={csv})"
        )
    return True, f"{runner} serves repo {repo_name} (ORCH_{stem}_REPOS={csv})"


# --------------------------------------------------------------------------- artifacts


def fenced(text: str, info: str = "text") -> str:
    """``text`` in a fenced code block, so the verdict parser reads none of it as a claim.

    A line of the text that looks like a fence itself would close the block early and
    expose what follows as claims; such lines are escaped with a backslash.
    """
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            line = line[: len(line) - len(stripped)] + "\\" + stripped
        lines.append(line)
    return "\n".join([f"```{info}", *lines, "```"])


def reasons_block(reasons: Sequence[str]) -> str:
    """A body section listing ``reasons``, fenced (a reason may quote ``key: value``)."""
    text = "\n".join(f"- {r}" for r in reasons) if reasons else "- (none)"
    return "## Reasons\n\n" + fenced(text)


def one_line(value: object) -> str:
    """A value safe for one front-matter line."""
    return " ".join(str(value).split())


def argv_json(argv: Sequence[str] | None) -> str:
    """A command as a JSON list, for the ``command:`` key (one line, quotes escaped)."""
    return json.dumps(list(argv) if argv is not None else None)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of the newest run in ``path`` ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(size - _TAIL_BYTES, 0))
            raw = fh.read()
    except OSError:
        return ""
    text = raw.decode("utf-8", errors="replace")
    # A log may hold several runs (proc_group appends): quote only the newest one's output,
    # not its header (argv, cwd and the environment are in the log for whoever needs them).
    start = text.rfind(_RUN_HEADER)
    if start >= 0:
        text = text[start:]
        output = text.find(_OUTPUT_HEADER)
        if output >= 0:
            text = text[output + len(_OUTPUT_HEADER) :]
    return "\n".join(text.splitlines()[-lines:])


def output_block(path: Path, lines: int = TAIL_LINES) -> str:
    """A body section quoting the end of a run's log."""
    tail = log_tail(path, lines)
    return f"## Output (last {lines} lines of {path})\n\n" + fenced(tail or "(no output)")


def write_report(
    ctx: RunContext, name: str, keys: Mapping[str, object], body: str
) -> tuple[Path | None, str | None]:
    """Write artifact ``name`` into the task folder: (path, None) or (None, why it failed).

    The text is also kept in ``ctx.produced``: the gate reads the verdict from there, as
    the runner made it, and the file is only the record of it.
    """
    path = ctx.artifact_dir / name
    text = A.render_artifact(name, keys, body)
    try:
        write_atomic(path, text)
    except Exception as exc:  # a full disk or a read-only folder must not crash the runner
        return None, f"cannot write {path}: {type(exc).__name__}: {exc}"
    ctx.produced[name] = text
    return path, None


def guarded(
    runner: str,
    ctx: RunContext,
    name: str,
    fail_keys: Mapping[str, object],
    work: Callable[[], RunnerResult],
) -> RunnerResult:
    """Run ``work``; an exception becomes a ``crashed`` result and a fail-closed artifact."""
    t0 = time.monotonic()
    try:
        return work()
    except Exception as exc:
        _log.exception(
            "%s crashed",
            runner,
            extra={"task": getattr(ctx, "task_key", None), "action": runner},
        )
        reasons = [f"{runner} crashed: {type(exc).__name__}: {exc}"]
        return fail_closed(ctx, name, fail_keys, OutcomeKind.CRASHED, reasons, t0)


def fail_closed(
    ctx: RunContext,
    name: str,
    fail_keys: Mapping[str, object],
    kind: OutcomeKind,
    reasons: list[str],
    t0: float,
) -> RunnerResult:
    """A tool-error result, with a best-effort artifact that says FAIL."""
    path: Path | None = None
    try:
        keys = {**fail_keys, "outcome": kind.value}
        path, problem = write_report(ctx, name, keys, reasons_block(reasons))
        if problem is not None:
            reasons.append(problem)
    except Exception as exc:  # even the context may be broken; the result still returns
        reasons.append(f"cannot write {name}: {type(exc).__name__}: {exc}")
    return RunnerResult(
        outcome=kind,
        artifact_name=name,
        artifact_path=path,
        exit_code=None,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
    )


def argv_problem(command: object) -> str | None:
    """Why ``command`` is not an argv list of strings, or None (None itself is fine)."""
    if command is None:
        return None
    if isinstance(command, str | bytes):
        # A string would be split into characters, or tempt someone into a shell.
        return f"command must be an argv list, not a string: {command!r}"
    if not isinstance(command, Sequence) or not all(isinstance(a, str) for a in command):
        return f"command must be a list of strings: {command!r}"
    return None


def check_worktree(ctx: RunContext) -> str | None:
    """Why the runner cannot start in ``ctx.worktree``, or None."""
    if not Path(ctx.worktree).is_dir():
        return f"worktree {ctx.worktree} is not a directory"
    return None


# --------------------------------------------------------------------------- processes


def suite_request(
    ctx: RunContext,
    argv: Sequence[str],
    *,
    timeout_s: float,
    log_path: Path | None = None,
    sweep_on_exit: bool = True,
    pytest: bool | None = None,
    wrapper: Sequence[str] = (),
    junit_name: str = "junit.xml",
) -> SuiteRequest:
    """The request of a run in ``ctx``'s worktree: its env, marker, cancel, log (``log_path``
    or the job's), evidence folder (``out_dir``) and sandbox (when it has a repo to hide)."""
    box = (
        SuiteSandbox(ctx.repo_path, ctx.sandbox_kind, ctx.repo_options)
        if ctx.repo_path is not None
        else None
    )
    return SuiteRequest(
        argv=list(argv),
        worktree=Path(ctx.worktree),
        timeout_s=timeout_s,
        log_path=log_path if log_path is not None else ctx.log_path,
        evidence_dir=ctx.out_dir,
        env=ctx.env,
        settings=ctx.settings,
        sandbox=box,
        marker=ctx.marker,
        cancel=ctx.cancel,
        on_start=ctx.on_start,
        wrapper=wrapper,
        pytest=pytest,
        junit_name=junit_name,
        sweep_on_exit=sweep_on_exit,
    )


@dataclass(frozen=True)
class CommandStage:
    """How a one-command stage (staging, deploy) writes its artifact."""

    runner: str
    artifact: str
    status_key: str
    ok: str
    fail: str
    none_reason: str
    # The stage's wall-clock limit when the caller gives none.
    default_timeout_s: Callable[[Settings], float]
    sweep_on_exit: bool = True
    # The status written when no command is configured (None: ``ok``). A stage that then
    # ran nothing says so (staging: SKIPPED) rather than claim a run that passed.
    none_status: str | None = None


def run_command_stage(
    ctx: RunContext, stage: CommandStage, command: Sequence[str] | None, timeout_s: float | None
) -> RunnerResult:
    """Run one command (or nothing, when none is configured) and write the stage artifact."""
    fail_keys = {stage.status_key: stage.fail}
    return guarded(
        stage.runner,
        ctx,
        stage.artifact,
        fail_keys,
        lambda: _run_command_stage(ctx, stage, command, timeout_s),
    )


def _run_command_stage(
    ctx: RunContext, stage: CommandStage, command: Sequence[str] | None, timeout_s: float | None
) -> RunnerResult:
    t0 = time.monotonic()
    bad = argv_problem(command)
    if bad is not None:
        keys_bad = {stage.status_key: stage.fail}
        return fail_closed(ctx, stage.artifact, keys_bad, OutcomeKind.NOT_STARTED, [bad], t0)
    fail_keys: dict[str, object] = {stage.status_key: stage.fail, "command": argv_json(command)}
    if not command:
        keys: dict[str, object] = {
            stage.status_key: stage.none_status or stage.ok,
            "outcome": OutcomeKind.COMPLETED.value,
            "exit_code": "none",
            "duration_s": "0",
            "command": "null",
            "log": "none",
        }
        reasons = [stage.none_reason]
        path, problem = write_report(ctx, stage.artifact, keys, reasons_block(reasons))
        if problem is not None:
            return RunnerResult(OutcomeKind.CRASHED, stage.artifact, None, None, [problem], 0.0)
        return RunnerResult(OutcomeKind.COMPLETED, stage.artifact, path, None, reasons, 0.0)
    problem = check_worktree(ctx)
    if problem is not None:
        return fail_closed(ctx, stage.artifact, fail_keys, OutcomeKind.NOT_STARTED, [problem], t0)

    limit = stage.default_timeout_s(ctx.settings) if timeout_s is None else timeout_s
    # A stage command is judged by its exit code, even when it happens to run pytest.
    request = suite_request(
        ctx, command, timeout_s=limit, sweep_on_exit=stage.sweep_on_exit, pytest=False
    )
    run = run_suite(request)
    outcome = run.process
    kind = run.kind
    ok = run.passed
    reasons = list(run.reasons)
    reasons.insert(0, f"{stage.runner}: {stage.ok if ok else stage.fail}")
    keys = {
        stage.status_key: stage.ok if ok else stage.fail,
        "outcome": kind.value,
        "exit_code": "none" if outcome.exit_code is None else outcome.exit_code,
        "duration_s": f"{outcome.duration_s:.3f}",
        "command": argv_json(command),
        "log": one_line(outcome.log_path),
    }
    body = "\n\n".join([reasons_block(reasons), output_block(outcome.log_path)])
    path, problem = write_report(ctx, stage.artifact, keys, body)
    if problem is not None:
        reasons.append(problem)
        if kind is OutcomeKind.COMPLETED:
            kind = OutcomeKind.CRASHED
    return RunnerResult(
        outcome=kind,
        artifact_name=stage.artifact,
        artifact_path=path,
        exit_code=outcome.exit_code,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
    )


# --------------------------------------------------------------------------- loopback HTTP


@dataclass(frozen=True)
class LoopbackURL:
    """A URL checked to point at this machine; connect to ``host``:``port`` only."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str


def parse_loopback_url(
    url: str, *, schemes: Sequence[str] = ("http",)
) -> tuple[LoopbackURL | None, str]:
    """(the parsed URL, "") when ``url`` is a loopback URL, else (None, why it is refused).

    Only the host parsed here is ever connected to (no proxy, no redirect, no second URL
    parser), so what was checked is what is reached.
    """
    # Printable ASCII only: http.client sends the target as ASCII and raises (not an OSError)
    # on anything else, so a URL with a non-ASCII path would crash the probe, not fail it.
    if not isinstance(url, str) or not url or not all(32 < ord(c) < 127 for c in url):
        return None, (
            f"refused URL {url!r}: empty, or holds whitespace, control or non-ASCII characters "
            "(percent-encode them)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return None, f"refused URL {url}: {exc}"
    if parts.scheme not in schemes:
        return None, f"refused URL {url}: scheme must be one of {', '.join(schemes)}"
    if "@" in parts.netloc:
        return None, f"refused URL {url}: credentials in the URL are not accepted"
    host = (parts.hostname or "").lower()
    if not _is_loopback(host):
        return None, f"refused URL {url}: only loopback hosts (127.0.0.1, localhost) are allowed"
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # "localhost" is pinned to 127.0.0.1: no resolver can send it elsewhere. The Host header
    # still says localhost, for servers that check it.
    connect = "127.0.0.1" if host in _LOOPBACK_NAMES else host
    shown = f"[{host}]" if ":" in host else host
    return LoopbackURL(url, parts.scheme, connect, port, target, f"{shown}:{port}"), ""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Probe:
    """One HTTP GET: its status code (None when no response), latency, body, or error."""

    code: int | None
    latency_s: float
    body: bytes = b""
    error: str | None = None


def http_get(url: LoopbackURL, timeout_s: float) -> Probe:
    """GET a checked loopback URL. Network trouble is a value (``error``), not an exception."""
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.host, url.port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(url.host, url.port, timeout=timeout_s)
    t0 = time.monotonic()
    try:
        conn.request("GET", url.target, headers={"Host": url.host_header, "Accept": "*/*"})
        resp = conn.getresponse()
        body = resp.read(_MAX_BODY_BYTES)
        return Probe(resp.status, time.monotonic() - t0, body)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(None, time.monotonic() - t0, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def json_object(body: bytes) -> dict[str, object] | None:
    """``body`` as a JSON object, or None when it is not one."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
