"""The spend meter's readers on recorded lines (agents.meter), its decisions, and the stall
detector's extra activity signals, driven by a fake clock.

The recorded lines are the pinned CLIs' own (claude 2.1.330 ``stream-json
--include-partial-messages``, codex 0.169.0 rollout files) against the fake model server,
trimmed of ids and fields the meter does not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents.claude import plan_claude
from orchestrator.agents.codex import codex_cost_usd, plan_codex
from orchestrator.agents.common import (
    MAX_COST_USD,
    MAX_TOKENS,
    OUTPUT_MARK,
    LlmPlan,
    LlmResult,
    PlanRequest,
)
from orchestrator.agents.meter import (
    OVER_BUDGET_PREFIX,
    AiderMeter,
    ClaudeMeter,
    CodexMeter,
    LineReader,
    SpendMeter,
    SpendWatch,
    budget_stop,
    is_over_budget,
    merge_spend,
    meter_for,
)
from orchestrator.agents.stall import MODEL_HANG, StallDetector, is_stall, model_hang
from orchestrator.agents.tally import AiderTally, ClaudePrices, ClaudeTally, CodexTally, Spend
from orchestrator.config import load_settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage

PRICES = ClaudePrices(
    in_per_mtok=4.0, out_per_mtok=20.0, cache_write_per_mtok=5.0, cache_read_per_mtok=0.2
)


def _lines(*objs: dict[str, Any]) -> list[str]:
    return [json.dumps(o, separators=(",", ":")) for o in objs]


def _feed(tally: Any, lines: list[str], **kw: Any) -> None:
    for line in lines:
        tally.feed(json.loads(line), **kw)


# ------------------------------------------------------------------------------- claude

INIT = '{"type":"system","subtype":"init","model":"claude-opus-5-5","cwd":"/tmp/wt"}'
REQUESTING = '{"type":"system","subtype":"status","status":"requesting"}'


def claude_answer(
    n: int, *, tokens_in: int = 100, tokens_out: int = 20, tool: bool = True
) -> list[str]:
    """One answer as the CLI prints it: stream events around one assistant event."""
    mid = f"msg_{n:04d}"
    block = (
        {"type": "tool_use", "id": f"toolu_{n}", "name": "Bash", "input": {"command": "echo hi"}}
        if tool
        else {"type": "text", "text": "Done."}
    )
    start_usage = {"input_tokens": tokens_in, "output_tokens": 1}
    return _lines(
        {
            "type": "stream_event",
            "event": {
                "type": "message_start",
                "message": {"id": mid, "role": "assistant", "content": [], "usage": start_usage},
            },
            "api_message_id": mid,
        },
        {
            "type": "stream_event",
            "event": {"type": "content_block_start", "index": 0, "content_block": block},
            "api_message_id": mid,
        },
        {"type": "assistant", "message": {"id": mid, "content": [block], "usage": start_usage}},
        {
            "type": "stream_event",
            "event": {"type": "content_block_stop", "index": 0},
            "api_message_id": mid,
        },
        {
            "type": "stream_event",
            "event": {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn"},
                "usage": {"output_tokens": tokens_out},
            },
            "api_message_id": mid,
        },
        {"type": "stream_event", "event": {"type": "message_stop"}, "api_message_id": mid},
    )


TOOL_RESULT = (
    '{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1",'
    '"type":"tool_result","content":"hi","is_error":false}]}}'
)
RESULT = (
    '{"type":"result","subtype":"success","is_error":false,"num_turns":2,"total_cost_usd":0.0016,'
    '"usage":{"input_tokens":200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"output_tokens":40}}'
)
CLAUDE_RUN = [
    INIT,
    REQUESTING,
    *claude_answer(1),
    TOOL_RESULT,
    REQUESTING,
    *claude_answer(2, tool=False),
    RESULT,
]


def test_claude_counts_each_answer_once_with_its_final_output() -> None:
    tally = ClaudeTally()
    _feed(tally, CLAUDE_RUN)
    spend = tally.spend(PRICES)
    # message_start says 1 output token, the assistant event too; message_delta's 20 is it.
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (200, 40, 2)
    # The pinned CLI's own total for the same answers (its result line above).
    assert spend.cost_usd == pytest.approx(0.0016)
    assert spend.awaiting_model is False


def test_claude_input_counts_at_message_start_before_the_answer_is_whole() -> None:
    # Killed mid-answer: the input was billed, the output so far is 1 token.
    tally = ClaudeTally()
    _feed(tally, [INIT, REQUESTING, claude_answer(1)[0]])
    spend = tally.spend(PRICES)
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (100, 1, 0)
    assert spend.awaiting_model is True


def test_claude_awaiting_model_follows_requests_and_tools() -> None:
    tally = ClaudeTally()
    seen = []
    for line in CLAUDE_RUN:
        tally.feed(json.loads(line))
        seen.append((json.loads(line)["type"], tally.awaiting_model))
    answer = claude_answer(1)
    assert seen[0] == ("system", True)  # init: the first request is on its way
    # Within an answer: waiting until message_stop (a stream that stops is the model's).
    assert [a for _, a in seen[2 : 2 + len(answer)]] == [True] * (len(answer) - 1) + [False]
    assert seen[2 + len(answer)] == ("user", True)  # the tool result goes to the model
    assert seen[-1] == ("result", False)


def test_claude_waits_not_while_a_tool_runs() -> None:
    tally = ClaudeTally()
    _feed(tally, [INIT, REQUESTING, *claude_answer(1)])
    assert tally.awaiting_model is False  # the Bash tool runs now


def test_claude_cache_tokens_are_input_priced_apart() -> None:
    start = {
        "type": "stream_event",
        "event": {
            "type": "message_start",
            "message": {
                "id": "m1",
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": 1000,
                    "cache_read_input_tokens": 100_000,
                    "output_tokens": 1,
                },
            },
        },
    }
    delta = {
        "type": "stream_event",
        "event": {"type": "message_delta", "usage": {"output_tokens": 50}},
    }
    tally = ClaudeTally()
    _feed(tally, _lines(start, delta))
    spend = tally.spend(PRICES)
    assert (spend.tokens_in, spend.tokens_out) == (101_010, 50)
    # No api_message_id: the delta belongs to the answer being streamed.
    assert spend.model_calls == 1
    expected = (10 * 4.0 + 1000 * 5.0 + 100_000 * 0.2 + 50 * 20.0) / 1e6
    assert spend.cost_usd == pytest.approx(expected)


def test_claude_without_stream_events_counts_assistant_usage() -> None:
    # An older CLI, or --include-partial-messages missing: the assistant events still count.
    tally = ClaudeTally()
    _feed(tally, [INIT, *[ln for ln in claude_answer(1) if ln.startswith('{"type":"assistant"')]])
    spend = tally.spend(PRICES)
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (100, 1, 1)
    assert spend.awaiting_model is False


def test_claude_assistant_events_of_one_message_count_once() -> None:
    # One assistant event per content block, all with the same id and usage.
    answer = claude_answer(1)
    tally = ClaudeTally()
    _feed(tally, [*answer, *[ln for ln in answer if ln.startswith('{"type":"assistant"')]])
    assert tally.spend(PRICES).progress == (1, 100, 20)


@pytest.mark.parametrize(
    ("value", "counted"),
    [
        ("1e999", 0),  # Infinity as JSON reads: not a count
        ("-5", 0),
        ('"100"', 0),
        ("true", 0),
        ("12.5", 0),
        ("1e30", MAX_TOKENS),  # integral, far too large: capped
        (str(2**80), MAX_TOKENS),
    ],
)
def test_claude_odd_numbers_are_capped_or_ignored(value: str, counted: int) -> None:
    line = (
        '{"type":"stream_event","event":{"type":"message_start","message":{"id":"m",'
        f'"usage":{{"input_tokens":{value},"output_tokens":1}}}}}}}}'
    )
    tally = ClaudeTally()
    tally.feed(json.loads(line))
    spend = tally.spend(PRICES)
    assert spend.tokens_in == counted
    assert spend.cost_usd == pytest.approx((counted * 4.0 + 1 * 20.0) / 1e6)


def test_claude_huge_sums_stay_finite() -> None:
    tally = ClaudeTally()
    for n in range(3):
        tally.feed(
            {
                "type": "stream_event",
                "event": {
                    "type": "message_start",
                    "message": {"id": f"m{n}", "usage": {"input_tokens": 2**62}},
                },
            }
        )
    spend = tally.spend(ClaudePrices(1e308, 1e308, 1e308, 1e308))
    assert spend.tokens_in == MAX_TOKENS
    assert spend.cost_usd == MAX_COST_USD  # the safe side, never infinity


def test_claude_events_of_other_shapes_are_ignored() -> None:
    tally = ClaudeTally()
    for obj in (
        {"type": "stream_event", "event": "message_start"},
        {"type": "stream_event"},
        {"type": "assistant", "message": ["x"]},
        {"type": "assistant", "message": {"id": "m", "usage": "lots"}},
        {"type": 7},
        {},
    ):
        tally.feed(obj)
    spend = tally.spend(PRICES)
    assert (spend.tokens_in, spend.tokens_out, spend.cost_usd) == (0, 0, 0.0)


# ------------------------------------------------------------------------------- codex

TASK_STARTED = '{"type":"event_msg","payload":{"type":"task_started","started_at":1796558468}}'
USER_MESSAGE = (
    '{"type":"response_item","payload":{"type":"message","id":"msg_u","role":"user",'
    '"content":[{"type":"input_text","text":"do it"}]}}'
)
TASK_COMPLETE = (
    '{"type":"event_msg","payload":{"type":"task_complete","last_agent_message":"Done."}}'
)


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "input_tokens": tokens_in,
        "cached_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "output_tokens": tokens_out,
        "reasoning_output_tokens": 0,
        "total_tokens": tokens_in + tokens_out,
    }


def codex_call(n: int, total_in: int, total_out: int) -> dict[str, list[str]]:
    """One answer with a tool call, in the order codex writes it: the call, the usage record
    (at once), the tool's output, then the token count."""
    call = f"call_{n}"
    return {
        "call": _lines(
            {
                "type": "response_item",
                "payload": {
                    "type": "function_call",
                    "name": "exec_command",
                    "arguments": '{"cmd": "echo hi"}',
                    "call_id": call,
                },
            }
        ),
        "record": _lines(
            {
                "type": "token_usage_record",
                "payload": {
                    "response_id": f"resp_{n}",
                    "usage": _usage(100, 20),
                    "thread_token_usage": _usage(total_in, total_out),
                },
            }
        ),
        "output": _lines(
            {
                "type": "response_item",
                "payload": {"type": "function_call_output", "call_id": call, "output": "hi"},
            }
        ),
        "count": _lines(
            {
                "type": "event_msg",
                "payload": {
                    "type": "token_count",
                    "info": {
                        "total_token_usage": _usage(total_in, total_out),
                        "last_token_usage": _usage(100, 20),
                    },
                },
            }
        ),
    }


def codex_run(calls: int) -> list[str]:
    lines = [TASK_STARTED, USER_MESSAGE]
    for n in range(1, calls + 1):
        parts = codex_call(n, 100 * n, 20 * n)
        lines += [*parts["call"], *parts["record"], *parts["output"], *parts["count"]]
    return lines


def test_codex_takes_the_running_totals_of_every_answer() -> None:
    tally = CodexTally()
    _feed(tally, [*codex_run(3), TASK_COMPLETE])
    spend = tally.spend(1.25, 10.0)
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (300, 60, 3)
    assert spend.cost_usd == pytest.approx(codex_cost_usd(300, 60, 1.25, 10.0))
    assert spend.awaiting_model is False


def test_codex_usage_record_counts_before_the_tool_is_done() -> None:
    # The token_count of an answer comes after its tool ran; the usage record at once.
    parts = codex_call(1, 100, 20)
    tally = CodexTally()
    _feed(tally, [TASK_STARTED, USER_MESSAGE, *parts["call"], *parts["record"]])
    assert tally.spend(1.25, 10.0).progress == (1, 100, 20)


def test_codex_awaiting_model_follows_calls_and_outputs() -> None:
    parts = codex_call(1, 100, 20)
    tally = CodexTally()
    states = []
    for line in [TASK_STARTED, USER_MESSAGE, *parts["call"], *parts["record"], *parts["output"]]:
        tally.feed(json.loads(line))
        states.append(tally.awaiting_model)
    # started, prompt sent, tool runs, answer counted (tool still runs), output sent back.
    assert states == [True, True, False, False, True]
    assistant = {
        "type": "response_item",
        "payload": {"type": "message", "role": "assistant", "content": []},
    }
    tally.feed(assistant)
    assert tally.awaiting_model is False


def test_codex_parallel_calls_wait_for_every_output() -> None:
    first, second = codex_call(1, 100, 20), codex_call(2, 100, 20)
    tally = CodexTally()
    _feed(tally, [TASK_STARTED, *first["call"], *second["call"], *first["output"]])
    assert tally.awaiting_model is False  # the second tool still runs
    _feed(tally, second["output"])
    assert tally.awaiting_model is True


def test_codex_threads_are_summed_and_repeats_do_not_count() -> None:
    tally = CodexTally()
    _feed(tally, codex_run(2), thread="rollout-a.jsonl")
    _feed(tally, codex_run(1), thread="rollout-b.jsonl")
    # The same totals again (a rate-limit update) and lower ones (out of order) change nothing.
    again = codex_call(9, 200, 40)["count"] + codex_call(9, 50, 5)["count"]
    _feed(tally, again, thread="rollout-a.jsonl")
    assert tally.spend(1.0, 1.0).progress == (3, 300, 60)


def test_codex_garbage_and_huge_numbers() -> None:
    tally = CodexTally()
    huge = codex_call(1, 0, 0)["count"][0].replace('"input_tokens":0', '"input_tokens":1e300')
    for obj in (
        {"type": "event_msg", "payload": {"type": "token_count", "info": None}},
        {"type": "event_msg", "payload": "token_count"},
        {"type": "token_usage_record", "payload": {"thread_token_usage": [1, 2]}},
        {"type": "response_item", "payload": {"type": 3}},
        json.loads(huge),
    ):
        tally.feed(obj)
    spend = tally.spend(1e308, 1e308)
    assert spend.tokens_in == MAX_TOKENS
    assert spend.cost_usd == MAX_COST_USD


# ------------------------------------------------------------------------------- aider


def aider_event(name: str, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": props, "user_id": "u", "time": 1}


def test_aider_sums_answered_requests() -> None:
    tally = AiderTally()
    tally.feed(aider_event("message_send_starting"))
    assert tally.awaiting_model is True
    tally.feed(aider_event("message_send", prompt_tokens=100, completion_tokens=20, cost=0.01))
    assert tally.awaiting_model is False
    tally.feed(aider_event("message_send_starting"))
    tally.feed(aider_event("message_send", prompt_tokens=50, completion_tokens=5, cost=0.002))
    spend = tally.spend()
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (150, 25, 2)
    assert spend.cost_usd == pytest.approx(0.012)


def test_aider_unanswered_request_is_awaited_and_bad_costs_do_not_count() -> None:
    tally = AiderTally()
    for cost in (float("nan"), float("inf"), -1.0, "0.5", None, True):
        tally.feed(aider_event("message_send", prompt_tokens=1, completion_tokens=1, cost=cost))
    tally.feed(aider_event("message_send", prompt_tokens=1, completion_tokens=1, cost=1e308))
    tally.feed(aider_event("message_send", prompt_tokens=1, completion_tokens=1, cost=1e308))
    tally.feed(aider_event("message_send_starting"))
    tally.feed(aider_event("message_send_exception", exception="APIError"))
    spend = tally.spend()
    assert spend.cost_usd == MAX_COST_USD  # a huge total, never infinity
    assert spend.model_calls == 8
    assert spend.awaiting_model is True  # the last request got no answer


def test_aider_unpriced_model_leaves_the_cost_unknown() -> None:
    tally = AiderTally()
    tally.feed(aider_event("message_send", prompt_tokens=100, completion_tokens=20))
    spend = tally.spend()
    assert (spend.tokens_in, spend.priced) == (100, False)
    killed = LlmResult(OutcomeKind.CRASHED, ["aider: cancelled"])
    merged = merge_spend("aider", killed, spend, "cancelled")
    assert (merged.cost_usd, merged.tokens_in, merged.model_calls) == (None, 100, 1)


# ------------------------------------------------------------------------------- reading


def test_line_reader_reads_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    reader = LineReader(path)
    assert reader.read() == []  # no file yet
    path.write_bytes(b'{"a":1}\n{"b":')
    assert reader.read() == ['{"a":1}']
    assert reader.read() == []
    with path.open("ab") as fh:
        fh.write(b"2}\n\xff{}\n")
    assert reader.read() == ['{"b":2}', "\ufffd{}"]
    with path.open("ab") as fh:
        fh.write(b'{"tail":true}')
    assert reader.read() == []
    assert reader.read(final=True) == ['{"tail":true}']


def test_line_reader_starts_at_an_offset_after_a_mark(tmp_path: Path) -> None:
    path = tmp_path / "log"
    earlier = b'{"earlier run":1}\n'
    path.write_bytes(
        earlier + b'[header] argv {"x": 1}\n{"header":1}\n' + OUTPUT_MARK + b'{"ok":1}\n'
    )
    reader = LineReader(path, len(earlier), after=OUTPUT_MARK.rstrip(b"\n"))
    assert reader.read() == ['{"ok":1}']


def test_line_reader_skips_an_overlong_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.agents.meter as meter

    monkeypatch.setattr(meter, "MAX_LINE_BYTES", 10)
    path = tmp_path / "log"
    reader = LineReader(path)
    path.write_bytes(b"x" * 25)  # longer than the limit, no end yet: dropped
    assert reader.read() == []
    with path.open("ab") as fh:
        fh.write(b"yyy\n{}\n" + b"z" * 11 + b"\n[1]\n")
    assert reader.read() == ["{}", "[1]"]


def test_line_reader_reads_a_file_cut_short_again_from_its_start(tmp_path: Path) -> None:
    # Running totals (codex) are safe to read twice; never reading them again is not.
    path = tmp_path / "log"
    path.write_bytes(b"[1]\n[2]\n")
    reader = LineReader(path)
    assert reader.read() == ["[1]", "[2]"]
    path.write_bytes(b"[3]\n")
    assert reader.read() == ["[3]"]
    with path.open("ab") as fh:
        fh.write(b"[4]\n")
    assert reader.read() == ["[4]"]


def test_line_reader_keeps_reading_the_writers_file_when_another_takes_its_name(
    tmp_path: Path,
) -> None:
    # The agent can reach codex's session file: one it swaps in under the same name (a
    # rename over it, or a delete and a new file) must not hide what the CLI goes on writing
    # to its own (the old inode).
    path = tmp_path / "rollout.jsonl"
    path.write_bytes(b"[1]\n")
    reader = LineReader(path)
    assert reader.read() == ["[1]"]
    with path.open("ab") as writer:  # the CLI's open file
        forged = tmp_path / "forged"
        forged.write_bytes(b'{"forged": 0}\n')
        forged.replace(path)
        writer.write(b"[2]\n")
        writer.flush()
        assert reader.read() == ["[2]"]
    reader.close()


def test_line_reader_refuses_a_fifo_or_a_symlink_without_blocking(tmp_path: Path) -> None:
    # A FIFO planted where a source will be would block a plain open() of it, and the poll
    # hook with it (no budget stop, no stall detection); a symlink could point anywhere.
    fifo = tmp_path / "rollout-fifo.jsonl"
    os.mkfifo(fifo)
    assert LineReader(fifo).read() == []
    target = tmp_path / "elsewhere"
    target.write_bytes(b"[1]\n")
    link = tmp_path / "rollout-link.jsonl"
    link.symlink_to(target)
    assert LineReader(link).read() == []


def test_claude_meter_reads_the_log_in_pieces(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(b"[orchestrator] an earlier run\n" + "\n".join(CLAUDE_RUN[:4]).encode() + b"\n")
    start = log.stat().st_size
    body = ("\n".join(CLAUDE_RUN) + "\n").encode()
    # Up to the first answer's end, and a few bytes of the next line.
    cut = len(("\n".join(CLAUDE_RUN[: 2 + len(claude_answer(1))]) + "\n").encode()) + 10
    meter = ClaudeMeter(log, start, PRICES)
    with log.open("ab") as fh:
        fh.write(b'[proc_group header] argv ["claude"]\n' + OUTPUT_MARK)
        fh.write(body[:cut])
        fh.flush()
        first = meter.update()
        fh.write(body[cut:])
        fh.write(b"[orchestrator] end: exit code 0\n")
    assert first.progress == (1, 100, 20)
    assert first.awaiting_model is False  # the tool runs; its result line is not whole yet
    spend = meter.update(final=True)
    # Only this run's section: the earlier run's answer before `start` is not counted.
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (200, 40, 2)
    assert (meter.spend.tokens_in, meter.spend.tokens_out, meter.spend.model_calls) == (200, 40, 2)
    assert meter.spend.cost_usd == pytest.approx(0.0016)
    assert meter.progress() == (2, 200, 40)


def test_codex_meter_reads_every_rollout_of_its_home(tmp_path: Path) -> None:
    home = tmp_path / "codex"
    meter = CodexMeter(home, 1.25, 10.0)
    assert meter.update().seen is False  # no sessions folder yet
    day = home / "sessions" / "2026" / "12" / "06"
    day.mkdir(parents=True)
    first = day / "rollout-2026-12-06T12-01-08-a.jsonl"
    first.write_text("\n".join(codex_run(2)) + "\n")
    assert meter.update().progress == (2, 200, 40)
    second = day / "rollout-2026-12-06T12-01-09-b.jsonl"
    second.write_text("\n".join(codex_run(1)) + "\n")
    spend = meter.update(final=True)  # final: the folder is listed again
    assert spend.progress == (3, 300, 60)
    assert spend.cost_usd == pytest.approx(codex_cost_usd(300, 60, 1.25, 10.0))


def test_aider_meter_reads_its_analytics_log(tmp_path: Path) -> None:
    log = tmp_path / "aider-analytics.jsonl"
    meter = AiderMeter(log)
    answer = json.dumps(aider_event("message_send", prompt_tokens=7, completion_tokens=3, cost=0.5))
    log.write_text(json.dumps(aider_event("message_send_starting")) + "\n" + answer[:20])
    assert meter.update().awaiting_model is True  # the answer's line is not whole yet
    with log.open("a") as fh:
        fh.write(answer[20:] + "\n")
    spend = meter.update()
    assert (spend.tokens_in, spend.tokens_out, spend.model_calls) == (7, 3, 1)


def test_meter_for_picks_the_backend_source(tmp_path: Path) -> None:
    st = load_settings(home=tmp_path / "home")
    log = tmp_path / "log"
    assert isinstance(meter_for("claude", LlmPlan(argv=["claude"]), st, log, 0), ClaudeMeter)
    codex = LlmPlan(argv=["codex"], env={"CODEX_HOME": str(tmp_path / "c")})
    assert isinstance(meter_for("codex", codex, st, log, 0), CodexMeter)
    aider = LlmPlan(argv=["aider"], side_output=tmp_path / "a.jsonl")
    assert isinstance(meter_for("aider", aider, st, log, 0), AiderMeter)
    nothing = meter_for("codex", LlmPlan(argv=["codex"]), st, log, 0)
    assert type(nothing) is SpendMeter
    assert nothing.update(final=True) == Spend()


def test_claude_default_prices_are_the_pinned_clis() -> None:
    # claude 2.1.330's table for its default model (claude-opus-5-5): $4 in, $20 out,
    # $5 cache write (5 min), $0.20 cache read per Mtok. Measured against the CLI's own
    # total_cost_usd: 1000 in + 10 out = $0.0042; 1M cache write = $5; 1M cache read = $0.20.
    st = load_settings()
    assert ClaudePrices.of(st) == ClaudePrices(4.0, 20.0, 5.0, 0.2)


# ------------------------------------------------------------------------------- decisions


def test_budget_stop_at_the_cap() -> None:
    assert budget_stop(0.5, None) is None
    assert budget_stop(0.0029, 0.003) is None
    reason = budget_stop(0.0032, 0.003)
    assert reason == f"{OVER_BUDGET_PREFIX} streamed spend $0.0032 reached this job's cap $0.003"
    assert is_over_budget(reason)
    assert not is_over_budget("stalled: no output")
    assert not is_over_budget(None)
    assert not is_stall(reason)


class FixedMeter(SpendMeter):
    def __init__(self, cost: float) -> None:
        super().__init__()
        self.spend = Spend(100, 20, cost, 1)
        self.updates = 0

    def update(self, *, final: bool = False) -> Spend:
        self.updates += 1
        return self.spend


def test_spend_watch_stops_at_the_cap_before_asking_the_stall_detector() -> None:
    asked: list[int] = []

    def stall() -> str | None:
        asked.append(1)
        return None

    under = SpendWatch(FixedMeter(0.001), stall, 0.002)
    assert under() is None
    assert asked == [1]
    over = SpendWatch(FixedMeter(0.002), stall, 0.002)
    reason = over()
    assert is_over_budget(reason)
    assert asked == [1]  # not asked
    assert over.meter.updates == 1  # type: ignore[attr-defined]
    # No cap: only the stall detector decides.
    assert SpendWatch(FixedMeter(9.0), lambda: "stalled: x", None)() == "stalled: x"


def test_merge_takes_the_parsers_final_figures_else_the_streamed_ones() -> None:
    spend = Spend(tokens_in=300, tokens_out=60, cost_usd=0.0024, model_calls=3)
    final = LlmResult(OutcomeKind.COMPLETED, ["ok"], cost_usd=0.003, tokens_in=300, tokens_out=59)
    merged = merge_spend("claude", final, spend, None)
    assert merged.cost_usd == 0.003  # the CLI's own total wins
    assert (merged.tokens_in, merged.tokens_out) == (300, 60)  # never fewer than streamed
    assert merged.model_calls == 3
    assert merged.outcome is OutcomeKind.COMPLETED
    killed = LlmResult(OutcomeKind.CRASHED, ["claude: cancelled"])
    merged = merge_spend("claude", killed, spend, "cancelled")
    assert (merged.cost_usd, merged.tokens_in, merged.tokens_out) == (0.0024, 300, 60)
    assert merged.reasons == ["claude: cancelled"]
    # Nothing streamed: the parser's word, None included.
    assert merge_spend("codex", killed, Spend(), None) == killed
    counted = LlmResult(OutcomeKind.COMPLETED, [], model_calls=7)
    assert merge_spend("codex", counted, spend, None).model_calls == 7


def test_merge_makes_a_budget_stop_a_tool_error_naming_spend_and_cap() -> None:
    spend = Spend(tokens_in=400, tokens_out=80, cost_usd=0.0032, model_calls=4)
    stop = budget_stop(0.0032, 0.003)
    cut = LlmResult(OutcomeKind.COMPLETED, ["claude: cut short"], cut_short=True)
    merged = merge_spend("claude", cut, spend, stop)
    assert merged.outcome is OutcomeKind.CRASHED
    assert merged.cut_short is False
    assert "streamed spend $0.0032" in merged.reasons[0]
    assert "cap $0.003" in merged.reasons[0]
    assert "4 model call(s)" in merged.reasons[0]
    assert merged.reasons[1:] == ["claude: cut short"]


# ------------------------------------------------------------------------------- stall


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _quiet_detector(tmp_path: Path, clock: Clock, **kw: Any) -> StallDetector:
    log = tmp_path / "job.log"
    log.write_text("header\n")
    tree = tmp_path / "wt"
    tree.mkdir(exist_ok=True)
    return StallDetector(log, [tree], 3.0, scan_interval_s=0.5, clock=clock, **kw)


def _run_busy_silent_agent(detector: StallDetector, clock: Clock, meter: list[int]) -> str | None:
    """Six model calls 2 s apart (12 s in all, a stall timeout of 3 s), with no output and
    no file change: only the model answers show the agent works."""
    for _ in range(6):
        for _ in range(4):  # polls while the model thinks
            clock.now += 0.5
            fired = detector()
            if fired:
                return fired
        meter[0] += 1  # an answer: a model call and its tokens
    return None


def test_model_answers_keep_a_busy_silent_agent_alive(tmp_path: Path) -> None:
    clock = Clock()
    calls = [0]
    detector = _quiet_detector(tmp_path, clock, activity=[lambda: (calls[0], 100 * calls[0])])
    assert _run_busy_silent_agent(detector, clock, calls) is None
    assert calls[0] == 6


def test_without_the_meters_signal_the_same_agent_is_killed(tmp_path: Path) -> None:
    clock = Clock()
    calls = [0]
    detector = _quiet_detector(tmp_path, clock)
    fired = _run_busy_silent_agent(detector, clock, calls)
    assert is_stall(fired)
    assert calls[0] == 1  # killed after its first answer, 3 s into a 12 s run


def test_a_stall_while_the_model_owes_an_answer_is_a_model_hang(tmp_path: Path) -> None:
    clock = Clock()
    waiting = [True]
    detector = _quiet_detector(tmp_path, clock, waiting_on_model=lambda: waiting[0])
    clock.now += 3.5
    fired = detector()
    assert fired == f"stalled: no output and no file change for 3s: {MODEL_HANG}"
    assert is_stall(fired)
    assert model_hang(fired)
    # The same stall while a tool runs is the agent's.
    waiting[0] = False
    detector = _quiet_detector(tmp_path, clock, waiting_on_model=lambda: waiting[0])
    clock.now += 3.5
    fired = detector()
    assert is_stall(fired)
    assert not model_hang(fired)
    assert not model_hang(None)
    assert not model_hang(f"cancelled: {MODEL_HANG}")


# ------------------------------------------------------------------------------- plans


def _plan_request(tmp_path: Path, task_left_usd: float | None) -> PlanRequest:
    return PlanRequest(
        backend="x",
        role="developer",
        stage=Stage.DEVELOPMENT,
        task_key="DEMO-1",
        prompt="--help: a prompt that looks like an option",
        worktree=tmp_path / "wt",
        artifact_dir=tmp_path / "tasks" / "DEMO-1",
        artifact="10-dev-report.md",
        job_home=tmp_path / "home-1",
        settings=load_settings(home=tmp_path / "home"),
        task_left_usd=task_left_usd,
    )


def test_claude_plan_streams_and_caps_itself_at_the_tasks_budget_left(tmp_path: Path) -> None:
    argv = plan_claude(_plan_request(tmp_path, 2.5)).argv
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    assert "--verbose" in argv  # stream-json needs it
    assert "--include-partial-messages" in argv  # message_start/message_delta usage
    assert argv[argv.index("--max-budget-usd") + 1] == "2.5"
    assert argv[-2:] == ["--", "--help: a prompt that looks like an option"]
    # A fraction of a cent stays above 0 (the CLI refuses 0); no budget, no flag.
    tiny = plan_claude(_plan_request(tmp_path, 1e-9)).argv
    assert float(tiny[tiny.index("--max-budget-usd") + 1]) == 1e-9
    for left in (None, 0.0, -1.0):
        assert "--max-budget-usd" not in plan_claude(_plan_request(tmp_path, left)).argv


def test_codex_plan_keeps_its_rollout_file(tmp_path: Path) -> None:
    argv = plan_codex(_plan_request(tmp_path, None)).argv
    assert "--ephemeral" not in argv  # the rollout file is what the meter reads
    assert argv[1:3] == ["exec", "--json"]
