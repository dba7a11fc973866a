"""The test-runner: run the suite, count from JUnit XML evidence, write ``13-test-report.md``.

Counts come from the JUnit XML pytest writes, never from scraping its output: a suite that
prints "0 failed" is not thereby green. The verdict keys ``result``, ``status`` and
``failed`` are always written aligned, and any doubt (no evidence, a tool error, a failed
smoke check) writes FAILED / FAIL.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners import baseline as bl
from orchestrator.runners.base import (
    TEST_RUNNER,
    RunContext,
    RunnerResult,
    argv_json,
    argv_problem,
    check_worktree,
    execute,
    fail_closed,
    fenced,
    guarded,
    http_get,
    json_object,
    one_line,
    output_block,
    parse_loopback_url,
    reasons_block,
    write_report,
)
from orchestrator.self_deploy import ExitStatus, map_outcome

DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "pytest", "-q")
SMOKE_TIMEOUT_S = 5.0
# API paths whose JSON body must show the serial gate (the orchestrator's own /status, /queue).
SERIAL_GATE_PATHS = ("/status", "/queue")
# A JUnit file larger than this is not parsed: no evidence, so no PASS.
_MAX_JUNIT_BYTES = 50_000_000
# pytest's junitxml plugin writes a collection error as a testcase with this error message.
_COLLECTION_FAILURE = "collection failure"
_PYTEST_NAMES = frozenset({"pytest", "py.test"})
_FAIL_KEYS = {"result": "FAILED", "status": "FAIL", "failed": 0}


# --------------------------------------------------------------------------- pytest argv


def is_pytest_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs pytest: a ``pytest`` executable, or ``-m pytest``."""
    for i, arg in enumerate(argv):
        if Path(arg).name in _PYTEST_NAMES or arg == "-mpytest":
            return True
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "pytest":
            return True
    return False


def with_pytest_evidence(argv: Sequence[str], junit_path: Path) -> list[str]:
    """``argv`` plus ``--junitxml`` (the evidence) and ``-p no:cacheprovider``.

    Our options go last (a later ``--junitxml`` wins over the repo's own addopts) but
    before a ``--``, after which pytest reads everything as a path.
    """
    extra = [f"--junitxml={junit_path}"]
    has_no_cache = any(
        a == "-pno:cacheprovider"
        or (a == "-p" and i + 1 < len(argv) and argv[i + 1] == "no:cacheprovider")
        for i, a in enumerate(argv)
    )
    if not has_no_cache:
        # The cache would write .pytest_cache into the worktree and dirty the branch.
        extra += ["-p", "no:cacheprovider"]
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], *extra, *args[cut:]]


# --------------------------------------------------------------------------- JUnit evidence


@dataclass(frozen=True)
class JUnitCounts:
    """Test counts read from a JUnit XML file, one bucket per testcase element."""

    passed: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = 0
    collection_errors: int = 0

    @property
    def failed(self) -> int:
        """Failures and errors: the ``failed:`` verdict key."""
        return self.failures + self.errors

    @property
    def tests_ran(self) -> int:
        """Tests that really ran: not skipped, not a collection error."""
        return self.total - self.skipped - self.collection_errors

    def as_dict(self) -> dict[str, int]:
        """The counts as a RunnerResult reports them."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "total": self.total,
        }


def read_junit(path: Path) -> tuple[JUnitCounts | None, str]:
    """(counts, "") from pytest's JUnit XML, or (None, why there is no evidence)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None, f"no JUnit XML was written ({path})"
    if size > _MAX_JUNIT_BYTES:
        return None, f"JUnit XML {path} is too large to read ({size} bytes)"
    try:
        # The file is written by the suite under test, which runs arbitrary code anyway;
        # ElementTree resolves no external entities and expat bounds entity expansion.
        root = ET.parse(path).getroot()  # noqa: S314
    except (ET.ParseError, OSError, LookupError, ValueError) as exc:
        # LookupError, ValueError (UnicodeError among them): an XML declaration naming an
        # encoding expat cannot read (unknown, multi-byte, or not a text codec at all).
        return None, f"JUnit XML {path} cannot be read: {exc}"
    passed = failures = errors = skipped = total = collection = 0
    for case in root.iter("testcase"):
        total += 1
        tags = {child.tag for child in case}
        # A test that failed and then errored in teardown is two testcase elements in
        # pytest's output; one element lands in one bucket.
        if "failure" in tags:
            failures += 1
        elif "error" in tags:
            errors += 1
            if any(e.get("message") == _COLLECTION_FAILURE for e in case.iter("error")):
                collection += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return JUnitCounts(passed, failures, errors, skipped, total, collection), ""


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

    pytest_run = is_pytest_command(argv)
    junit: Path | None = None
    if pytest_run:
        # In the run's own folder: the one place besides the worktree the suite may write.
        junit = ctx.out_dir / "junit.xml"
        junit.parent.mkdir(parents=True, exist_ok=True)
        # A file left by an earlier attempt must never be read as this run's evidence.
        junit.unlink(missing_ok=True)
        argv = with_pytest_evidence(argv, junit)
    limit = ctx.settings.test_runner_timeout_s if timeout_s is None else timeout_s
    outcome = execute(ctx, argv, timeout_s=limit)

    reasons: list[str] = []
    counts: JUnitCounts | None = None
    if junit is not None:
        counts, why = read_junit(junit)
        if counts is None and outcome.start_error is None:
            reasons.append(why)
    if pytest_run:
        mapping = map_outcome(
            outcome,
            kind="pytest",
            tests_ran=None if counts is None else counts.tests_ran,
            collection_failed=counts is not None and counts.collection_errors > 0,
        )
    else:
        mapping = map_outcome(outcome, kind="command")
    kind = mapping.outcome
    reasons = [*mapping.reasons, *reasons]
    ok = kind is OutcomeKind.COMPLETED and mapping.status is ExitStatus.PASS
    if counts is not None:
        if counts.failed:
            if ok:
                reasons.append(f"exit code 0, but the JUnit XML shows {counts.failed} failed")
            ok = False
        if counts.total and counts.skipped == counts.total:
            reasons.append(f"all {counts.total} test(s) were skipped")
    # Test by test, from the same evidence: the tests that passed on main must pass again.
    outcomes = bl.read_outcomes(junit) if junit is not None and counts is not None else None
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
    passed = bl.passed_ids(outcomes) if ok and outcomes is not None else None
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
