"""The coverage gate: run the suite under coverage.py and write ``14-coverage.md``.

Three processes, all through proc_group: ``coverage --version`` (is coverage.py there at
all? if not, that is a tool error, not a red build), ``coverage run`` of the suite, and
``coverage json`` to read the total. PASSED needs the suite green *and* the total at or
above the threshold; any doubt is FAILED.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc_group
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.private_files import private_dir
from orchestrator.runners.base import (
    RunContext,
    RunnerResult,
    argv_json,
    argv_problem,
    check_worktree,
    fail_closed,
    guarded,
    one_line,
    output_block,
    reasons_block,
    suite_request,
    write_report,
)
from orchestrator.runners.suite import DEFAULT_COMMAND, run_suite

GATE = "coverage-gate"
# The probe and the report are quick; they get their own bound, not the suite's.
AUX_TIMEOUT_S = 120.0
_PYTEST_NAMES = frozenset({"pytest", "py.test"})
_FAIL_KEYS = {"coverage_status": "FAILED"}


@dataclass(frozen=True)
class CoveragePlan:
    """How to run a command under coverage.py."""

    coverage: list[str]  # the prefix that runs coverage.py: [..., python, "-m", "coverage"]
    target: list[str]  # what ``coverage run`` runs: ["-m", "pytest", ...] or [script, ...]
    pytest: bool


def plan_coverage(argv: Sequence[str]) -> tuple[CoveragePlan | None, str]:
    """How to wrap ``argv`` in ``coverage run``, or (None, why it cannot be).

    ``[prefix..., python, -m, pytest, args...]`` keeps its interpreter (and a prefix such
    as ``uv run``); a bare ``pytest`` executable uses the python next to it, or ours;
    ``python script.py`` / ``python -m module`` run as they are. Anything else is refused.
    """
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "-mpytest" and i >= 1:
            target = ["-m", "pytest", *args[i + 1 :]]
            return CoveragePlan([*args[:i], "-m", "coverage"], target, True), ""
        if arg == "-m" and i + 1 < len(args) and args[i + 1] == "pytest" and i >= 1:
            return CoveragePlan([*args[:i], "-m", "coverage"], ["-m", *args[i + 1 :]], True), ""
        if Path(arg).name in _PYTEST_NAMES:
            prefix = args[:i]
            if prefix:
                python = "python"  # e.g. `uv run pytest`: the same runner's python
            else:
                sibling = Path(arg).parent / "python"
                python = (
                    str(sibling) if arg != Path(arg).name and sibling.exists() else sys.executable
                )
            return CoveragePlan(
                [*prefix, python, "-m", "coverage"], ["-m", "pytest", *args[i + 1 :]], True
            ), ""
    if args and Path(args[0]).name.startswith("python") and len(args) > 1:
        return CoveragePlan([args[0], "-m", "coverage"], args[1:], False), ""
    return None, f"cannot run {argv_json(args)} under coverage.py: not a pytest or python command"


def read_total(path: Path) -> tuple[float | None, str]:
    """The total percent covered from ``coverage json`` output, or (None, why not)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = data["totals"]["percent_covered"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return None, f"cannot read the coverage total from {path}: {type(exc).__name__}: {exc}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"coverage total in {path} is not a number: {value!r}"
    if not 0 <= value <= 100:
        # A total no coverage.py writes; it must not clear any threshold (fail closed).
        return None, f"coverage total in {path} is not a percent: {value!r}"
    return float(value), ""


def measure_coverage(
    ctx: RunContext,
    command: Sequence[str] | None,
    threshold_percent: float,
    *,
    timeout_s: float | None = None,
) -> RunnerResult:
    """Run ``command`` (default: pytest) under coverage.py; PASSED at or above the threshold.

    Never raises. coverage.py missing is ``not-started``; a suite timeout is ``timeout``;
    both write FAILED.
    """
    return guarded(
        GATE,
        ctx,
        A.COVERAGE,
        _FAIL_KEYS,
        lambda: _measure(ctx, command, threshold_percent, timeout_s),
    )


def _measure(
    ctx: RunContext,
    command: Sequence[str] | None,
    threshold: float,
    timeout_s: float | None,
) -> RunnerResult:
    t0 = time.monotonic()
    bad = argv_problem(command)
    if bad is not None:
        return fail_closed(ctx, A.COVERAGE, _FAIL_KEYS, OutcomeKind.NOT_STARTED, [bad], t0)
    argv = list(command) if command else list(DEFAULT_COMMAND)
    fail_keys = {**_FAIL_KEYS, "threshold_percent": f"{threshold:g}", "command": argv_json(argv)}

    def tool_error(kind: OutcomeKind, *why: str) -> RunnerResult:
        return fail_closed(ctx, A.COVERAGE, fail_keys, kind, list(why), t0)

    if not (math.isfinite(threshold) and 0 <= threshold <= 100):
        return tool_error(OutcomeKind.NOT_STARTED, f"threshold {threshold} is not a percent")
    problem = check_worktree(ctx)
    if problem is not None:
        return tool_error(OutcomeKind.NOT_STARTED, problem)
    plan, why = plan_coverage(argv)
    if plan is None:
        return tool_error(OutcomeKind.NOT_STARTED, why)

    runs = ctx.runs_dir
    private_dir(runs)
    stem = ctx.log_path.stem
    aux = min(AUX_TIMEOUT_S, ctx.settings.test_runner_timeout_s)
    probe = _aux_run(ctx, [*plan.coverage, "--version"], aux, runs / f"{stem}.coverage-probe.log")
    if not probe:
        return tool_error(
            OutcomeKind.NOT_STARTED,
            f"coverage.py is not available: {argv_json([*plan.coverage, '--version'])} "
            f"gave exit code {probe.exit_code} (install coverage>=7)",
            *([f"not started: {probe.start_error}"] if probe.start_error else []),
        )

    # In the run's own folder: the one place besides the worktree the suite may write.
    # Files left by an earlier attempt must never be read as this run's evidence (run_suite
    # removes its JUnit XML itself).
    private_dir(ctx.out_dir)
    data_file = ctx.out_dir / ".coverage"
    report = ctx.out_dir / "coverage.json"
    for old in (data_file, report):
        old.unlink(missing_ok=True)
    limit = ctx.settings.test_runner_timeout_s if timeout_s is None else timeout_s
    request = suite_request(
        ctx,
        plan.target,
        timeout_s=limit,
        wrapper=[*plan.coverage, "run", f"--data-file={data_file}"],
        pytest=plan.pytest,
        junit_name="junit-coverage.xml",
    )
    run = run_suite(request)
    outcome, counts, mapping = run.process, run.counts, run.mapping
    kind = run.kind
    reasons = list(run.reasons)
    keys: dict[str, object] = {
        **fail_keys,
        "coverage_percent": "none",
        "tests_status": mapping.status.value,
        "outcome": kind.value,
        "exit_code": "none" if outcome.exit_code is None else outcome.exit_code,
        "duration_s": f"{outcome.duration_s:.3f}",
        "command": argv_json(run.argv),
        "log": one_line(outcome.log_path),
    }

    percent: float | None = None
    if kind is OutcomeKind.COMPLETED:
        report_argv = [*plan.coverage, "json", f"--data-file={data_file}", "-o", str(report)]
        made = _aux_run(ctx, report_argv, aux, runs / f"{stem}.coverage-json.log")
        if made:
            percent, why = read_total(report)
        else:
            why = f"coverage json gave exit code {made.exit_code} (see {made.log_path})"
        if percent is None:
            kind = OutcomeKind.CRASHED
            reasons.append(why)

    ok = False
    if percent is not None:
        keys["coverage_percent"] = f"{percent:.2f}"
        suite_ok = run.passed
        enough = percent >= threshold
        ok = suite_ok and enough
        reasons.append(
            f"coverage {percent:.2f}% is {'at or above' if enough else 'below'} "
            f"the threshold {threshold:g}%"
        )
        if not suite_ok:
            reasons.append("the suite did not pass, so its coverage is not accepted")
    keys["coverage_status"] = "PASSED" if ok else "FAILED"
    keys["outcome"] = kind.value
    reasons.insert(0, f"{GATE}: {keys['coverage_status']}")
    body = "\n\n".join([reasons_block(reasons), output_block(outcome.log_path)])
    path, write_problem = write_report(ctx, A.COVERAGE, keys, body)
    if write_problem is not None:
        reasons.append(write_problem)
        if kind is OutcomeKind.COMPLETED:
            kind = OutcomeKind.CRASHED
    return RunnerResult(
        outcome=kind,
        artifact_name=A.COVERAGE,
        artifact_path=path,
        exit_code=outcome.exit_code,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
        counts=counts.as_dict() if counts is not None else {},
    )


def _aux_run(
    ctx: RunContext, argv: list[str], timeout_s: float, log_path: Path
) -> proc_group.Outcome:
    """Run one of coverage.py's own quick commands (the probe, the report): its process."""
    request = suite_request(ctx, argv, timeout_s=timeout_s, log_path=log_path, pytest=False)
    return run_suite(request).process
