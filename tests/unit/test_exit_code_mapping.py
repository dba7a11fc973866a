"""The one exit-code mapping: tool errors are never FAIL, and a PASS needs evidence."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.proc_group import Outcome
from orchestrator.self_deploy import ExitStatus, map_exit_code_to_status, map_outcome

PASS, FAIL, TOOL = ExitStatus.PASS, ExitStatus.FAIL, ExitStatus.TOOL_ERROR

# (exit_code, keyword args, status, tool_error, a part of some reason)
PYTEST_TABLE: list[tuple[int | None, dict[str, Any], ExitStatus, str | None, str]] = [
    (0, {"tests_ran": 12}, PASS, None, "12 test(s) ran"),
    (0, {"tests_ran": 0}, FAIL, None, "no tests ran"),
    (0, {}, FAIL, None, "no tests ran (tests run: unknown)"),
    (0, {"tests_ran": 3, "collection_failed": True}, FAIL, None, "collection errors"),
    (1, {"tests_ran": 12}, FAIL, None, "tests failed"),
    (1, {}, FAIL, None, "pytest exit code 1"),
    (2, {"collection_failed": True}, FAIL, None, "collection failed"),
    (2, {}, TOOL, "crashed", "interrupted"),
    (3, {}, TOOL, "crashed", "internal error"),
    (4, {}, TOOL, "crashed", "usage error"),
    (5, {}, FAIL, None, "no tests were collected"),
    (42, {}, TOOL, "crashed", "not a pytest exit code"),
    (137, {}, TOOL, "crashed", "pytest exit code 137"),
    # Our timeout wins over whatever code the suite managed to return while dying.
    (None, {"timed_out": True, "signal": signal.SIGKILL, "signal_sent_by_us": True},
     TOOL, "timeout", "our timeout"),
    (1, {"timed_out": True, "signal_sent_by_us": True}, TOOL, "timeout", "exit code 1"),
    (0, {"timed_out": True, "tests_ran": 5}, TOOL, "timeout", "our timeout"),
    # A signal we did not send: OOM killer, segfault.
    (None, {"signal": signal.SIGKILL}, TOOL, "crashed", "SIGKILL, which we did not send"),
    (None, {"signal": signal.SIGSEGV}, TOOL, "crashed", "SIGSEGV"),
    (-11, {}, TOOL, "crashed", "SIGSEGV"),
    # Cancel / stop reason: we sent it, but it is not a timeout.
    (None, {"cancelled": True, "signal": signal.SIGTERM, "signal_sent_by_us": True},
     TOOL, "crashed", "cancelled"),
    (None, {"signal": signal.SIGTERM, "signal_sent_by_us": True}, TOOL, "crashed", "sent by us"),
    (None, {"start_error": "FileNotFoundError: pytest"}, TOOL, "not-started", "not started"),
    (None, {}, TOOL, "crashed", "no exit code and no signal"),
]  # fmt: skip

COMMAND_TABLE: list[tuple[int | None, dict[str, Any], ExitStatus, str | None, str]] = [
    (0, {}, PASS, None, "exit code 0"),
    (1, {}, FAIL, None, "exit code 1"),
    (2, {}, FAIL, None, "exit code 2"),
    (5, {}, FAIL, None, "exit code 5"),
    (127, {}, FAIL, None, "exit code 127"),
    (None, {"timed_out": True}, TOOL, "timeout", "our timeout"),
    (None, {"signal": signal.SIGKILL}, TOOL, "crashed", "did not send"),
    (None, {"cancelled": True}, TOOL, "crashed", "cancelled"),
    (None, {"start_error": "bad cwd"}, TOOL, "not-started", "bad cwd"),
]


def _check(
    got_status: ExitStatus,
    got_tool_error: str | None,
    reasons: list[str],
    status: ExitStatus,
    tool_error: str | None,
    reason_part: str,
) -> None:
    assert got_status is status, reasons
    assert got_tool_error == tool_error, reasons
    assert any(reason_part in r for r in reasons), reasons


@pytest.mark.parametrize(("code", "kw", "status", "tool_error", "reason_part"), PYTEST_TABLE)
def test_pytest_table(
    code: int | None,
    kw: dict[str, Any],
    status: ExitStatus,
    tool_error: str | None,
    reason_part: str,
) -> None:
    m = map_exit_code_to_status(code, kind="pytest", **kw)
    _check(m.status, m.tool_error, m.reasons, status, tool_error, reason_part)


@pytest.mark.parametrize(("code", "kw", "status", "tool_error", "reason_part"), COMMAND_TABLE)
def test_command_table(
    code: int | None,
    kw: dict[str, Any],
    status: ExitStatus,
    tool_error: str | None,
    reason_part: str,
) -> None:
    m = map_exit_code_to_status(code, **kw)  # kind defaults to "command"
    _check(m.status, m.tool_error, m.reasons, status, tool_error, reason_part)


@pytest.mark.parametrize("kind", ["pytest", "command"])
def test_timeout_and_start_error_are_never_fail(kind: str) -> None:
    for code in (None, *range(-15, 256)):
        timed = map_exit_code_to_status(code, kind=kind, timed_out=True)  # type: ignore[arg-type]
        assert (timed.status, timed.tool_error) == (TOOL, "timeout"), code
        unstarted = map_exit_code_to_status(code, kind=kind, start_error="x")  # type: ignore[arg-type]
        assert (unstarted.status, unstarted.tool_error) == (TOOL, "not-started"), code


@pytest.mark.parametrize("kind", ["pytest", "command"])
def test_every_mapping_names_its_exit_code_and_uses_design_words(kind: str) -> None:
    tool_words = {k.value for k in OutcomeKind if k.is_tool_error}
    for code in range(256):
        m = map_exit_code_to_status(code, kind=kind, tests_ran=1)  # type: ignore[arg-type]
        assert any(f"exit code {code}" in r for r in m.reasons), m.reasons
        if m.status is TOOL:
            assert m.tool_error in tool_words
            assert m.outcome.is_tool_error
        else:
            assert m.tool_error is None
            assert m.outcome is OutcomeKind.COMPLETED


def _outcome(**kw: Any) -> Outcome:
    base: dict[str, Any] = {
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "cancelled": False,
        "signal_sent_by_us": False,
        "duration_s": 1.0,
        "started_at": 1000.0,
        "finished_at": 1001.0,
        "log_path": Path("run.log"),
        "pid": 10,
        "pgid": 10,
        "marker": "m",
        "termination_uncertain": False,
    }
    base.update(kw)
    return Outcome(**base)


def test_map_outcome_passes_every_field_through() -> None:
    assert map_outcome(_outcome(), kind="pytest", tests_ran=3).status is PASS
    assert map_outcome(_outcome(), kind="pytest").status is FAIL  # no evidence of tests
    assert map_outcome(_outcome(exit_code=2), kind="pytest").tool_error == "crashed"
    assert map_outcome(_outcome(exit_code=2), kind="pytest", collection_failed=True).status is FAIL
    timed = _outcome(exit_code=None, signal=9, timed_out=True, signal_sent_by_us=True)
    assert map_outcome(timed).tool_error == "timeout"
    oom = _outcome(exit_code=None, signal=9)
    assert map_outcome(oom).tool_error == "crashed"
    unstarted = _outcome(exit_code=None, pid=None, pgid=None, start_error="no such file")
    assert map_outcome(unstarted).tool_error == "not-started"


def test_map_outcome_adds_stop_reason_and_uncertainty_to_reasons() -> None:
    stopped = _outcome(
        exit_code=None,
        signal=15,
        cancelled=True,
        signal_sent_by_us=True,
        stop_reason="stalled: no output for 300s",
    )
    m = map_outcome(stopped)
    assert m.tool_error == "crashed"
    assert any("stalled: no output" in r for r in m.reasons)

    leaky = map_outcome(_outcome(termination_uncertain=True))
    assert leaky.status is PASS  # the run is judged on its own exit...
    assert any("could not be confirmed dead" in r for r in leaky.reasons)  # ...but it is said


def test_outcome_truthiness() -> None:
    assert _outcome()
    assert not _outcome(exit_code=1)
    assert not _outcome(timed_out=True)
    assert not _outcome(exit_code=None, signal=9)
    assert not _outcome(termination_uncertain=True)
    assert not _outcome(exit_code=None, start_error="x")
