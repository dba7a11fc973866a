"""The LLM backends' pure parts: plans (argv, env, files), parsers on recorded real output,
reading a run's output from the job log, and stall detection on a fake clock.

The recorded outputs are what the pinned CLIs (Claude Code 2.1.330, Codex 0.169.0, aider
0.86.2) printed against the fake model server, trimmed to the fields the parsers read plus
some they must ignore.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from parser_properties.props_domain import outcome_of

from orchestrator.agents import aider, claude, codex
from orchestrator.agents.common import (
    MAX_TOKENS,
    PlanError,
    PlanRequest,
    run_output,
    tool_error_of,
)
from orchestrator.agents.stall import STALL_PREFIX, StallDetector, tree_signature
from orchestrator.config import load_settings
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
    assert "API error (HTTP 500)" in r.reasons[0]
    assert r.cost_usd == 0.0


def test_claude_max_turns_is_timeout() -> None:
    out = claude_result(
        subtype="error_max_turns",
        is_error=True,
        result=None,
        errors=["Reached maximum number of turns (3)"],
        terminal_reason="max_turns",
    )
    r = claude.parse_claude(ended(1), out, max_turns=3)
    assert r.outcome is OutcomeKind.TIMEOUT
    assert "--max-turns 3" in r.reasons[0]
    assert "Reached maximum number of turns (3)" in r.reasons


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


def test_codex_success_and_cost_from_the_price_table() -> None:
    r = codex.parse_codex(ended(0), CODEX_OK, price_in_per_mtok=2.0, price_out_per_mtok=10.0)
    assert r.outcome is OutcomeKind.COMPLETED
    assert (r.tokens_in, r.tokens_out) == (300, 60)
    assert r.cost_usd == pytest.approx((300 * 2.0 + 60 * 10.0) / 1e6)


def test_codex_turn_failed_is_a_tool_error() -> None:
    r = codex.parse_codex(ended(1), CODEX_FAILED, price_in_per_mtok=1, price_out_per_mtok=1)
    assert r.outcome is OutcomeKind.CRASHED
    assert "scripted overload" in r.reasons[0]
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
    assert a[a.index("--output-format") + 1] == "json"
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
    assert plan.argv[:5] == ["codex", "exec", "--json", "--ephemeral", "--strict-config"]
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
    ):
        assert flag in a
    assert a[a.index("--analytics-log") + 1] == str(plan.side_output)
    for flag in ("--input-history-file", "--chat-history-file", "--llm-history-file"):
        assert Path(a[a.index(flag) + 1]).parent == req.job_home  # outside the repo
    assert a[a.index("--model") + 1] == "sonnet"
    assert plan.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    (cache,) = plan.files
    assert json.loads(plan.files[cache])  # non-empty: aider will not download its own


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
    assert p.result.cost_usd is not None
    assert math.isfinite(p.result.cost_usd)
