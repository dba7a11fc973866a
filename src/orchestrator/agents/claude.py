"""The ``claude`` backend: Claude Code, headless (``claude -p``), streamed JSON events.

Plan::

    claude -p --output-format stream-json --verbose --include-partial-messages
           --max-turns N --no-session-persistence
           --add-dir <artifact dir> (--permission-mode MODE | --dangerously-skip-permissions)
           [--max-budget-usd <task's budget left>] [--model M] [--allowedTools RULES]
           -- <prompt>

``stream-json`` (which needs ``--verbose``) prints one JSON event per line as the agent
works, ending with the same ``result`` object ``--output-format json`` prints;
``--include-partial-messages`` adds the model's raw stream events, whose ``message_start``
and ``message_delta`` carry each answer's usage: ``agents.meter`` counts the spend from
them while the job runs, so a job killed before its result keeps what it spent, and a job
is stopped once it reaches its cap. ``--max-budget-usd`` (what is left of the task's
budget, when it has one) makes the CLI stop itself too, between two model calls.

The prompt comes last, after ``--``: ``--add-dir`` takes several values and would swallow
it, and a prompt starting with ``-`` must not read as an option. Environment: its own
``HOME`` and ``CLAUDE_CONFIG_DIR`` in the job home (no state shared between jobs),
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (no telemetry, updater or error reports),
``CLAUDE_CODE_MAX_RETRIES``; ``IS_SANDBOX=1`` only when skipping permissions as root (the
CLI refuses that otherwise). ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` come from the
repo's ``--agent-env``. stdin is /dev/null (proc_group): with an open pipe it would wait.

Parse: the exit code is not the verdict (it is 0 when a tool was denied, 1 on an API error
or max-turns); the last ``{"type": "result", ...}`` object of the output is. Mapping:

- no result object → ``crashed`` (fail closed);
- ``subtype: error_max_turns`` or ``error_max_budget_usd`` (the CLI's own ``--max-turns`` or
  ``--max-budget-usd`` stopped the agent; it exits 1) → ``completed`` and ``cut_short``: the
  attempt FAILED, "max turns reached" in its reasons (the caller sets its artifact aside and,
  for a developer, records ``dev_status: FAILED``), so the rollback feeds that context into
  the next prompt. Not a tool error: the identical prompt would run into the same limit;
- ``is_error`` with ``api_error_status`` (or ``terminal_reason: api_error`` without one, a
  refused connection) → ``crashed`` with an ``ApiFault`` by the status (``domain.faults``:
  401/403 credentials, 5xx/529/429 and refused connections an outage, other 4xx a refused
  request), the server's message in the reasons: not the code's fault;
- ``is_error`` anything but ``false`` (true, missing, "false") or a non-``success`` subtype
  → ``crashed``;
- ``permission_denials`` not empty → ``crashed`` (the agent could not do what it set out to);
- a non-zero exit with a clean result → ``crashed`` (the two disagree);
- else ``completed``: the gate reads the artifact.

Cost is ``total_cost_usd``; tokens in are ``usage.input_tokens`` plus the cache creation and
cache read input tokens, tokens out ``usage.output_tokens``.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from orchestrator.agents.common import (
    LlmPlan,
    LlmResult,
    PlanError,
    PlanRequest,
    as_amount,
    as_cost,
    fault_reasons,
    json_objects,
    money,
    snippet,
    token_sum,
    tool_error_of,
)
from orchestrator.domain.faults import ApiFault, FaultKind, fault_of_status
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.proc_group import Outcome

__all__ = ["parse_claude", "plan_claude"]

MAX_TURNS = "error_max_turns"
# The result subtypes of a run the CLI stopped at a limit of its own, and how a reason says it.
CUT_SHORT = {
    MAX_TURNS: "max turns reached",
    "error_max_budget_usd": "its budget cap (--max-budget-usd) reached",
}
SKIP_PERMISSIONS = "dangerously-skip-permissions"
BYPASS_MODES = frozenset({SKIP_PERMISSIONS, "bypassPermissions"})


def plan_claude(req: PlanRequest) -> LlmPlan:
    """argv, env and files of a Claude Code job."""
    st = req.settings
    try:
        command = shlex.split(st.claude_command)
    except ValueError as exc:
        msg = f"ORCH_CLAUDE_COMMAND cannot be split: {exc}"
        raise PlanError(msg) from exc
    if not command:
        msg = "ORCH_CLAUDE_COMMAND is empty"
        raise PlanError(msg)
    mode = st.claude_permission_mode
    argv = [
        *command,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--max-turns",
        str(st.claude_max_turns),
        "--no-session-persistence",
        "--add-dir",
        str(req.artifact_dir),
    ]
    if mode == SKIP_PERMISSIONS:
        argv.append("--dangerously-skip-permissions")
    else:
        argv += ["--permission-mode", mode]
    if req.task_left_usd is not None and req.task_left_usd > 0:
        # repr: a budget of a fraction of a cent (1e-09) stays above 0, which the CLI
        # requires. Nothing left is never dispatched; the engine's budget check owns it.
        argv += ["--max-budget-usd", repr(float(req.task_left_usd))]
    if st.claude_model:
        argv += ["--model", st.claude_model]
    tools = [t.strip() for t in st.claude_allowed_tools.split(",") if t.strip()]
    if tools:
        argv += ["--allowedTools", ",".join(tools)]
    argv += ["--", req.prompt]
    env = {
        "HOME": str(req.job_home),
        "CLAUDE_CONFIG_DIR": str(req.job_home / ".claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(st.claude_max_retries),
    }
    if mode in BYPASS_MODES and req.is_root:
        # Claude Code refuses to skip permission checks as root unless told it is sandboxed.
        env["IS_SANDBOX"] = "1"
    return LlmPlan(argv=argv, env=env)


def _result_object(output: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = None
    for obj in json_objects(output):
        if obj.get("type") == "result":
            found = obj
    return found


def _denial(d: object) -> str:
    if not isinstance(d, dict):
        return "an unknown tool"
    name = str(d.get("tool_name", "?"))
    tool_input = d.get("tool_input")
    detail = ""
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "path", "url"):
            if key in tool_input:
                detail = str(tool_input[key])
                break
    return f"{name}({snippet(detail, 80)})" if detail else name


def _denied(denials: list[Any], permission_mode: str | None) -> list[str]:
    mode = f" by permission mode {permission_mode}" if permission_mode else ""
    shown = ", ".join(_denial(d) for d in denials[:5])
    more = f" and {len(denials) - 5} more" if len(denials) > 5 else ""
    return [
        f"claude was denied {len(denials)} tool call(s){mode}: {shown}{more}",
        "allow them with ORCH_CLAUDE_ALLOWED_TOOLS or another ORCH_CLAUDE_PERMISSION_MODE",
    ]


def _api_fault(result: dict[str, Any], said: str, output: str) -> ApiFault | None:
    """The model-API failure a result reports: by ``api_error_status``, or a failed call
    with no status (a refused connection) when ``terminal_reason`` is ``api_error``. The
    wait the CLI's own last retry took (``api_retry``'s ``retry_delay_ms``, which honours
    the server's ``retry-after``) is the earliest worth asking again."""
    status = result.get("api_error_status")
    message = said or "no message"
    wait = _last_retry_delay_s(output)
    if isinstance(status, int) and not isinstance(status, bool):
        return fault_of_status(status, message, wait)
    if status is not None or result.get("terminal_reason") == "api_error":
        return ApiFault(FaultKind.OUTAGE, message, retry_after_s=wait)
    return None


def _last_retry_delay_s(output: str) -> float | None:
    delay: float | None = None
    for obj in json_objects(output):
        if obj.get("type") == "system" and obj.get("subtype") == "api_retry":
            # A finite, non-negative number; no cost, so not capped as one: the breaker
            # probes never sooner than the server's retry-after, however long.
            ms = as_amount(obj.get("retry_delay_ms"))
            if ms is not None:
                delay = ms / 1000
    return delay


def parse_claude(
    outcome: Outcome,
    output: str,
    *,
    max_turns: int | None = None,
    permission_mode: str | None = None,
) -> LlmResult:
    """Claude Code's outcome, cost and tokens from how it ended and what it printed."""
    result = _result_object(output)
    cost: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    if result is not None:
        cost = as_cost(result.get("total_cost_usd"))
        usage = result.get("usage")
        if isinstance(usage, dict):
            tokens_in = token_sum(
                usage.get("input_tokens"),
                usage.get("cache_creation_input_tokens"),
                usage.get("cache_read_input_tokens"),
            )
            tokens_out = token_sum(usage.get("output_tokens"))

    def done(kind: OutcomeKind, *reasons: str) -> LlmResult:
        return LlmResult(kind, list(reasons), cost, tokens_in, tokens_out)

    killed = tool_error_of(outcome, "claude")
    if killed is not None:
        return done(killed.outcome, *killed.reasons)
    code = outcome.exit_code
    if result is None:
        return done(
            OutcomeKind.CRASHED,
            f"claude printed no result JSON (exit code {code}); fail closed",
            *([f"last output: {snippet(output)}"] if output.strip() else []),
        )
    subtype = str(result.get("subtype", ""))
    turns = result.get("num_turns")
    said = snippet(str(result.get("result") or ""))
    errors = result.get("errors")
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else said
    denials = result.get("permission_denials")
    denied = _denied(denials, permission_mode) if isinstance(denials, list) and denials else []
    if subtype in CUT_SHORT:
        limit = f" (--max-turns {max_turns})" if subtype == MAX_TURNS and max_turns else ""
        return LlmResult(
            OutcomeKind.COMPLETED,
            [
                f"claude: {CUT_SHORT[subtype]}{limit} after {turns} turn(s) ({subtype}); "
                f"this attempt FAILED, {money(cost)}",
                *([detail] if detail else []),
                *denied,
            ],
            cost,
            tokens_in,
            tokens_out,
            cut_short=True,
        )
    if result.get("is_error") is not False or subtype != "success":
        fault = _api_fault(result, said, output)
        if fault is not None:
            return dataclasses.replace(
                done(OutcomeKind.CRASHED, *fault_reasons("claude", fault)), api_fault=fault
            )
        return done(
            OutcomeKind.CRASHED,
            f"claude reported an error (subtype {subtype or '?'}, "
            f"terminal_reason {result.get('terminal_reason', '?')})",
            *([detail] if detail else []),
        )
    if denied:
        return done(OutcomeKind.CRASHED, *denied)
    if code != 0:
        return done(
            OutcomeKind.CRASHED,
            f"claude exited with code {code} but reported success; fail closed",
        )
    return done(
        OutcomeKind.COMPLETED,
        f"claude: success in {turns} turn(s), {money(cost)}, "
        f"tokens in {tokens_in if tokens_in is not None else '?'} "
        f"out {tokens_out if tokens_out is not None else '?'}",
    )
