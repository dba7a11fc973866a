"""A fake model server on 127.0.0.1 for running the real coding-agent CLIs offline.

It speaks enough of three wire protocols for the CLIs the orchestrator drives:

- the Anthropic Messages API (``POST /v1/messages``, SSE when ``stream`` is true, plain JSON
  otherwise), as Claude Code uses it (``ANTHROPIC_BASE_URL=<url>``);
- the OpenAI Responses API (``POST /v1/responses``, SSE), as Codex uses it (a model provider
  with ``base_url = "<url>/v1"`` and ``wire_api = "responses"``);
- the OpenAI Chat Completions API (``POST /v1/chat/completions``, plain JSON), as aider
  uses it through litellm (``--openai-api-base <url>/v1``).

A test scripts the *agent turns*: each request that carries tools (the agent loop; side
requests without tools get a short default answer) takes the next ``Turn`` of the script; when
the script runs out, ``then`` answers every further one (a final text by default). A turn is
a final text, a tool call (a freeform one too), an HTTP error, an error event inside the
stream, or a hang (no answer until the server stops); any of them may come after a delay
(``delay_s``). Every request is recorded for assertions.

Billing: the server counts what it would bill, ``billed()`` (input tokens, cache tokens
included, and output tokens) and ``calls``, over the *scripted* requests it answered with a
message (a text or a tool call sent whole). Errors, stream errors and hangs bill nothing.
Side requests (no tools: a CLI's own housekeeping, not the agent loop) are counted apart,
``side_billed()``: a CLI does not stream them to its output, so a test that compares a job's
streamed spend with ``billed()`` also checks that ``side_billed()`` is nothing.

Loopback only: the server binds 127.0.0.1 on a free port and never connects anywhere.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How often the serving loop looks for `stop()`'s shutdown request: socketserver's default
# of 0.5 s made every stop wait 0.25 s on average, a test's teardown. It only bounds how
# soon the loop ends once asked; requests are served as they come either way.
SHUTDOWN_POLL_S = 0.05

ANTHROPIC = "anthropic"
RESPONSES = "responses"
CHAT = "chat"


@dataclass(frozen=True)
class Turn:
    """One scripted answer of the model.

    kind: ``text`` (final answer), ``tool`` (a tool call: ``tool`` and ``tool_input``),
    ``custom_tool`` (a freeform tool call, Responses API: ``tool`` and its raw ``text``),
    ``http_error`` (``status`` and ``message``, and a ``Retry-After`` header when
    ``retry_after`` is set), ``stream_error`` (an error event inside a 200 stream), ``hang``
    (accept the request, never answer). ``delay_s``: wait this long before answering.
    Cache tokens are input tokens too: the Anthropic API reports them apart, the OpenAI APIs
    within ``input_tokens`` / ``prompt_tokens`` (cache reads as ``cached_tokens``).
    """

    kind: str
    text: str = ""
    tool: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    status: int = 500
    message: str = "scripted failure"
    input_tokens: int = 100
    output_tokens: int = 20
    delay_s: float = 0.0
    retry_after: str | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def billed_input_tokens(self) -> int:
        """Every input token of the answer, cached or not."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def text(
    value: str,
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    delay_s: float = 0.0,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> Turn:
    """The model answers ``value`` and ends its turn (after ``delay_s``)."""
    return Turn(
        "text",
        text=value,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay_s=delay_s,
        cache_creation_input_tokens=cache_creation_input_tokens,
        cache_read_input_tokens=cache_read_input_tokens,
    )


def tool(
    name: str,
    tool_input: dict[str, Any],
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    delay_s: float = 0.0,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> Turn:
    """The model asks to run tool ``name`` with ``tool_input`` (after ``delay_s``)."""
    return Turn(
        "tool",
        tool=name,
        tool_input=tool_input,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay_s=delay_s,
        cache_creation_input_tokens=cache_creation_input_tokens,
        cache_read_input_tokens=cache_read_input_tokens,
    )


def custom_tool(name: str, tool_input: str) -> Turn:
    """The model calls the freeform (custom) tool ``name`` with raw text, as Codex's
    ``apply_patch`` is called (Responses API only)."""
    return Turn("custom_tool", tool=name, text=tool_input)


def http_error(
    status: int = 500, message: str = "scripted server error", retry_after: str | None = None
) -> Turn:
    """The server answers with an HTTP error status and an API error body (and a
    ``Retry-After: <retry_after>`` header when given)."""
    return Turn("http_error", status=status, message=message, retry_after=retry_after)


def stream_error(message: str = "scripted overload") -> Turn:
    """A 200 stream that carries an error event instead of a message."""
    return Turn("stream_error", message=message)


def hang() -> Turn:
    """The server takes the request and never answers (until it stops)."""
    return Turn("hang")


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    api: str | None  # ANTHROPIC, RESPONSES, CHAT, or None for anything else
    scripted: bool  # it took a turn of the script


class FakeModelServer:
    """The server; use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, turns: Iterable[Turn] = (), *, then: Turn | None = None) -> None:
        self._turns: list[Turn] = list(turns)
        self._then = then if then is not None else text("Done.")
        self._lock = threading.Lock()
        self._next = 0
        self._ids = itertools.count(1)
        self.requests: list[Recorded] = []
        self.released = threading.Event()
        # What the answered requests would cost: (input tokens, output tokens, answers), for
        # scripted requests and side requests apart (see the module docstring).
        self._billed = [0, 0, 0]
        self._side_billed = [0, 0, 0]
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeModelServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="fake-model-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()  # hanging handlers return
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the Anthropic base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: the OpenAI-style base URL (codex, aider)."""
        return f"{self.url}/v1"

    # ---- script -----------------------------------------------------------------------------

    def script(self, turns: Iterable[Turn], *, then: Turn | None = None) -> None:
        """Replace the script (and, if given, the answer once it runs out)."""
        with self._lock:
            self._turns = list(turns)
            self._next = 0
            if then is not None:
                self._then = then

    def take_turn(self) -> Turn:
        with self._lock:
            if self._next < len(self._turns):
                turn = self._turns[self._next]
                self._next += 1
                return turn
            self._next += 1
            return self._then

    @property
    def turns_taken(self) -> int:
        with self._lock:
            return self._next

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def scripted_requests(self, api: str | None = None) -> list[Recorded]:
        """The requests that took a turn of the script (optionally of one API)."""
        with self._lock:
            return [r for r in self.requests if r.scripted and (api is None or r.api == api)]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    # ---- billing ----------------------------------------------------------------------------

    def bill(self, turn: Turn, *, scripted: bool) -> None:
        """Count an answer sent whole: the tokens it reports, and one call."""
        with self._lock:
            tally = self._billed if scripted else self._side_billed
            tally[0] += turn.billed_input_tokens
            tally[1] += turn.output_tokens
            tally[2] += 1

    def billed(self) -> tuple[int, int]:
        """(input tokens, output tokens) of the scripted requests answered so far."""
        with self._lock:
            return self._billed[0], self._billed[1]

    def side_billed(self) -> tuple[int, int]:
        """(input tokens, output tokens) of the side requests (no tools) answered so far."""
        with self._lock:
            return self._side_billed[0], self._side_billed[1]

    @property
    def calls(self) -> int:
        """Scripted requests answered with a message so far."""
        with self._lock:
            return self._billed[2]


class _Handler(BaseHTTPRequestHandler):
    owner: FakeModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # ---- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return {"_raw": raw.decode("utf-8", "replace")}
        return body if isinstance(body, dict) else {"_json": body}

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _error_headers(self, turn: Turn) -> dict[str, str]:
        return {"retry-after": turn.retry_after} if turn.retry_after is not None else {}

    def _sse(self, events: Iterable[tuple[str | None, dict[str, Any]]]) -> None:
        chunks = []
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            chunks.append(f"{head}data: {json.dumps(data)}\n\n")
        self._send(200, "".join(chunks).encode(), "text/event-stream")

    def _hang(self) -> None:
        # Hold the connection open without a byte of answer: the agent waits, its output
        # and its files stand still, and the orchestrator's stall detection must act.
        self.owner.released.wait()
        self.close_connection = True

    def do_GET(self) -> None:
        self._other()

    def do_HEAD(self) -> None:
        self._other()

    def _other(self) -> None:
        self.owner.record(Recorded(self.command, self.path, dict(self.headers), None, None, False))
        self._json(404, {"error": {"type": "not_found", "message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        api = {
            "/v1/messages": ANTHROPIC,
            "/v1/responses": RESPONSES,
            "/v1/chat/completions": CHAT,
        }.get(path)
        if api is None or body is None:
            self.owner.record(Recorded("POST", self.path, dict(self.headers), body, api, False))
            self._json(404, {"error": {"type": "not_found", "message": f"no {path} here"}})
            return
        # The agent loop sends its tools; aider (chat) never does, so every chat call counts.
        scripted = bool(body.get("tools")) or api == CHAT
        self.owner.record(Recorded("POST", self.path, dict(self.headers), body, api, scripted))
        turn = self.owner.take_turn() if scripted else text("OK", input_tokens=5, output_tokens=1)
        if turn.kind == "hang":
            self._hang()
            return
        if turn.delay_s > 0:
            # The model thinks: nothing is sent meanwhile. A stopping server answers at once.
            self.owner.released.wait(turn.delay_s)
        if api == ANTHROPIC:
            self._anthropic(body, turn)
        elif api == RESPONSES:
            self._responses(body, turn)
        else:
            self._chat(body, turn)
        if turn.kind in ("text", "tool", "custom_tool"):
            # Sent whole without an error (a closed connection raises above): billed.
            self.owner.bill(turn, scripted=scripted)

    # ---- Anthropic Messages -----------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any], turn: Turn) -> None:
        model = str(body.get("model", "claude-fake"))
        if turn.kind == "http_error":
            kind = "overloaded_error" if turn.status == 529 else "api_error"
            self._json(
                turn.status,
                {"type": "error", "error": {"type": kind, "message": turn.message}},
                self._error_headers(turn),
            )
            return
        msg_id = self.owner.new_id("msg")
        usage_start = {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": turn.cache_creation_input_tokens,
            "cache_read_input_tokens": turn.cache_read_input_tokens,
            "output_tokens": 1,
        }
        if turn.kind == "tool":
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": self.owner.new_id("toolu"),
                "name": turn.tool,
                "input": turn.tool_input,
            }
            stop = "tool_use"
        else:
            block = {"type": "text", "text": turn.text}
            stop = "end_turn"
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": turn.input_tokens,
                        "cache_creation_input_tokens": turn.cache_creation_input_tokens,
                        "cache_read_input_tokens": turn.cache_read_input_tokens,
                        "output_tokens": turn.output_tokens,
                    },
                },
            )
            return
        start = {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_start,
            },
        }
        if turn.kind == "stream_error":
            self._sse(
                [
                    ("message_start", start),
                    (
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": turn.message},
                        },
                    ),
                ]
            )
            return
        if block["type"] == "tool_use":
            first = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(turn.tool_input)}
        else:
            first = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": turn.text}
        self._sse(
            [
                ("message_start", start),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": first},
                ),
                ("ping", {"type": "ping"}),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": turn.output_tokens},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        )

    # ---- OpenAI Responses -------------------------------------------------------------------

    def _responses(self, body: dict[str, Any], turn: Turn) -> None:
        if turn.kind == "http_error":
            self._json(turn.status, _openai_error(turn.message), self._error_headers(turn))
            return
        resp_id = self.owner.new_id("resp")
        created = {"type": "response.created", "response": {"id": resp_id}}
        if turn.kind == "stream_error":
            failed = {
                "type": "response.failed",
                "response": {
                    "id": resp_id,
                    "status": "failed",
                    "error": {"code": "server_error", "message": turn.message},
                },
            }
            self._sse([("response.created", created), ("response.failed", failed)])
            return
        if turn.kind == "custom_tool":
            item: dict[str, Any] = {
                "type": "custom_tool_call",
                "id": self.owner.new_id("ctc"),
                "call_id": self.owner.new_id("call"),
                "name": turn.tool,
                "input": turn.text,
            }
        elif turn.kind == "tool":
            item = {
                "type": "function_call",
                "id": self.owner.new_id("fc"),
                "call_id": self.owner.new_id("call"),
                "name": turn.tool,
                "arguments": json.dumps(turn.tool_input),
            }
        else:
            item = {
                "type": "message",
                "role": "assistant",
                "id": self.owner.new_id("msg"),
                "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
            }
        completed = {
            "type": "response.completed",
            "response": {
                "id": resp_id,
                "usage": {
                    # OpenAI's input tokens include the cached ones.
                    "input_tokens": turn.billed_input_tokens,
                    "input_tokens_details": {"cached_tokens": turn.cache_read_input_tokens},
                    "output_tokens": turn.output_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": turn.billed_input_tokens + turn.output_tokens,
                },
            },
        }
        self._sse(
            [
                ("response.created", created),
                (
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": 0, "item": item},
                ),
                ("response.completed", completed),
            ]
        )

    # ---- OpenAI Chat Completions ------------------------------------------------------------

    def _chat(self, body: dict[str, Any], turn: Turn) -> None:
        if turn.kind in ("http_error", "stream_error"):
            status = turn.status if turn.kind == "http_error" else 500
            self._json(status, _openai_error(turn.message), self._error_headers(turn))
            return
        self._json(
            200,
            {
                "id": self.owner.new_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(body.get("model", "gpt-fake")),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": turn.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": turn.billed_input_tokens,
                    "completion_tokens": turn.output_tokens,
                    "total_tokens": turn.billed_input_tokens + turn.output_tokens,
                },
            },
        )


def _openai_error(message: str) -> dict[str, Any]:
    return {"error": {"type": "server_error", "code": "server_error", "message": message}}


def tool_results(server: FakeModelServer, api: str) -> list[str]:
    """The text of every tool result in the agent's last scripted request (the whole
    conversation so far), in order, for assertions."""
    requests = server.scripted_requests(api)
    if not requests:
        return []
    body = requests[-1].body or {}
    found: list[str] = []
    if api == ANTHROPIC:
        for message in body.get("messages", []):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, dict) and part.get("type") == "tool_result":
                    found.append(json.dumps(part.get("content")))
    elif api == RESPONSES:
        for item in body.get("input", []):
            if isinstance(item, dict) and item.get("type") in (
                "function_call_output",
                "custom_tool_call_output",
            ):
                found.append(json.dumps(item.get("output")))
    return found
