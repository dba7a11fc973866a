"""The one mapping from a process outcome to PASS / FAIL / tool error.

The two-level outcome (docs/overview.md): first, did the tool really run? A timeout, a crash,
a signal, a tool-error exit code or a failed start is a *tool error* (the engine defers and
retries within a budget); it is never a FAIL, which would roll the task back for something
the code did not do.
Only when it ran does the exit code become PASS or FAIL.

Pure: values in, a value out, no I/O.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from orchestrator.domain.outcomes import OutcomeKind

if TYPE_CHECKING:
    from orchestrator.proc_group import Outcome

__all__ = ["ExitMapping", "ExitStatus", "map_exit_code_to_status", "map_outcome"]

Kind = Literal["pytest", "command"]


class ExitStatus(StrEnum):
    """PASS and FAIL are verdicts on the code; TOOL_ERROR says the tool did not really run."""

    PASS = "PASS"  # noqa: S105 (a status, not a password)
    FAIL = "FAIL"
    TOOL_ERROR = "TOOL_ERROR"


@dataclass(frozen=True)
class ExitMapping:
    """A mapped outcome with the reasons a human reads in the CLI, the API and the log."""

    status: ExitStatus
    # One of the tool-error words ("timeout", "crashed", "lock-busy", "not-started")
    # when status is TOOL_ERROR, else None.
    tool_error: str | None
    reasons: list[str]

    @property
    def outcome(self) -> OutcomeKind:
        """The first-level outcome: ``completed`` unless a tool error."""
        return OutcomeKind(self.tool_error) if self.tool_error else OutcomeKind.COMPLETED


# pytest's documented exit codes (pytest.ExitCode), named here so this module needs no pytest.
_PYTEST_OK = 0
_PYTEST_TESTS_FAILED = 1
_PYTEST_INTERRUPTED = 2
_PYTEST_INTERNAL_ERROR = 3
_PYTEST_USAGE_ERROR = 4
_PYTEST_NO_TESTS = 5


def _sig_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _passed(reason: str) -> ExitMapping:
    return ExitMapping(ExitStatus.PASS, None, [reason])


def _failed(*reasons: str) -> ExitMapping:
    return ExitMapping(ExitStatus.FAIL, None, list(reasons))


def _tool_error(kind: OutcomeKind, *reasons: str) -> ExitMapping:
    return ExitMapping(ExitStatus.TOOL_ERROR, str(kind), list(reasons))


def _map_pytest(exit_code: int, *, tests_ran: int | None, collection_failed: bool) -> ExitMapping:
    code = f"pytest exit code {exit_code}"
    if exit_code == _PYTEST_OK:
        if collection_failed:
            # Contradicts itself: fail closed rather than trust the exit code.
            return _failed(f"{code} but collection errors were reported")
        if tests_ran is None or tests_ran <= 0:
            # 0 without evidence (JUnit) that a test ran: an empty or deselected suite is
            # not a green one, and a negative count is no evidence either.
            ran = "unknown" if tests_ran is None else str(tests_ran)
            return _failed(f"{code} but no tests ran (tests run: {ran})")
        return _passed(f"{code}: {tests_ran} test(s) ran and passed")
    if exit_code == _PYTEST_TESTS_FAILED:
        return _failed(f"{code}: tests failed")
    if exit_code == _PYTEST_NO_TESTS:
        return _failed(f"{code}: no tests were collected")
    if exit_code == _PYTEST_INTERRUPTED:
        if collection_failed:
            return _failed(f"{code}: collection failed (errors while importing tests)")
        return _tool_error(
            OutcomeKind.CRASHED, f"{code}: run interrupted without collection errors"
        )
    if exit_code == _PYTEST_INTERNAL_ERROR:
        return _tool_error(OutcomeKind.CRASHED, f"{code}: pytest internal error")
    if exit_code == _PYTEST_USAGE_ERROR:
        return _tool_error(OutcomeKind.CRASHED, f"{code}: pytest usage error (bad arguments)")
    return _tool_error(OutcomeKind.CRASHED, f"{code}: not a pytest exit code we know")


def map_exit_code_to_status(
    exit_code: int | None,
    *,
    kind: Kind = "command",
    timed_out: bool = False,
    signal: int | None = None,
    signal_sent_by_us: bool = False,
    cancelled: bool = False,
    start_error: str | None = None,
    tests_ran: int | None = None,
    collection_failed: bool = False,
) -> ExitMapping:
    """Map how a process ended to PASS / FAIL / TOOL_ERROR, with reasons naming the exit code.

    Checked in order: not started → ``not-started``; our timeout → ``timeout``; cancelled or
    any signal (ours or not: OOM killer, segfault) → ``crashed``. Then the exit code: for a
    plain command 0 is PASS and anything else FAIL; for pytest see ``_map_pytest``
    (0 needs ``tests_ran`` > 0, 1 and 5 FAIL, 2 FAIL only with ``collection_failed``,
    3, 4 and unknown codes ``crashed``). A negative exit code is read as ``-signal``, the way
    ``subprocess`` reports it.
    """
    code = f"exit code {exit_code}"
    if exit_code is not None and exit_code < 0 and signal is None:
        signal, exit_code = -exit_code, None
        code = f"exit code None (killed by {_sig_name(signal)})"
    if start_error is not None:
        return _tool_error(OutcomeKind.NOT_STARTED, f"not started: {start_error}", code)
    if timed_out:
        return _tool_error(OutcomeKind.TIMEOUT, "killed by our timeout", code)
    if cancelled:
        how = f" with {_sig_name(signal)}" if signal is not None else ""
        return _tool_error(OutcomeKind.CRASHED, f"cancelled: stopped by us{how}", code)
    if signal is not None:
        name = _sig_name(signal)
        if signal_sent_by_us:
            return _tool_error(OutcomeKind.CRASHED, f"killed by {name}, sent by us", code)
        return _tool_error(
            OutcomeKind.CRASHED,
            f"killed by {name}, which we did not send (OOM killer, crash, or an outside kill)",
            code,
        )
    if exit_code is None:
        return _tool_error(OutcomeKind.CRASHED, "no exit code and no signal: unknown end")
    if kind == "pytest":
        return _map_pytest(exit_code, tests_ran=tests_ran, collection_failed=collection_failed)
    if exit_code == 0:
        return _passed(code)
    return _failed(f"{code}: command failed")


def map_outcome(
    outcome: Outcome,
    *,
    kind: Kind = "command",
    tests_ran: int | None = None,
    collection_failed: bool = False,
) -> ExitMapping:
    """``map_exit_code_to_status`` on a ``proc_group.Outcome``."""
    mapping = map_exit_code_to_status(
        outcome.exit_code,
        kind=kind,
        timed_out=outcome.timed_out,
        signal=outcome.signal,
        signal_sent_by_us=outcome.signal_sent_by_us,
        cancelled=outcome.cancelled,
        start_error=outcome.start_error,
        tests_ran=tests_ran,
        collection_failed=collection_failed,
    )
    extra: list[str] = []
    if outcome.stop_reason and outcome.cancelled:
        extra.append(f"stop reason: {outcome.stop_reason}")
    if outcome.termination_uncertain:
        # Does not change the status (the run itself is judged above), but a human must know
        # that something it started may still be running.
        extra.append("warning: some of its processes could not be confirmed dead")
    if not extra:
        return mapping
    return ExitMapping(mapping.status, mapping.tool_error, [*mapping.reasons, *extra])
