"""The LLM backends' pure parts: plans (argv, env, files), parsers on recorded real output,
reading a run's output from the job log, and stall detection on a fake clock.

The recorded outputs are what the pinned CLIs (Claude Code 2.1.330, Codex 0.169.0, aider
0.86.2) printed against the fake model server, trimmed to the fields the parsers read plus
some they must ignore.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from parser_properties.props_domain import outcome_of

from orchestrator.agents import aider, claude, codex
from orchestrator.agents.common import (
    MAX_COST_USD,
    MAX_TOKENS,
    PlanError,
    PlanRequest,
    run_output,
    tool_error_of,
)
from orchestrator.agents.stall import STALL_PREFIX, StallDetector, tree_signature
from orchestrator.config import load_settings
from orchestrator.domain.faults import FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage
from orchestrator.proc_group import Outcome


def ended(
    exit_code: int | None = 0,
    *,
    timed_out: bool = False,
    cancelled: bool = False,
    stop_reason: str | None = None,
    signal: int | None = None,
    start_error: str | None = None,
) -> Outcome:
    by_us = timed_out or cancelled
    return outcome_of(
        exit_code, signal, timed_out, cancelled, by_us, False, start_error, stop_reason
    )


STALLED = ended(None, cancelled=True, signal=15, stop_reason=f"{STALL_PREFIX} no output for 3s")


def claude_result(**fields: Any) -> str:
    base: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 3,
        "result": "All done.",
        "total_cost_usd": 0.0024,
        "usage": {
            "input_tokens": 300,
            "cache_creation_input_tokens": 7,
            "cache_read_input_tokens": 5,
            "output_tokens": 60,
        },
        "permission_denials": [],
        "terminal_reason": "completed",
        "api_error_status": None,
    }
    base.update(fields)
    return json.dumps(base)


# --------------------------------------------------------------------------- claude parse


def test_claude_success() -> None:
    r = claude.parse_claude(ended(0), "warning on stderr\n" + claude_result())
    assert r.outcome is OutcomeKind.COMPLETED
    assert (r.cost_usd, r.tokens_in, r.tokens_out) == (0.0024, 312, 60)


def test_claude_api_error_real_shape() -> None:
    # Recorded: HTTP 500 from the server; the CLI exits 1 with subtype "success"(!) and
    # is_error true.
    out = claude_result(
        subtype="success",
        is_error=True,
        api_error_status=500,
        terminal_reason="api_error",
        total_cost_usd=0,
        result="API Error: 500 scripted server error.",
    )
    r = claude.parse_claude(ended(1), out)
    assert r.outcome is OutcomeKind.CRASHED
    assert "API error (HTTP 500, outage)" in r.reasons[0]
    assert r.api_fault is not None
    assert r.api_fault.kind is FaultKind.OUTAGE
    assert r.cost_usd == 0.0


# Recorded from Claude Code 2.1.330 against the fake server, trimmed: --max-turns 2 while
# the model only ever asked for another Write; and --max-budget-usd 0.001. Both exit 1.
CLAUDE_MAX_TURNS = json.dumps(
    {
        "type": "result",
        "subtype": "error_max_turns",
        "is_error": True,
        "num_turns": 3,
        "stop_reason": "tool_use",
        "total_cost_usd": 0.0016,
        "usage": {
            "input_tokens": 200,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 40,
        },
        "permission_denials": [],
        "terminal_reason": "max_turns",
        "errors": ["Reached maximum number of turns (2)"],
    }
)
CLAUDE_BUDGET_CAP = json.dumps(
    {
        "type": "result",
        "subtype": "error_max_budget_usd",
        "is_error": True,
        "num_turns": 2,
        "total_cost_usd": 0.0016,
        "usage": {"input_tokens": 100, "output_tokens": 20},
        "permission_denials": [],
        "terminal_reason": "budget_exhausted",
        "errors": ["Reached maximum budget ($0.001)"],
    }
)


def test_claude_max_turns_is_a_failed_attempt_not_a_tool_error() -> None:
    # Issue 16: max turns was `timeout`, an infra retry of the identical prompt.
    r = claude.parse_claude(ended(1), CLAUDE_MAX_TURNS, max_turns=2)
    assert r.outcome is OutcomeKind.COMPLETED
    assert r.cut_short
    assert "max turns reached (--max-turns 2) after 3 turn(s)" in r.reasons[0]
    assert "Reached maximum number of turns (2)" in r.reasons
    assert (r.cost_usd, r.tokens_in, r.tokens_out) == (0.0016, 200, 40)


def test_claude_budget_cap_is_a_failed_attempt_not_a_tool_error() -> None:
    r = claude.parse_claude(ended(1), CLAUDE_BUDGET_CAP, max_turns=50)
    assert r.outcome is OutcomeKind.COMPLETED
    assert r.cut_short
    assert "budget cap (--max-budget-usd) reached" in r.reasons[0]
    assert "--max-turns" not in r.reasons[0]
    assert "Reached maximum budget ($0.001)" in r.reasons


def test_claude_cut_short_still_names_its_denials() -> None:
    # An agent denied its tools may loop until its turns run out: the denial is the news.
    denial = {"tool_name": "Bash", "tool_input": {"command": "make test"}}
    out = claude_result(
        subtype="error_max_turns", is_error=True, permission_denials=[denial], errors=["x"]
    )
    r = claude.parse_claude(ended(1), out, permission_mode="acceptEdits")
    assert r.cut_short
    assert any("denied 1 tool call(s)" in x and "Bash(make test)" in x for x in r.reasons)


def test_only_the_clis_own_limits_cut_a_run_short() -> None:
    assert not claude.parse_claude(ended(0), claude_result()).cut_short
    api = claude_result(subtype="success", is_error=True, api_error_status=529)
    assert not claude.parse_claude(ended(1), api).cut_short
    other = claude.parse_claude(ended(1), claude_result(subtype="error_during_execution"))
    assert (other.outcome, other.cut_short) == (OutcomeKind.CRASHED, False)


def test_claude_permission_denial_with_exit_zero_is_a_tool_error() -> None:
    denial = {
        "tool_name": "Bash",
        "tool_use_id": "toolu_1",
        "tool_input": {"command": 'python3 -c "print(42)"', "description": "x"},
    }
    r = claude.parse_claude(
        ended(0), claude_result(permission_denials=[denial]), permission_mode="acceptEdits"
    )
    assert r.outcome is OutcomeKind.CRASHED
    assert "denied 1 tool call(s) by permission mode acceptEdits" in r.reasons[0]
    assert 'Bash(python3 -c "print(42)")' in r.reasons[0]


def test_claude_other_error_subtype() -> None:
    r = claude.parse_claude(ended(1), claude_result(subtype="error_during_execution"))
    assert r.outcome is OutcomeKind.CRASHED
    assert "error_during_execution" in r.reasons[0]


@pytest.mark.parametrize(
    "output",
    ["", "Error: something broke\n", '{"type": "assistant"}\n', "{not json"],
)
def test_claude_without_result_fails_closed(output: str) -> None:
    r = claude.parse_claude(ended(0), output)
    assert r.outcome is OutcomeKind.CRASHED
    assert "no result JSON" in r.reasons[0]


def test_claude_exit_code_disagreeing_with_success_fails_closed() -> None:
    r = claude.parse_claude(ended(3), claude_result())
    assert r.outcome is OutcomeKind.CRASHED


def test_claude_last_result_wins() -> None:
    out = claude_result(is_error=True, api_error_status=529) + "\n" + claude_result()
    assert claude.parse_claude(ended(0), out).outcome is OutcomeKind.COMPLETED


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (STALLED, OutcomeKind.TIMEOUT),
        (ended(None, timed_out=True, signal=15, stop_reason="timeout"), OutcomeKind.TIMEOUT),
        (ended(None, cancelled=True, signal=15, stop_reason="cancelled"), OutcomeKind.CRASHED),
        (ended(None, signal=9), OutcomeKind.CRASHED),
        (ended(None, start_error="FileNotFoundError: claude"), OutcomeKind.NOT_STARTED),
    ],
)
def test_process_ends_win_over_any_output(outcome: Outcome, kind: OutcomeKind) -> None:
    # Even a success line in the output cannot turn a killed run into a completed one.
    assert claude.parse_claude(outcome, claude_result()).outcome is kind
    assert (
        codex.parse_codex(outcome, CODEX_OK, price_in_per_mtok=1, price_out_per_mtok=1).outcome
        is kind
    )


def test_stall_reason_is_named() -> None:
    r = tool_error_of(STALLED, "claude")
    assert r is not None
    assert r.reasons[0].startswith("claude: stalled:")
    assert tool_error_of(ended(0), "claude") is None
    assert tool_error_of(ended(2), "claude") is None


# --------------------------------------------------------------------------- codex parse

CODEX_OK = "\n".join(
    [
        '{"type":"thread.started","thread_id":"t1"}',
        '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model '
        'metadata for `gpt-5.1-codex` not found. Defaulting to fallback metadata"}}',
        '{"type":"turn.started"}',
        '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Hi"}}',
        '{"type":"turn.completed","usage":{"input_tokens":300,"cached_input_tokens":0,'
        '"cache_write_input_tokens":0,"output_tokens":60,"reasoning_output_tokens":0}}',
        "Reading additional input from stdin...",
    ]
)
CODEX_FAILED = "\n".join(
    [
        '{"type":"thread.started","thread_id":"t2"}',
        '{"type":"turn.started"}',
        '{"type":"error","message":"stream disconnected before completion: scripted overload"}',
        '{"type":"turn.failed","error":{"message":"stream disconnected before completion: '
        'scripted overload"}}',
    ]
)
CODEX_UNREACHABLE = "\n".join(
    [
        '{"type":"turn.started"}',
        '{"type":"error","message":"Reconnecting... waiting for network (Connection failed: '
        'error sending request)"}',
    ]
)


# Recorded from Codex 0.169.0 with its own sandbox on (ORCH_SANDBOX=off,
# ORCH_CODEX_SANDBOX=workspace-write) and its home under $TMPDIR: it links no helper, and the
# model's command came back "bwrap: execvp codex-linux-sandbox: No such file or directory",
# which --json does not show. Trimmed.
CODEX_HELPERS_REFUSED = "\n".join(
    [
        "WARNING: proceeding, even though we could not create PATH aliases: Refusing to "
        'create helper binaries under temporary dir "/tmp" (codex_home: '
        'AbsolutePathBuf("/tmp/t/home/tasks/DEMO-1/runs/1-home/codex"))',
        "Reading additional input from stdin...",
        '{"type":"thread.started","thread_id":"t3"}',
        '{"type":"turn.started"}',
        '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"Done."}}',
        '{"type":"turn.completed","usage":{"input_tokens":200,"cached_input_tokens":0,'
        '"output_tokens":40,"reasoning_output_tokens":0}}',
    ]
)
# A command that ran (no sandbox of codex's) and printed sandbox words of its own.
CODEX_COMMAND_SAYS_SANDBOX = "\n".join(
    [
        '{"type":"turn.started"}',
        '{"type":"item.completed","item":{"id":"item_0","type":"command_execution",'
        '"command":"/bin/bash -lc \'grep -r sandbox src\'","aggregated_output":'
        '"bwrap: execvp codex-linux-sandbox: No such file or directory\\nsandbox error: x\\n",'
        '"exit_code":1,"status":"failed"}}',
        '{"type":"turn.completed","usage":{"input_tokens":100,"output_tokens":20}}',
    ]
)


def parse_codex(output: str, mode: str, outcome: Outcome | None = None) -> Any:
    return codex.parse_codex(
        ended(0) if outcome is None else outcome,
        output,
        price_in_per_mtok=1,
        price_out_per_mtok=1,
        sandbox_mode=mode,
    )


def test_codex_own_sandbox_that_cannot_start_is_a_tool_error() -> None:
    r = parse_codex(CODEX_HELPERS_REFUSED, "workspace-write")
    assert r.outcome is OutcomeKind.CRASHED
    assert "its own sandbox could not start (sandbox_mode workspace-write)" in r.reasons[0]
    assert "could not create PATH aliases" in r.reasons[0]
    assert "ORCH_SANDBOX=on" in r.reasons[1]
    assert (r.tokens_in, r.tokens_out) == (200, 40)  # what it cost is still counted


def test_codex_helper_warning_is_harmless_without_its_sandbox() -> None:
    # Inside ours codex runs with sandbox_mode danger-full-access: no helper is needed.
    assert parse_codex(CODEX_HELPERS_REFUSED, "danger-full-access").outcome is (
        OutcomeKind.COMPLETED
    )


@pytest.mark.parametrize("mode", ["workspace-write", "danger-full-access"])
def test_codex_reads_no_commands_output_for_sandbox_words(mode: str) -> None:
    # A repo about sandboxes (this one) prints these words; only codex's own lines count.
    assert parse_codex(CODEX_COMMAND_SAYS_SANDBOX, mode).outcome is OutcomeKind.COMPLETED


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"error","message":"sandbox error: bubblewrap is unavailable"}',
        '{"type":"item.completed","item":{"id":"i","type":"error",'
        '"message":"codex-linux-sandbox was required but not provided"}}',
        "bwrap: Can't mount proc on /newroot/proc: Operation not permitted",
    ],
)
def test_codex_sandbox_failure_in_its_own_words_is_a_tool_error(line: str) -> None:
    out = f"{line}\n{CODEX_OK}"
    r = parse_codex(out, "danger-full-access")
    assert r.outcome is OutcomeKind.CRASHED
    assert r.reasons[0].startswith("codex: a sandbox could not start: ")
    killed = ended(None, timed_out=True, signal=15, stop_reason="timeout after 8s")
    r = parse_codex(out, "workspace-write", killed)
    assert r.outcome is OutcomeKind.TIMEOUT  # how it ended first, the sandbox as the why
    assert any("its own sandbox could not start" in x for x in r.reasons)


def test_codex_success_and_cost_from_the_price_table() -> None:
    r = codex.parse_codex(ended(0), CODEX_OK, price_in_per_mtok=2.0, price_out_per_mtok=10.0)
    assert r.outcome is OutcomeKind.COMPLETED
    assert (r.tokens_in, r.tokens_out) == (300, 60)
    assert r.cost_usd == pytest.approx((300 * 2.0 + 60 * 10.0) / 1e6)


def test_codex_turn_failed_is_a_tool_error() -> None:
    r = codex.parse_codex(ended(1), CODEX_FAILED, price_in_per_mtok=1, price_out_per_mtok=1)
    assert r.outcome is OutcomeKind.CRASHED
    assert "scripted overload" in r.reasons[1]
    assert r.api_fault is not None
    assert r.api_fault.kind is FaultKind.OUTAGE
    assert r.cost_usd is None


def test_codex_without_turn_completed_fails_closed() -> None:
    out = '{"type":"thread.started","thread_id":"t"}\n{"type":"turn.started"}'
    r = codex.parse_codex(ended(0), out, price_in_per_mtok=1, price_out_per_mtok=1)
    assert r.outcome is OutcomeKind.CRASHED
    assert "without turn.completed" in r.reasons[0]


def test_codex_unreachable_server_is_named_when_killed() -> None:
    killed = ended(None, timed_out=True, signal=15, stop_reason="timeout after 8s")
    r = codex.parse_codex(killed, CODEX_UNREACHABLE, price_in_per_mtok=1, price_out_per_mtok=1)
    assert r.outcome is OutcomeKind.TIMEOUT
    assert any("could not reach the model server" in x for x in r.reasons)


def test_codex_turns_add_up() -> None:
    two = CODEX_OK + "\n" + CODEX_OK
    r = codex.parse_codex(ended(0), two, price_in_per_mtok=0, price_out_per_mtok=0)
    assert (r.tokens_in, r.tokens_out, r.cost_usd) == (600, 120, 0.0)


# --------------------------------------------------------------------------- aider parse


def analytics(*events: dict[str, Any]) -> str:
    return "\n".join(json.dumps({"event": e.pop("event"), "properties": e}) for e in events)


SEND = {"event": "message_send", "prompt_tokens": 100, "completion_tokens": 20, "cost": 0.01}


def test_aider_message_and_diff_is_done() -> None:
    log = analytics({"event": "launched"}, dict(SEND), dict(SEND))
    p = aider.parse_aider(ended(0), log, has_diff=True, diff_detail="1 file changed")
    assert (p.result.outcome, p.dev_status) == (OutcomeKind.COMPLETED, "DONE")
    assert (p.result.tokens_in, p.result.tokens_out) == (200, 40)
    assert p.result.cost_usd == pytest.approx(0.02)


def test_aider_message_without_diff_is_a_failed_report() -> None:
    p = aider.parse_aider(ended(0), analytics(dict(SEND)), has_diff=False)
    assert (p.result.outcome, p.dev_status) == (OutcomeKind.COMPLETED, "FAILED")


def test_aider_exit_zero_without_message_send_is_a_tool_error() -> None:
    log = analytics({"event": "launched"}, {"event": "message_send_starting"})
    p = aider.parse_aider(ended(0), log, has_diff=True)
    assert p.result.outcome is OutcomeKind.CRASHED
    assert p.dev_status is None
    assert "no message_send" in p.result.reasons[0]


# Recorded from aider 0.86.2 against the fake server: the model asked to see app.py, aider
# added it and asked again, and the server answered 529 "Overloaded" every time (aider's own
# backoff, about a minute). aider then exits 0. Its output, and its analytics log (trimmed).
AIDER_OVERLOADED_OUTPUT = "\n".join(
    [
        "Aider v0.86.2",
        "Model: openai/gpt-fake with whole edit format",
        "To do this I need to see app.py first.",
        "Tokens: 100 sent, 20 received.",
        "app.py",
        *(
            line
            for delay in ("0.2", "0.5", "1.0", "2.0", "4.0", "8.0", "16.0", "32.0")
            for line in (
                "litellm.APIError: APIError: OpenAIException - Overloaded",
                f"Retrying in {delay} seconds...",
            )
        ),
        "litellm.APIError: APIError: OpenAIException - Overloaded",
    ]
)
AIDER_OVERLOADED_ANALYTICS = analytics(
    {"event": "launched"},
    {"event": "message_send_starting"},
    {**SEND, "cost": 0},
    {"event": "message_send_starting"},
    {"event": "exit", "reason": "Completed --message"},
)


@pytest.mark.parametrize("has_diff", [False, True])
def test_aider_model_error_after_a_first_answer_is_a_tool_error(has_diff: bool) -> None:
    # Issue 16: this was `completed` with dev_status FAILED ("changed nothing"): a developer
    # retry spent, and the 529 in no reason.
    p = aider.parse_aider(
        ended(0), AIDER_OVERLOADED_ANALYTICS, has_diff=has_diff, output=AIDER_OVERLOADED_OUTPUT
    )
    assert p.result.outcome is OutcomeKind.CRASHED
    assert p.dev_status is None
    assert "the model failed after 1 answer(s)" in p.result.reasons[0]
    assert (
        "litellm.APIError: APIError: OpenAIException - Overloaded (after 8 retries)"
        in p.result.reasons[0]
    )
    assert (p.result.tokens_in, p.result.tokens_out) == (100, 20)


def test_aider_unanswered_request_without_an_error_line_is_still_a_tool_error() -> None:
    log = analytics(dict(SEND), {"event": "message_send_starting"})
    p = aider.parse_aider(ended(0), log, has_diff=False, output="")
    assert p.result.outcome is OutcomeKind.CRASHED
    assert "its last request got no answer" in p.result.reasons[0]


def test_aider_error_it_recovered_from_then_no_diff_is_still_a_failed_report() -> None:
    # Every request answered (one after a retry): the model did its part, the attempt
    # changed nothing, and that stays the code's FAIL.
    log = analytics(
        {"event": "message_send_starting"},
        dict(SEND),
        {"event": "message_send_starting"},
        dict(SEND),
    )
    out = "litellm.APIError: APIError: OpenAIException - Overloaded\nRetrying in 0.2 seconds..."
    p = aider.parse_aider(ended(0), log, has_diff=False, output=out)
    assert (p.result.outcome, p.dev_status) == (OutcomeKind.COMPLETED, "FAILED")


def test_aider_without_any_answer_quotes_the_model_error() -> None:
    log = analytics({"event": "launched"}, {"event": "message_send_starting"})
    out = "litellm.AuthenticationError: AuthenticationError: OpenAIException - bad key"
    p = aider.parse_aider(ended(0), log, has_diff=False, output=out)
    assert p.result.outcome is OutcomeKind.CRASHED
    assert "no message_send" in p.result.reasons[0]
    assert "litellm.AuthenticationError" in p.result.reasons[0]


def test_aider_unanswered_reads_the_events_in_order() -> None:
    starting = {"event": "message_send_starting"}
    assert aider.unanswered(analytics(dict(starting)))
    assert not aider.unanswered(analytics(dict(starting), dict(SEND)))
    assert aider.unanswered(analytics(dict(starting), dict(SEND), dict(starting)))
    assert not aider.unanswered(None)
    assert aider.model_error("Tokens: 100 sent\nall fine") is None


def test_aider_without_analytics_log_fails_closed() -> None:
    p = aider.parse_aider(ended(0), None, has_diff=True)
    assert p.result.outcome is OutcomeKind.CRASHED


def test_aider_killed_is_the_tool_error() -> None:
    p = aider.parse_aider(STALLED, analytics(dict(SEND)), has_diff=True)
    assert p.result.outcome is OutcomeKind.TIMEOUT
    assert p.dev_status is None


# --------------------------------------------------------------------------- plans


def request(tmp_path: Path, **settings: Any) -> PlanRequest:
    st = load_settings(home=tmp_path / "home", **settings)
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
        settings=st,
        env={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"},
    )


def test_claude_plan(tmp_path: Path) -> None:
    req = request(tmp_path, claude_command="npx claude", claude_max_turns=7)
    plan = claude.plan_claude(req)
    a = plan.argv
    assert a[:3] == ["npx", "claude", "-p"]
    assert a[-2:] == ["--", req.prompt]  # after --: never an option, never an --add-dir value
    for flag in ("--no-session-persistence", "--output-format", "--max-turns"):
        assert flag in a
    assert a[a.index("--output-format") + 1] == "stream-json"
    assert a[a.index("--max-turns") + 1] == "7"
    assert a[a.index("--permission-mode") + 1] == "acceptEdits"
    assert a[a.index("--add-dir") + 1] == str(req.artifact_dir)
    assert plan.env["HOME"] == str(req.job_home)
    assert plan.env["CLAUDE_CONFIG_DIR"].startswith(str(req.job_home))
    assert plan.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert plan.env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert "IS_SANDBOX" not in plan.env


def test_claude_skip_permissions_as_root_sets_is_sandbox(tmp_path: Path) -> None:
    req = request(tmp_path, claude_permission_mode="dangerously-skip-permissions")
    root = claude.plan_claude(replace(req, is_root=True))
    assert "--dangerously-skip-permissions" in root.argv
    assert "--permission-mode" not in root.argv
    assert root.env["IS_SANDBOX"] == "1"
    assert "IS_SANDBOX" not in claude.plan_claude(req).env  # not root: not needed


def test_bad_permission_mode_is_refused_at_load(tmp_path: Path) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="ORCH_CLAUDE_PERMISSION_MODE"):
        load_settings(home=tmp_path, claude_permission_mode="yolo")


def test_codex_plan_and_config(tmp_path: Path) -> None:
    req = request(tmp_path, codex_model="gpt-x", codex_max_retries=1)
    plan = codex.plan_codex(req)
    # Not --ephemeral: its session file is where each model call's usage streams.
    assert plan.argv[:4] == ["codex", "exec", "--json", "--strict-config"]
    assert plan.argv[-2:] == ["--", req.prompt]
    codex_home = Path(plan.env["CODEX_HOME"])
    assert codex_home.parent == req.job_home
    config = tomllib.loads(plan.files[codex_home / "config.toml"])
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:1/v1"  # the repo's OPENAI_BASE_URL wins
    assert provider["wire_api"] == "responses"
    assert provider["env_key"] == "OPENAI_API_KEY"
    assert provider["request_max_retries"] == provider["stream_max_retries"] == 1
    assert config["model"] == "gpt-x"
    assert config["approval_policy"] == "never"
    assert config["features"] == {"plugins": False}
    assert config["analytics"] == {"enabled": False}
    # Inside our sandbox (the default) Codex's own is off: it cannot start nested.
    assert config["sandbox_mode"] == "danger-full-access"
    assert "sandbox_workspace_write" not in config


def test_codex_keeps_its_own_sandbox_when_ours_is_off(tmp_path: Path) -> None:
    req = request(tmp_path, sandbox=False)
    config = tomllib.loads(codex.codex_config_toml(req))
    assert config["sandbox_mode"] == "workspace-write"
    assert config["sandbox_workspace_write"]["writable_roots"] == [str(req.artifact_dir)]


def test_codex_config_escapes_strings(tmp_path: Path) -> None:
    req = request(tmp_path, codex_model='we"ird\\model')
    text = codex.codex_config_toml(replace(req, env={}))
    config = tomllib.loads(text)
    assert config["model"] == 'we"ird\\model'
    assert config["model_providers"]["orchestrator"]["base_url"] == req.settings.codex_base_url


def test_aider_plan(tmp_path: Path) -> None:
    req = request(tmp_path, aider_model="sonnet")
    plan = aider.plan_aider(req)
    a = plan.argv
    assert a[1] == f"--message={req.prompt}"
    for flag in (
        "--yes-always",
        "--no-analytics",
        "--no-check-update",
        "--no-gitignore",
        "--no-stream",
        "--no-auto-commits",
        "--no-show-release-notes",
    ):
        assert flag in a
    assert a[a.index("--analytics-log") + 1] == str(plan.side_output)
    for flag in ("--input-history-file", "--chat-history-file", "--llm-history-file"):
        assert Path(a[a.index(flag) + 1]).parent == req.job_home  # outside the repo
    assert a[a.index("--model") + 1] == "sonnet"
    assert plan.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    cache = req.job_home.joinpath(*aider.MODEL_INFO_CACHE)
    assert json.loads(plan.files[cache])  # non-empty: aider will not download its own
    # A git identity of its own, so aider never writes the repository's .git/config.
    assert "[user]" in plan.files[req.job_home / ".gitconfig"]
    assert "GIT_INDEX_FILE" not in plan.env  # no repository at req.worktree here


def test_aider_stages_new_files_outside_the_read_only_git(tmp_path: Path) -> None:
    req = request(tmp_path)
    objects = req.worktree / ".git" / "objects"
    objects.mkdir(parents=True)
    plan = aider.plan_aider(req)
    store = Path(plan.env["GIT_OBJECT_DIRECTORY"])
    assert store.is_relative_to(req.job_home)
    assert Path(plan.env["GIT_INDEX_FILE"]).is_relative_to(req.job_home)
    assert plan.files[store / "info" / "alternates"] == f"{objects}\n"


def test_aider_refuses_roles_it_cannot_report_for(tmp_path: Path) -> None:
    req = request(tmp_path)
    with pytest.raises(PlanError, match="developer role"):
        aider.plan_aider(replace(req, role="analyst"))


def test_unsplittable_command_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="ORCH_CLAUDE_COMMAND"):
        claude.plan_claude(request(tmp_path, claude_command="'unclosed"))


# --------------------------------------------------------------------------- the job log


def test_run_output_reads_only_this_runs_section(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    first = (
        '===== orchestrator run =====\nargv: ["claude", "{\\"type\\": \\"result\\"}"]\n'
        "----- output -----\n" + claude_result(is_error=True, api_error_status=500) + "\n"
        "[orchestrator] end: exit_code=1\n"
    )
    log.write_text(first)
    start = log.stat().st_size
    with log.open("a") as fh:
        fh.write(
            '===== orchestrator run =====\nargv: ["claude"]\nenv:\n  X=1\n'
            "----- output -----\nsome stderr\n" + claude_result() + "\n"
            "[orchestrator] end: exit_code=0\n"
        )
    out = run_output(log, start)
    assert "[orchestrator]" not in out
    assert "argv" not in out
    assert claude.parse_claude(ended(0), out).outcome is OutcomeKind.COMPLETED
    assert '"api_error_status": 500' not in out  # the earlier run is not this one's
    assert '"api_error_status": 500' in run_output(log, 0)
    assert run_output(tmp_path / "missing.log", 0) == ""


# --------------------------------------------------------------------------- stall


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stall_fires_only_after_the_timeout_without_activity(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    wt.mkdir()
    log = tmp_path / "job.log"
    log.write_text("header\n")
    clock = Clock()
    stall = StallDetector(log, [wt], 60, scan_interval_s=1, clock=clock)
    clock.now += 59
    assert stall() is None
    clock.now += 1
    reason = stall()
    assert reason == f"{STALL_PREFIX} no output and no file change for 60s"
    assert stall.fired == reason


def test_stall_output_and_file_changes_are_activity(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    (wt / "pkg").mkdir(parents=True)
    log = tmp_path / "job.log"
    log.write_text("header\n")
    clock = Clock()
    stall = StallDetector(log, [wt], 10, scan_interval_s=1, clock=clock)
    clock.now += 9
    with log.open("a") as fh:
        fh.write("output\n")
    assert stall() is None  # the log grew: activity at t+9
    clock.now += 9
    (wt / "pkg" / "new.py").write_text("x = 1\n")
    assert stall() is None  # a new file: activity at t+18
    clock.now += 9
    assert stall() is None  # 9s idle
    clock.now += 1
    assert stall() is not None  # 10s idle


def test_stall_ignores_git_and_is_bounded(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    (wt / ".git").mkdir(parents=True)
    before = tree_signature([wt])
    (wt / ".git" / "index").write_text("changed")
    assert tree_signature([wt]) == before
    for i in range(50):
        (wt / f"f{i}").write_text("x")
    assert tree_signature([wt], max_entries=10)[0] == 10
    assert tree_signature([tmp_path / "missing"]) == (0, 0, 0)


def test_stall_scans_no_more_often_than_its_interval(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("")
    clock = Clock()
    stall = StallDetector(log, [], 5, scan_interval_s=2, clock=clock)
    clock.now += 6
    assert stall() is not None  # a scan was due
    stall2 = StallDetector(log, [], 5, scan_interval_s=100, clock=clock)
    clock.now += 50
    assert stall2() is None  # idle 50s, but no scan is due yet: nothing decided


# --------------------------------------------------------------------------- absurd figures

# An integral float JSON allows (found by bench/parsers_fuzz.py: codex's cost came out inf).
HUGE = 8.98846567431158e307


def test_absurd_token_claims_are_capped_and_the_cost_stays_finite() -> None:
    out = f'{{"type": "turn.completed", "usage": {{"input_tokens": {HUGE}, "output_tokens": 1}}}}'
    r = codex.parse_codex(ended(0), out + "\n" + out, price_in_per_mtok=2, price_out_per_mtok=0)
    assert r.tokens_in == MAX_TOKENS
    assert r.cost_usd == pytest.approx(MAX_TOKENS * 2 / 1_000_000)

    usage = {"input_tokens": 10**30, "cache_read_input_tokens": MAX_TOKENS, "output_tokens": -5}
    r = claude.parse_claude(ended(0), claude_result(usage=usage))
    assert (r.tokens_in, r.tokens_out) == (MAX_TOKENS, 0)

    send = {**SEND, "prompt_tokens": HUGE, "cost": 1.7e308}
    p = aider.parse_aider(ended(0), analytics(dict(send), dict(send)), has_diff=True)
    assert p.result.tokens_in == MAX_TOKENS
    assert p.result.cost_usd == MAX_COST_USD


def test_absurd_cost_claims_are_counted_as_the_most_a_job_can_cost() -> None:
    # 1e308 is a finite float, but two of them summed by PostgreSQL overflow ("value out
    # of range"): every spend total, admission and later job's end then failed for good.
    r = claude.parse_claude(ended(0), claude_result(total_cost_usd=1e308))
    assert r.cost_usd == MAX_COST_USD
    r = claude.parse_claude(ended(0), claude_result(total_cost_usd=MAX_COST_USD / 2))
    assert r.cost_usd == MAX_COST_USD / 2


# ------------------------------------------------------------------ model-API faults, by kind
# Recorded from the pinned CLIs against the fake server answering every request with the
# status (0: nothing listening). Issue 16: every one of these was a generic "the model
# server failed" infra retry, 401 and 400 included.

CLAUDE_FAULTS = {
    401: ("Failed to authenticate. API Error: 401 scripted 401 message", FaultKind.CREDENTIALS),
    403: ("API Error: 403 scripted 403 message", FaultKind.CREDENTIALS),
    400: ("API Error: 400 scripted 400 message", FaultKind.REQUEST),
    529: ("API Error: 529 scripted 529 message. This is a server-side issue", FaultKind.OUTAGE),
    429: ("API Error: 429 scripted 429 message", FaultKind.OUTAGE),
    None: (
        "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)",
        FaultKind.OUTAGE,
    ),
}


@pytest.mark.parametrize("status", list(CLAUDE_FAULTS))
def test_claude_api_fault_kinds(status: int | None) -> None:
    said, kind = CLAUDE_FAULTS[status]
    out = claude_result(
        is_error=True,
        api_error_status=status,
        terminal_reason="api_error",
        total_cost_usd=0,
        result=said,
    )
    r = claude.parse_claude(ended(1), out)
    assert r.outcome is OutcomeKind.CRASHED
    assert r.api_fault is not None
    assert (r.api_fault.kind, r.api_fault.status) == (kind, status)
    assert any("scripted" in x or "ECONNREFUSED" in x for x in r.reasons), r.reasons


def test_claude_fault_carries_the_clis_last_retry_delay() -> None:
    # Recorded (CLAUDE_CODE_MAX_RETRIES=1, the server sent 529 with retry-after: 2): the
    # CLI waited 2412 ms before its retry; the breaker waits at least as long.
    retry = json.dumps(
        {
            "type": "system",
            "subtype": "api_retry",
            "attempt": 1,
            "max_retries": 1,
            "retry_delay_ms": 2412,
            "error_status": 529,
            "error": "overloaded",
        }
    )
    out = claude_result(
        is_error=True, api_error_status=529, terminal_reason="api_error", result="API Error: 529"
    )
    r = claude.parse_claude(ended(1), retry + "\n" + out)
    assert r.api_fault is not None
    assert r.api_fault.retry_after_s == pytest.approx(2.412)


def test_claude_fault_keeps_a_retry_delay_longer_than_the_cost_cap() -> None:
    # A retry-after of an hour (a quota's reset) is read as an hour: the breaker probes
    # never sooner than the server said (docs/reliability.md). A delay is no cost: the cap
    # on a claimed cost (MAX_COST_USD, read as milliseconds: 1000 s) does not bound it.
    retry = json.dumps({"type": "system", "subtype": "api_retry", "retry_delay_ms": 3_600_000})
    out = claude_result(
        is_error=True, api_error_status=429, terminal_reason="api_error", result="API Error: 429"
    )
    r = claude.parse_claude(ended(1), retry + "\n" + out)
    assert r.api_fault is not None
    assert r.api_fault.retry_after_s == pytest.approx(3600.0)


def test_claude_error_that_is_no_api_error_has_no_fault() -> None:
    r = claude.parse_claude(ended(1), claude_result(is_error=True, terminal_reason="other"))
    assert r.outcome is OutcomeKind.CRASHED
    assert r.api_fault is None


def codex_failed(message: str) -> str:
    return "\n".join(
        [
            '{"type":"turn.started"}',
            json.dumps({"type": "error", "message": message}),
            json.dumps({"type": "turn.failed", "error": {"message": message}}),
        ]
    )


CODEX_FAULTS = [
    (
        "unexpected status 401 Unauthorized: scripted 401 message, url: x",
        FaultKind.CREDENTIALS,
        401,
    ),
    ("unexpected status 403 Forbidden: no", FaultKind.CREDENTIALS, 403),
    ("unexpected status 529 <unknown status code>: scripted 529", FaultKind.OUTAGE, 529),
    ("exceeded retry limit, last status: 429 Too Many Requests", FaultKind.OUTAGE, 429),
    (
        '{"error": {"type": "invalid_request_error", "message": "scripted 400 message"}}',
        FaultKind.REQUEST,
        None,
    ),
    ("stream disconnected before completion: connection reset", FaultKind.OUTAGE, None),
]


@pytest.mark.parametrize(("message", "kind", "status"), CODEX_FAULTS)
def test_codex_api_fault_kinds(message: str, kind: FaultKind, status: int | None) -> None:
    r = parse_codex(codex_failed(message), "danger-full-access", ended(1))
    assert r.outcome is OutcomeKind.CRASHED
    assert r.api_fault is not None
    assert (r.api_fault.kind, r.api_fault.status) == (kind, status)
    if kind is FaultKind.REQUEST:
        # The server's own words, not the JSON around them.
        assert r.api_fault.message == "scripted 400 message"


def test_codex_unreachable_server_is_an_outage() -> None:
    out = "\n".join(
        json.dumps({"type": "error", "message": "Reconnecting... waiting for network (x)"})
        for _ in range(3)
    )
    stalled = ended(None, stop_reason=f"{STALL_PREFIX} no output and no file change for 5s")
    r = parse_codex(out, "danger-full-access", stalled)
    assert r.outcome is OutcomeKind.TIMEOUT
    assert r.api_fault is not None
    assert r.api_fault.kind is FaultKind.OUTAGE


AIDER_FAULTS = [
    (
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - bad key",
        FaultKind.CREDENTIALS,
    ),
    ("litellm.PermissionDeniedError: PermissionDeniedError: no", FaultKind.CREDENTIALS),
    ("litellm.BadRequestError: OpenAIException - Invalid value for 'model'", FaultKind.REQUEST),
    ("litellm.RateLimitError: RateLimitError: OpenAIException - slow down", FaultKind.OUTAGE),
    ("litellm.APIError: APIError: OpenAIException - Overloaded", FaultKind.OUTAGE),
    ("litellm.InternalServerError: InternalServerError: OpenAIException - boom", FaultKind.OUTAGE),
]


@pytest.mark.parametrize(("line", "kind"), AIDER_FAULTS)
def test_aider_api_fault_kinds(line: str, kind: FaultKind) -> None:
    log = analytics({"event": "message_send_starting"})
    p = aider.parse_aider(ended(0), log, has_diff=False, output=line)
    assert p.result.outcome is OutcomeKind.CRASHED
    assert p.result.api_fault is not None
    assert p.result.api_fault.kind is kind
    assert line in p.result.api_fault.message
    # And after a first answer (aider still exits 0): the same kind, never "changed nothing".
    later = aider.parse_aider(
        ended(0), AIDER_OVERLOADED_ANALYTICS, has_diff=False, output=line
    ).result
    assert later.api_fault is not None
    assert later.api_fault.kind is kind
