"""What an LLM CLI's spend events add up to: decoded events in, ``Spend`` out.

Pure: a ``*Tally`` reads no file and no clock. ``agents/meter.py`` reads the events while a
job runs and feeds them here, one at a time, in the order they were written.

- claude (the raw model stream events ``--include-partial-messages`` prints): per answer
  (message id), ``message_start`` has the input, cache-write and cache-read tokens (and 1
  output token so far), ``message_delta`` the final output tokens; an ``assistant`` event
  has the ``message_start`` usage too. Each figure of an answer is the largest seen for it.
  Priced with ``ORCH_CLAUDE_PRICE_{IN,OUT,CACHE_WRITE,CACHE_READ}_PER_MTOK_USD``.
- codex (rollout lines, one file per thread): after each answer codex writes its thread's
  running totals twice: a ``token_usage_record`` (``thread_token_usage``, at once) and an
  ``event_msg`` ``token_count`` (``info.total_token_usage``, once the answer's tool calls
  are done); the largest totals seen count. Every thread is summed, not only the newest: a
  sub-agent thread writes a file of its own, and summing is the safe side of a budget.
  Priced as ``codex.parse_codex`` prices (``codex_cost_usd``, cached input as input).
- aider (analytics events): each ``message_send`` event's ``prompt_tokens``,
  ``completion_tokens`` and ``cost`` (aider prices known models itself; an unpriced model
  counts tokens and no cost, so no budget stop).

``awaiting_model`` says whether the last thing seen is a request to the model not yet
answered (a stall then is the model server's, see ``stall.MODEL_HANG``); it is False while
a tool runs. claude: after ``init``, a ``requesting`` status, a tool result (``user``) or a
``message_start``, until that answer's ``message_stop``. codex: after ``task_started`` or a
user message, and after the last pending tool call got its output; not while a tool call is
pending or after an answer. aider: a ``message_send_starting`` without its ``message_send``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.agents.codex import codex_cost_usd
from orchestrator.agents.common import MAX_COST_USD, MAX_TOKENS, as_cost, as_int, token_sum
from orchestrator.config import Settings

__all__ = [
    "AiderTally",
    "ClaudePrices",
    "ClaudeTally",
    "CodexTally",
    "Spend",
]


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
    """USD for (tokens, USD per million) pairs, as ``as_cost`` has it; a sum too large for
    a float is ``MAX_COST_USD`` too (the safe side of a budget)."""
    cost = sum(tokens * price for tokens, price in terms if tokens) / 1_000_000
    checked = as_cost(cost)
    return checked if checked is not None else MAX_COST_USD


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
            MAX_COST_USD if cost is None else cost,
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
                # Each cost is at most MAX_COST_USD, their sum need not be: counted as that much.
                self.cost_usd = min(self.cost_usd + cost, MAX_COST_USD)
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
