"""Streamed spend: what an LLM job has spent so far, read while it runs.

A CLI states its cost only when it ends by itself (claude's ``result``, codex's
``turn.completed``): a job killed before that (cancelled, stalled, timed out, reaped, stopped
at its budget) would keep nothing of what it spent. The meter reads the spend as it streams,
so every answered model call counts, and the job can be stopped once it reaches its cap.

Sources, each read by a ``LineReader`` from where the last read stopped (new bytes only; a
partial last line is kept for the next read), and added up by ``agents/tally.py``:

- claude: the job log, from the run's start, after proc_group's output mark.
- codex: the rollout files under ``$CODEX_HOME/sessions/YYYY/MM/DD/`` (not ``--ephemeral``),
  every one of the job's own ``CODEX_HOME``, not only the newest.
- aider: its analytics log (``--analytics-log``).

``budget_stop`` decides the stop from outside (``OVER_BUDGET_PREFIX``) and ``merge_spend``
what a job records.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.agents.common import OUTPUT_MARK, LlmPlan, LlmResult, json_objects
from orchestrator.agents.tally import AiderTally, ClaudePrices, ClaudeTally, CodexTally, Spend
from orchestrator.config import Settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.money import usd

__all__ = [
    "OVER_BUDGET_PREFIX",
    "AiderMeter",
    "ClaudeMeter",
    "CodexMeter",
    "LineReader",
    "SpendMeter",
    "SpendWatch",
    "budget_stop",
    "is_over_budget",
    "merge_spend",
    "meter_for",
    "spend_line",
]

OVER_BUDGET_PREFIX = "over budget:"
# A line longer than this is skipped unread: no usage-bearing event is near it (they are a
# few hundred bytes); only a tool result quoting a huge file is, and the partial line a
# reader keeps stays bounded.
MAX_LINE_BYTES = 8 * 1024 * 1024
# Codex writes a rollout file per thread: the sessions folder is listed again every this
# many reads (each poll reads the files already known).
CODEX_RESCAN_EVERY = 10


# ------------------------------------------------------------------------------- reading


class LineReader:
    """The complete lines a file gained since the last read, from byte ``start``.

    ``after``: a line to wait for first; nothing before it (and not it) counts, as the job
    log's header before proc_group's output mark. A missing file reads as nothing yet.

    The agent can reach codex's and aider's sources (they are in the job home it works in),
    so the reader trusts nothing about the path: it opens it once, not through a symlink,
    without blocking, and only a regular file (a FIFO planted there would hang the poll
    hook); it then keeps that file open, so a file swapped in under the same name later
    is not read, and the writer's own file still is. A file cut short is read again from
    its start: every source's figures are running totals or events the safe side of a
    budget counts twice rather than never.
    """

    def __init__(self, path: Path, start: int = 0, *, after: bytes | None = None) -> None:
        self.path = path
        self.offset = start
        self._after = after
        self._partial = b""
        self._skipping = False  # in the rest of a line longer than MAX_LINE_BYTES
        self._fd: int | None = None
        self._refused = False

    def _open(self) -> int | None:
        if self._fd is not None or self._refused:
            return self._fd
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError:
            return None  # not there yet (or a symlink: refused each time, never read)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self._refused = True
            return None
        self._fd = fd
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, *, final: bool = False) -> list[str]:
        """The new complete lines (``final``: the partial last one too: the writer is done)."""
        fd = self._open()
        if fd is None:
            return []
        try:
            size = os.fstat(fd).st_size
            if size < self.offset:
                # Cut short: read it again from its start (see the class docstring).
                self.offset, self._partial, self._skipping = 0, b"", False
            data = os.pread(fd, size - self.offset, self.offset) if size > self.offset else b""
        except OSError:
            return []
        self.offset += len(data)
        raw = (self._partial + data).split(b"\n")
        self._partial = b"" if final else raw.pop()
        lines: list[str] = []
        for line in raw:
            if self._skipping:  # the tail of an overlong line
                self._skipping = False
                continue
            if len(line) > MAX_LINE_BYTES:
                continue
            if self._after is not None:
                if line.rstrip(b"\r") == self._after:
                    self._after = None
                continue
            lines.append(line.decode("utf-8", "replace"))
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial, self._skipping = b"", True
        return lines


def _events(lines: list[str]) -> Iterator[dict[str, Any]]:
    return json_objects("\n".join(lines)) if lines else iter(())


class SpendMeter:
    """A job's spend as it streams: ``update()`` reads what is new, the figures are the
    last update's. This base reads nothing (a backend with no source)."""

    def __init__(self) -> None:
        self.spend = Spend()

    def update(self, *, final: bool = False) -> Spend:
        """Read what the source gained (``final``: the writer is done) and the spend now."""
        return self.spend

    def readers(self) -> list[LineReader]:
        return []

    def close(self) -> None:
        """Close the files the meter holds open (after the run's last ``update``)."""
        for reader in self.readers():
            reader.close()

    @property
    def awaiting_model(self) -> bool:
        return self.spend.awaiting_model

    def progress(self) -> tuple[int, int, int]:
        """An activity signal for the stall detector: changes when the model answers."""
        return self.spend.progress


class ClaudeMeter(SpendMeter):
    """Claude Code's spend from the job log, from the run's start."""

    def __init__(self, log_path: Path, start: int, prices: ClaudePrices) -> None:
        super().__init__()
        self._reader = LineReader(log_path, start, after=OUTPUT_MARK.rstrip(b"\n"))
        self._tally = ClaudeTally()
        self._prices = prices

    def readers(self) -> list[LineReader]:
        return [self._reader]

    def update(self, *, final: bool = False) -> Spend:
        lines = self._reader.read(final=final)
        if lines:
            for event in _events(lines):
                self._tally.feed(event)
            self.spend = self._tally.spend(self._prices)
        return self.spend


class CodexMeter(SpendMeter):
    """Codex's spend from the rollout files under ``codex_home/sessions``."""

    def __init__(self, codex_home: Path, price_in_per_mtok: float, price_out_per_mtok: float):
        super().__init__()
        self._sessions = codex_home / "sessions"
        self._readers: dict[Path, LineReader] = {}
        self._tally = CodexTally()
        self._prices = (price_in_per_mtok, price_out_per_mtok)
        self._reads = 0

    def readers(self) -> list[LineReader]:
        return list(self._readers.values())

    def update(self, *, final: bool = False) -> Spend:
        if final or not self._readers or self._reads % CODEX_RESCAN_EVERY == 0:
            for path in self._sessions.glob("*/*/*/rollout-*.jsonl"):
                self._readers.setdefault(path, LineReader(path))
        self._reads += 1
        changed = False
        for path in sorted(self._readers):
            lines = self._readers[path].read(final=final)
            for event in _events(lines):
                self._tally.feed(event, thread=path.name)
                changed = True
        if changed:
            self.spend = self._tally.spend(*self._prices)
        return self.spend


class AiderMeter(SpendMeter):
    """aider's spend from its analytics log."""

    def __init__(self, analytics_log: Path) -> None:
        super().__init__()
        self._reader = LineReader(analytics_log)
        self._tally = AiderTally()

    def readers(self) -> list[LineReader]:
        return [self._reader]

    def update(self, *, final: bool = False) -> Spend:
        lines = self._reader.read(final=final)
        if lines:
            for event in _events(lines):
                self._tally.feed(event)
            self.spend = self._tally.spend()
        return self.spend


def meter_for(backend: str, plan: LlmPlan, st: Settings, log_path: Path, start: int) -> SpendMeter:
    """The meter of a job of ``backend`` run by ``plan``, whose output begins at byte
    ``start`` of ``log_path``."""
    if backend == "claude":
        return ClaudeMeter(log_path, start, ClaudePrices.of(st))
    codex_home = plan.env.get("CODEX_HOME")
    if backend == "codex" and codex_home:
        return CodexMeter(
            Path(codex_home), st.codex_price_in_per_mtok_usd, st.codex_price_out_per_mtok_usd
        )
    if backend == "aider" and plan.side_output is not None:
        return AiderMeter(plan.side_output)
    return SpendMeter()


# ------------------------------------------------------------------------------- decisions


def budget_stop(cost_usd: float, cap_usd: float | None) -> str | None:
    """The stop reason once the streamed spend reaches the job's cap (None: no cap)."""
    if cap_usd is None or cost_usd < cap_usd:
        return None
    return (
        f"{OVER_BUDGET_PREFIX} streamed spend {usd(cost_usd)} reached this job's cap {usd(cap_usd)}"
    )


def is_over_budget(stop_reason: str | None) -> bool:
    """Whether a run's stop reason is the budget stop's."""
    return bool(stop_reason) and str(stop_reason).startswith(OVER_BUDGET_PREFIX)


class SpendWatch:
    """The poll hook of an LLM job: read the meter, stop the job at its cap, else ask the
    stall detector (which counts the meter's progress as activity)."""

    def __init__(
        self, meter: SpendMeter, stall: Callable[[], str | None], cap_usd: float | None
    ) -> None:
        self.meter = meter
        self.stall = stall
        self.cap_usd = cap_usd

    def __call__(self) -> str | None:
        spend = self.meter.update()
        return budget_stop(spend.cost_usd, self.cap_usd) or self.stall()


def merge_spend(
    backend: str, result: LlmResult, spend: Spend, stop_reason: str | None
) -> LlmResult:
    """What a job records: the parser's final figures when it read any (claude's result,
    codex's ``turn.completed``), else the streamed ones; tokens never fewer than streamed.
    A run stopped at its budget is a tool error, whatever the parser made of it."""
    if spend.seen:
        streamed_cost = spend.cost_usd if spend.priced else None

        def most(parsed: int | None, streamed: int) -> int:
            return streamed if parsed is None else max(parsed, streamed)

        result = dataclasses.replace(
            result,
            cost_usd=streamed_cost if result.cost_usd is None else result.cost_usd,
            tokens_in=most(result.tokens_in, spend.tokens_in),
            tokens_out=most(result.tokens_out, spend.tokens_out),
            model_calls=spend.model_calls if result.model_calls is None else result.model_calls,
        )
    if is_over_budget(stop_reason):
        result = dataclasses.replace(
            result,
            outcome=OutcomeKind.CRASHED,
            reasons=[
                f"{backend}: stopped from outside: {stop_reason}; killed the process tree "
                f"(in all: {spend_line(spend)})",
                *result.reasons,
            ],
            cut_short=False,
        )
    return result


def spend_line(spend: Spend) -> str:
    """The streamed spend on one line, for a reason or the log."""
    return (
        f"{spend.model_calls} model call(s), tokens in {spend.tokens_in} "
        f"out {spend.tokens_out}, {usd(spend.cost_usd)}"
    )
