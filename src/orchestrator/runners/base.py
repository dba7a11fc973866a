"""What every deterministic runner shares: its context, its result, its scope, its artifacts.

A runner never raises. Whatever goes wrong inside it (a bad worktree, an unwritable
artifact folder, a bug of ours) becomes a tool-error outcome with a reason, and the runner
still tries to leave a fail-closed artifact behind, so a gate that reads the folder later
can never mistake a crash for a success.

A one-command stage (staging, deploy) is ``runners/command_stage.py``; the checks that
reach a URL do it through ``runners/loopback.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings, in_scope
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import RUNNERS, STAGING_RUNNER, TEST_RUNNER
from orchestrator.runners.suite import SuiteRequest, SuiteSandbox
from orchestrator.taskdir import write_atomic

_log = logging.getLogger(__name__)

# How much of a run's log an artifact quotes.
TAIL_LINES = 40
# Bytes read from the end of a log to find that tail: a suite may print megabytes.
_TAIL_BYTES = 256_000
# The header proc_group writes at the start of every run appended to a log.
_RUN_HEADER = "===== orchestrator run "
_OUTPUT_HEADER = "----- output -----\n"


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
    # Names in ``env`` the log's header masks although ``masking`` would not: the repo's
    # ``--agent-env`` variables, which the deploy gets (its log is read without a token).
    secret_names: frozenset[str] = frozenset()
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
        secret_names=ctx.secret_names,
        pytest=pytest,
        junit_name=junit_name,
        sweep_on_exit=sweep_on_exit,
    )
