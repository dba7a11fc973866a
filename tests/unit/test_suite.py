"""The pure pieces of one suite run: its argv and how its outcome is judged."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from orchestrator import proc_group
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners.suite import JUnitCounts, judge_suite, suite_argv
from orchestrator.self_deploy import ExitStatus


def ended(exit_code: int | None = 0, **kw: object) -> proc_group.Outcome:
    fields: dict[str, object] = {
        "exit_code": exit_code,
        "signal": None,
        "timed_out": False,
        "cancelled": False,
        "signal_sent_by_us": False,
        "duration_s": 0.1,
        "started_at": 0.0,
        "finished_at": 0.1,
        "log_path": Path("/nonexistent/run.log"),
        "pid": 1,
        "pgid": 1,
        "marker": "m",
        "termination_uncertain": False,
        **kw,
    }
    return proc_group.Outcome(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- argv


def test_suite_argv_puts_the_evidence_in_the_suite_and_the_wrapper_first() -> None:
    junit = Path("/out/junit.xml")
    argv = suite_argv(["-m", "pytest", "-q", "--", "t/"], junit, ["cov", "run"])
    assert argv == [
        "cov",
        "run",
        "-m",
        "pytest",
        "-q",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "--",
        "t/",
    ]


def test_suite_argv_without_evidence_is_the_command_as_given() -> None:
    assert suite_argv(["./staging.sh", "--fast"], None) == ["./staging.sh", "--fast"]


# --------------------------------------------------------------------------- judging


def test_pytest_exit_0_with_green_evidence_passes() -> None:
    judged = judge_suite(ended(0), pytest=True, counts=JUnitCounts(passed=2, total=2))
    assert judged.passed
    assert judged.mapping.status is ExitStatus.PASS


def test_pytest_exit_0_but_junit_failed_is_not_a_pass() -> None:
    counts = JUnitCounts(passed=1, failures=1, total=2)
    judged = judge_suite(ended(0), pytest=True, counts=counts)
    assert not judged.passed
    assert "exit code 0, but the JUnit XML shows 1 failed" in judged.reasons


def test_pytest_exit_0_without_evidence_is_not_a_pass() -> None:
    judged = judge_suite(ended(0), pytest=True, counts=None, no_evidence="no JUnit XML")
    assert not judged.passed
    assert judged.mapping.status is not ExitStatus.PASS
    assert "no JUnit XML" in judged.reasons


def test_a_red_suite_is_completed_and_not_passed_without_the_exit_0_reason() -> None:
    judged = judge_suite(ended(1), pytest=True, counts=JUnitCounts(failures=1, total=1))
    assert not judged.passed
    assert judged.mapping.outcome is OutcomeKind.COMPLETED
    assert not any(r.startswith("exit code 0, but") for r in judged.reasons)


def test_a_run_that_did_not_start_gives_no_no_evidence_reason() -> None:
    process = ended(None, start_error="sandbox: bwrap missing")
    judged = judge_suite(process, pytest=True, counts=None, no_evidence="no JUnit XML")
    assert not judged.passed
    assert judged.mapping.outcome.is_tool_error
    assert "no JUnit XML" not in judged.reasons


def test_a_timeout_is_a_tool_error_even_with_green_evidence() -> None:
    process = ended(None, timed_out=True, signal=15, signal_sent_by_us=True)
    judged = judge_suite(process, pytest=True, counts=JUnitCounts(passed=1, total=1))
    assert not judged.passed
    assert judged.mapping.outcome is OutcomeKind.TIMEOUT


@pytest.mark.parametrize(("code", "ok"), [(0, True), (1, False), (5, False)])
def test_a_plain_command_is_judged_by_its_exit_code(code: int, ok: bool) -> None:
    judged = judge_suite(ended(code), pytest=False)
    assert judged.passed is ok
    assert judged.mapping.outcome is OutcomeKind.COMPLETED


# --------------------------------------------------------------------------- one runner


def _calls_and_imports(module: str) -> set[str]:
    """The ``a.b`` calls and the modules imported by ``module``."""
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            found.add(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize(
    "module",
    [
        "orchestrator.runners.test_runner",
        "orchestrator.runners.base",
        "orchestrator.runners.command_stage",
        "orchestrator.gates.merge_gate",
        "orchestrator.gates.coverage_gate",
    ],
)
def test_suites_run_only_through_run_suite(module: str) -> None:
    """No caller starts its own process or sandbox, or reaches into the test-runner."""
    found = _calls_and_imports(module)
    assert "proc_group.run" not in found
    assert "sandbox.for_job" not in found
    assert "orchestrator.runners.test_runner" not in found
