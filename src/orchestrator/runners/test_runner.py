"""The test-runner: run the suite, count from JUnit XML evidence, write ``13-test-report.md``.

Counts come from the JUnit XML pytest writes, never from scraping its output: a suite that
prints "0 failed" is not thereby green. The verdict keys ``result``, ``status`` and
``failed`` are always written aligned, and any doubt (no evidence, a tool error, a failed
smoke check) writes FAILED / FAIL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import TEST_RUNNER
from orchestrator.runners import baseline as bl
from orchestrator.runners.base import (
    RunContext,
    RunnerResult,
    argv_json,
    argv_problem,
    check_worktree,
    fail_closed,
    fenced,
    guarded,
    one_line,
    output_block,
    reasons_block,
    suite_request,
    write_report,
)
from orchestrator.runners.loopback import http_get, json_object, parse_loopback_url
from orchestrator.runners.suite import DEFAULT_COMMAND, JUnitCounts, run_suite

SMOKE_TIMEOUT_S = 5.0
# API paths whose JSON body must show the serial gate (the orchestrator's own /status, /queue).
SERIAL_GATE_PATHS = ("/status", "/queue")
_FAIL_KEYS = {"result": "FAILED", "status": "FAIL", "failed": 0}


# --------------------------------------------------------------------------- smoke


@dataclass(frozen=True)
class SmokeCheck:
    """One read-only GET after the suite."""

    url: str
    ok: bool
    detail: str


def smoke_check(url: str) -> SmokeCheck:
    """GET a loopback URL: 2xx, and for /status and /queue a JSON ``serial_gate`` field."""
    target, refused = parse_loopback_url(url, schemes=("http",))
    if target is None:
        return SmokeCheck(url, False, refused)
    probe = http_get(target, SMOKE_TIMEOUT_S)
    latency = f"{probe.latency_s * 1000:.0f} ms"
    if probe.code is None:
        return SmokeCheck(url, False, f"no response: {probe.error} ({latency})")
    if not 200 <= probe.code < 300:
        return SmokeCheck(url, False, f"HTTP {probe.code} ({latency})")
    path = target.target.split("?", 1)[0].rstrip("/")
    if path.endswith(SERIAL_GATE_PATHS):
        data = json_object(probe.body)
        if data is None:
            return SmokeCheck(url, False, f"HTTP {probe.code}, but the body is not a JSON object")
        if "serial_gate" not in data:
            return SmokeCheck(url, False, f"HTTP {probe.code}, but no serial_gate field")
        return SmokeCheck(url, True, f"HTTP {probe.code}, serial_gate present ({latency})")
    return SmokeCheck(url, True, f"HTTP {probe.code} ({latency})")


def _smoke_table(checks: Sequence[SmokeCheck]) -> str:
    rows = ["## Smoke checks", "", "| url | result | detail |", "|---|---|---|"]
    for c in checks:
        detail = one_line(c.detail).replace("|", "\\|")
        rows.append(
            f"| {one_line(c.url).replace('|', '%7C')} | {'ok' if c.ok else 'FAILED'} | {detail} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- the runner


def run_tests(
    ctx: RunContext,
    command: Sequence[str] | None = None,
    *,
    timeout_s: float | None = None,
    smoke_urls: Sequence[str] = (),
    baseline: bl.Baseline | None = None,
) -> RunnerResult:
    """Run the suite (default ``python -m pytest -q``) and write ``13-test-report.md``.

    Never raises. A tool error (timeout, not started, killed, pytest usage error) writes
    FAILED / FAIL and returns that tool error as the outcome, so the engine defers instead
    of rolling back. ``baseline``: the tests that passed on main, which must pass again
    (``runners/baseline.py``); None: not looked up.
    """
    return guarded(
        TEST_RUNNER,
        ctx,
        A.TEST_REPORT,
        _FAIL_KEYS,
        lambda: _run_tests(ctx, command, timeout_s, smoke_urls, baseline),
    )


def _run_tests(
    ctx: RunContext,
    command: Sequence[str] | None,
    timeout_s: float | None,
    smoke_urls: Sequence[str],
    baseline: bl.Baseline | None = None,
) -> RunnerResult:
    t0 = time.monotonic()
    bad = argv_problem(command)
    if bad is not None:
        return fail_closed(ctx, A.TEST_REPORT, _FAIL_KEYS, OutcomeKind.NOT_STARTED, [bad], t0)
    argv = list(command) if command else list(DEFAULT_COMMAND)
    problem = check_worktree(ctx)
    if problem is not None:
        start_keys = {**_FAIL_KEYS, "command": argv_json(argv)}
        return fail_closed(ctx, A.TEST_REPORT, start_keys, OutcomeKind.NOT_STARTED, [problem], t0)

    limit = ctx.settings.test_runner_timeout_s if timeout_s is None else timeout_s
    # The JUnit XML goes in the run's own folder: the one place besides the worktree the
    # suite may write.
    run = run_suite(suite_request(ctx, argv, timeout_s=limit))
    outcome, counts, junit, pytest_run = run.process, run.counts, run.junit, run.pytest
    argv = run.argv
    kind = run.kind
    ok = run.passed
    reasons = list(run.reasons)
    if counts is not None and counts.total and counts.skipped == counts.total:
        reasons.append(f"all {counts.total} test(s) were skipped")
    # Test by test, from the same evidence: the tests that passed on main must pass again.
    outcomes = run.outcomes
    if baseline is not None:
        held = bl.judge(baseline, outcomes)
        reasons.extend(held.reasons)
        ok = ok and held.ok

    checks: list[SmokeCheck] = []
    if smoke_urls:
        if kind is OutcomeKind.COMPLETED:
            checks = [smoke_check(url) for url in smoke_urls]
            for check in checks:
                if not check.ok:
                    reasons.append(f"smoke check failed: {check.url}: {check.detail}")
            ok = ok and all(c.ok for c in checks)
        else:
            reasons.append("smoke checks skipped: the suite did not complete")

    # A passing run's test IDs go with its result: the worker records them with the tree.
    passed = run.passed_tests if ok else None
    reasons.insert(0, f"test-runner: {'PASS' if ok else 'FAIL'}")
    c = counts or JUnitCounts()
    keys: dict[str, object] = {
        "result": "PASSED" if ok else "FAILED",
        "status": "PASS" if ok else "FAIL",
        "failed": c.failed,
        "passed": c.passed,
        "failures": c.failures,
        "errors": c.errors,
        "skipped": c.skipped,
        "total": c.total,
        "outcome": kind.value,
        "exit_code": "none" if outcome.exit_code is None else outcome.exit_code,
        "duration_s": f"{outcome.duration_s:.3f}",
        "command": argv_json(argv),
        "log": one_line(outcome.log_path),
        "junit": "none" if counts is None or junit is None else one_line(junit),
    }
    sections = [reasons_block(reasons)]
    if counts is not None:
        sections.append(
            "## Counts\n\nFrom the JUnit XML written by pytest:\n\n"
            + fenced(
                f"passed {c.passed}, failures {c.failures}, errors {c.errors} "
                f"(collection errors {c.collection_errors}), skipped {c.skipped}, "
                f"total {c.total}"
            )
        )
    elif not pytest_run:
        sections.append("## Counts\n\nNot a pytest command: no JUnit XML, no test counts.")
    if checks:
        sections.append(_smoke_table(checks))
    sections.append(output_block(outcome.log_path))
    path, write_problem = write_report(ctx, A.TEST_REPORT, keys, "\n\n".join(sections))
    if write_problem is not None:
        reasons.append(write_problem)
        if kind is OutcomeKind.COMPLETED:
            kind = OutcomeKind.CRASHED
    return RunnerResult(
        outcome=kind,
        artifact_name=A.TEST_REPORT,
        artifact_path=path,
        exit_code=outcome.exit_code,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
        counts=c.as_dict() if counts is not None else {},
        passed_tests=tuple(passed) if passed is not None else None,
    )
