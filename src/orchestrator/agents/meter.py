"""Streamed spend: what an LLM job has spent so far, read while it runs.

A CLI states its cost only when it ends by itself (claude's ``result``, codex's
``turn.completed``): a job killed before that (cancelled, stalled, timed out, reaped, stopped
at its budget) would keep nothing of what it spent. The meter reads the spend as it streams,
so every answered model call counts, and the job can be stopped once it reaches its cap.

Sources, each read from where the last read stopped (new bytes only; a partial last line is
kept for the next read):

- claude: the job log, from the run's start, after proc_group's output mark: the raw model
  stream events ``--include-partial-messages`` prints. Per answer (message id),
  ``message_start`` has the input, cache-write and cache-read tokens (and 1 output token so
  far), ``message_delta`` the final output tokens; an ``assistant`` event has the
  ``message_start`` usage too. Each figure of an answer is the largest seen for it. Priced
  with ``ORCH_CLAUDE_PRICE_{IN,OUT,CACHE_WRITE,CACHE_READ}_PER_MTOK_USD``.
- codex: the rollout files under ``$CODEX_HOME/sessions/YYYY/MM/DD/`` (not ``--ephemeral``).
  After each answer codex writes its thread's running totals twice: a ``token_usage_record``
  (``thread_token_usage``, at once) and an ``event_msg`` ``token_count``
  (``info.total_token_usage``, once the answer's tool calls are done); the largest totals
  seen count. Every rollout file of the job's own ``CODEX_HOME`` is summed, not only the
  newest: a sub-agent thread writes a file of its own, and summing is the safe side of a
  budget. Priced as ``codex.parse_codex`` prices (``codex_cost_usd``, cached input as input).
- aider: its analytics log (``--analytics-log``): each ``message_send`` event's
  ``prompt_tokens``, ``completion_tokens`` and ``cost`` (aider prices known models itself;
  an unpriced model counts tokens and no cost, so no budget stop).

``awaiting_model`` says whether the last thing seen is a request to the model not yet
answered (a stall then is the model server's, see ``stall.MODEL_HANG``); it is False while
a tool runs. claude: after ``init``, a ``requesting`` status, a tool result (``user``) or a
``message_start``, until that answer's ``message_stop``. codex: after ``task_started`` or a
user message, and after the last pending tool call got its output; not while a tool call is
pending or after an answer. aider: a ``message_send_starting`` without its ``message_send``.

Parsing is pure: a ``*Tally`` takes decoded events and says what they add up to
(``Spend``); ``LineReader`` does the file reading. ``budget_stop`` decides the stop from
outside (``OVER_BUDGET_PREFIX``) and ``merge_spend`` what a job records.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.agents.codex import codex_cost_usd
from orchestrator.agents.common import (
    MAX_TOKENS,
    OUTPUT_MARK,
    LlmPlan,
    LlmResult,
    as_cost,
    as_int,
    json_objects,
    token_sum,
)
from orchestrator.config import Settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.money import usd

__all__ = [
    "OVER_BUDGET_PREFIX",
    "AiderMeter",
    "AiderTally",
    "ClaudeMeter",
    "ClaudePrices",
    "ClaudeTally",
    "CodexMeter",
    "CodexTally",
    "LineReader",
    "Spend",
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


@dataclass(frozen=True)
class Spend:
    """What a job spent so far, as read from its stream."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    awaiting_model: bool = False
    # Whether ``cost_usd`` is a price at all: aider's events carry none for a model it does
    # not know, and then the job's cost stays unknown rather than $0.
    priced: bool = True

    @property
    def seen(self) -> bool:
        """Whether the stream showed any spend at all."""
        return bool(self.model_calls or self.tokens_in or self.tokens_out or self.cost_usd)

    @property
    def progress(self) -> tuple[int, int, int]:
        """(model calls, tokens in, tokens out): changes whenever the model answered."""
        return self.model_calls, self.tokens_in, self.tokens_out


def _priced(*terms: tuple[int, float]) -> float:
    """USD for (tokens, USD per million) pairs: finite and non-negative, as ``as_cost`` has
    it; a sum too large for a float is the largest float (the safe side of a budget)."""
    cost = sum(tokens * price for tokens, price in terms if tokens) / 1_000_000
    checked = as_cost(cost)
    return checked if checked is not None else sys.float_info.max


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------- claude


@dataclass(frozen=True)
class ClaudePrices:
    """USD per million tokens, by kind."""

    in_per_mtok: float
    out_per_mtok: float
    cache_write_per_mtok: float
    cache_read_per_mtok: float

    @classmethod
    def of(cls, st: Settings) -> ClaudePrices:
        return cls(
            st.claude_price_in_per_mtok_usd,
            st.claude_price_out_per_mtok_usd,
            st.claude_price_cache_write_per_mtok_usd,
            st.claude_price_cache_read_per_mtok_usd,
        )


# The usage fields of an answer, in the order a tally keeps them.
_CLAUDE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


class ClaudeTally:
    """Claude Code's stream-json events added up. Pure: events in, ``spend()`` out."""

    def __init__(self) -> None:
        # Per answer (message id): its usage figures (_CLAUDE_FIELDS), each the largest
        # seen: message_start's (and the assistant events') output is 1, message_delta's
        # is the final count.
        self._usage: dict[str, list[int]] = {}
        self._answered: set[str] = set()
        self._current: str | None = None  # the answer being streamed
        self._streamed = False  # raw stream events seen: message_stop ends an answer
        self._anonymous = 0
        self.awaiting_model = False

    def _key(self, value: object) -> str:
        if isinstance(value, str) and value:
            return value
        self._anonymous += 1
        return f"?{self._anonymous}"

    def _add(self, key: str, usage: object) -> None:
        figures = self._usage.setdefault(key, [0] * len(_CLAUDE_FIELDS))
        found = _dict(usage)
        for i, name in enumerate(_CLAUDE_FIELDS):
            figures[i] = min(max(figures[i], as_int(found.get(name))), MAX_TOKENS)

    def feed(self, event: dict[str, Any]) -> None:
        """Count one event of the stream."""
        kind = event.get("type")
        if kind == "stream_event":
            self._stream(event, _dict(event.get("event")))
        elif kind == "assistant":
            message = _dict(event.get("message"))
            key = self._key(message.get("id"))
            self._add(key, message.get("usage"))
            self._answered.add(key)
            if not self._streamed:
                self.awaiting_model = False
        elif kind == "user":
            # Tool results: the CLI sends them to the model at once.
            self.awaiting_model = True
        elif kind == "system":
            if event.get("subtype") == "init" or event.get("status") == "requesting":
                self.awaiting_model = True
        elif kind == "result":
            self.awaiting_model = False

    def _stream(self, event: dict[str, Any], inner: dict[str, Any]) -> None:
        self._streamed = True
        name = inner.get("type")
        if name == "message_start":
            message = _dict(inner.get("message"))
            key = self._key(event.get("api_message_id") or message.get("id"))
            self._current = key
            self._add(key, message.get("usage"))
            # The answer has begun but is not whole: a stream that stops now is the model's.
            self.awaiting_model = True
        elif name == "message_delta":
            key = self._key(event.get("api_message_id") or self._current)
            self._add(key, inner.get("usage"))
            self._answered.add(key)
        elif name == "message_stop":
            self.awaiting_model = False

    def spend(self, prices: ClaudePrices) -> Spend:
        """The spend so far at ``prices``."""
        columns = list(zip(*self._usage.values(), strict=True)) or [()] * len(_CLAUDE_FIELDS)
        fresh, write, read, out = (token_sum(*column) for column in columns)
        cost = _priced(
            (fresh, prices.in_per_mtok),
            (write, prices.cache_write_per_mtok),
            (read, prices.cache_read_per_mtok),
            (out, prices.out_per_mtok),
        )
        return Spend(
            token_sum(fresh, write, read), out, cost, len(self._answered), self.awaiting_model
        )


# ------------------------------------------------------------------------------- codex


class CodexTally:
    """Codex's rollout lines added up, per thread (rollout file). Pure."""

    def __init__(self) -> None:
        self._totals: dict[str, tuple[int, int]] = {}  # thread -> (in, out), largest seen
        self._responses: dict[str, set[str]] = {}  # thread -> answered response ids
        self._counts: dict[str, int] = {}  # thread -> token counts that moved its totals
        self._pending: set[str] = set()  # tool calls without their output yet
        self.awaiting_model = False

    def _total(self, thread: str, usage: object) -> bool:
        """Take a thread's running totals; whether they moved."""
        found = _dict(usage)
        if not found:
            return False
        old = self._totals.get(thread, (0, 0))
        new = (
            max(old[0], token_sum(found.get("input_tokens"))),
            max(old[1], token_sum(found.get("output_tokens"))),
        )
        self._totals[thread] = new
        return new != old

    def feed(self, line: dict[str, Any], thread: str = "") -> None:
        """Count one rollout line of ``thread``."""
        kind = line.get("type")
        payload = _dict(line.get("payload"))
        name = payload.get("type")
        if kind == "token_usage_record":
            self._total(thread, payload.get("thread_token_usage"))
            response = payload.get("response_id")
            if isinstance(response, str) and response:
                self._responses.setdefault(thread, set()).add(response)
        elif kind == "event_msg":
            if name == "token_count":
                if self._total(thread, _dict(payload.get("info")).get("total_token_usage")):
                    self._counts[thread] = self._counts.get(thread, 0) + 1
            elif name == "task_started":
                self.awaiting_model = True
            elif name in ("task_complete", "turn_aborted"):
                self.awaiting_model = False
        elif kind == "response_item" and isinstance(name, str):
            self._item(name, payload)

    def _item(self, name: str, payload: dict[str, Any]) -> None:
        call = payload.get("call_id")
        if name.endswith("_call_output"):
            self._pending.discard(str(call))
            # Every output in: the CLI sends them to the model.
            self.awaiting_model = not self._pending
        elif name.endswith("_call") and call is not None:
            self._pending.add(str(call))
            self.awaiting_model = False
        elif name == "message":
            # The user's prompt goes to the model; an assistant message is an answer.
            self.awaiting_model = payload.get("role") == "user"

    def spend(self, price_in_per_mtok: float, price_out_per_mtok: float) -> Spend:
        """The spend so far at the given prices (cached input priced as input)."""
        tokens_in = token_sum(*(t[0] for t in self._totals.values()))
        tokens_out = token_sum(*(t[1] for t in self._totals.values()))
        calls = sum(
            max(len(self._responses.get(thread, ())), self._counts.get(thread, 0))
            for thread in self._totals
        )
        cost: float | None = 0.0
        if tokens_in or tokens_out:
            cost = as_cost(
                codex_cost_usd(tokens_in, tokens_out, price_in_per_mtok, price_out_per_mtok)
            )
        return Spend(
            tokens_in,
            tokens_out,
            sys.float_info.max if cost is None else cost,
            calls,
            self.awaiting_model,
        )


# ------------------------------------------------------------------------------- aider


class AiderTally:
    """aider's analytics events added up. Pure."""

    def __init__(self) -> None:
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.priced = False
        self.model_calls = 0
        self.awaiting_model = False

    def feed(self, event: dict[str, Any]) -> None:
        """Count one analytics event."""
        name = event.get("event")
        if name == "message_send_starting":
            self.awaiting_model = True
        elif name == "message_send":
            props = _dict(event.get("properties"))
            self.model_calls += 1
            self.tokens_in = token_sum(self.tokens_in, props.get("prompt_tokens"))
            self.tokens_out = token_sum(self.tokens_out, props.get("completion_tokens"))
            cost = as_cost(props.get("cost"))
            if cost is not None:
                # Each cost is finite, their sum need not be: a huge total, never infinity.
                self.cost_usd = min(self.cost_usd + cost, sys.float_info.max)
                self.priced = True
            self.awaiting_model = False

    def spend(self) -> Spend:
        """The spend so far."""
        return Spend(
            self.tokens_in,
            self.tokens_out,
            self.cost_usd,
            self.model_calls,
            self.awaiting_model,
            priced=self.priced,
        )


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
