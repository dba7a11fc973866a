"""The ``codex`` backend: Codex CLI, headless (``codex exec --json``), JSONL events.

Plan::

    codex exec --json --ephemeral --strict-config -- <prompt>

with ``CODEX_HOME`` (and ``HOME``) in the job home, holding a ``config.toml`` we write: the
model, one model provider ``orchestrator`` (``base_url`` from the repo's ``OPENAI_BASE_URL``
when it passes one, else ``ORCH_CODEX_BASE_URL``; ``env_key`` ``ORCH_CODEX_API_KEY_ENV``;
``wire_api = "responses"``; bounded request and stream retries), the sandbox
(``ORCH_CODEX_SANDBOX``, default ``workspace-write`` with the artifact folder as an extra
writable root), ``approval_policy = "never"`` (nobody is there to approve),
``[features] plugins = false`` and ``[analytics] enabled = false``. ``--strict-config`` makes
a key this version does not know an error instead of a silent no-op. stdin is /dev/null:
with an open pipe it waits for more input.

Codex retries forever while the server is unreachable ("Reconnecting... waiting for
network"), so our timeout and stall detection own that case.

Parse: JSONL events on stdout. ``turn.completed`` carries ``usage`` (summed over turns);
``turn.failed`` carries the error. Mapping:

- a ``turn.failed`` event → ``crashed`` (an API or stream error: the server failed);
- no ``turn.completed`` → ``crashed`` (fail closed);
- a non-zero exit code → ``crashed``;
- else ``completed``: the gate reads the artifact.

Codex reports no cost: it is computed from the tokens and the price table in settings
(``ORCH_CODEX_PRICE_IN_PER_MTOK_USD``, ``ORCH_CODEX_PRICE_OUT_PER_MTOK_USD``). Cached input
tokens are priced as input tokens: over-estimating is the safe side of a budget. A command
the sandbox refuses is a failed command the agent sees and works around; codex has no
"permission denied" outcome of its own.
"""

from __future__ import annotations

import json
import shlex

from orchestrator.agents.common import (
    LlmPlan,
    LlmResult,
    PlanError,
    PlanRequest,
    json_objects,
    money,
    snippet,
    token_sum,
    tool_error_of,
)
from orchestrator.config import Settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.proc_group import Outcome

__all__ = ["codex_config_toml", "codex_cost_usd", "parse_codex", "plan_codex"]

PROVIDER = "orchestrator"
UNREACHABLE_HINT = "Reconnecting"


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything we write (quotes,
    # backslashes and control characters are escaped the same way).
    return json.dumps(value)


def effective_sandbox(st: Settings) -> str:
    """Codex's own sandbox mode. Inside ours it is switched off: our bubblewrap already
    confines the job, and Codex's bubblewrap cannot start nested inside it (every command
    would fail with "bwrap: execvp codex-linux-sandbox", blamed on the code)."""
    return "danger-full-access" if st.sandbox else st.codex_sandbox


def codex_config_toml(req: PlanRequest) -> str:
    """The ``config.toml`` of one Codex job."""
    st = req.settings
    base_url = req.env.get("OPENAI_BASE_URL") or st.codex_base_url
    lines = [
        "# Written by the orchestrator for one job; not shared with any other run.",
        f"model = {_toml_str(st.codex_model)}",
        f"model_provider = {_toml_str(PROVIDER)}",
        f"sandbox_mode = {_toml_str(effective_sandbox(st))}",
        'approval_policy = "never"',
        "",
        f"[model_providers.{PROVIDER}]",
        f"name = {_toml_str(PROVIDER)}",
        f"base_url = {_toml_str(base_url)}",
        f"env_key = {_toml_str(st.codex_api_key_env)}",
        'wire_api = "responses"',
        f"request_max_retries = {st.codex_max_retries}",
        f"stream_max_retries = {st.codex_max_retries}",
        "",
    ]
    if effective_sandbox(st) == "workspace-write":
        lines += [
            "[sandbox_workspace_write]",
            f"writable_roots = [{_toml_str(str(req.artifact_dir))}]",
            "",
        ]
    lines += ["[features]", "plugins = false", "", "[analytics]", "enabled = false", ""]
    return "\n".join(lines)


def plan_codex(req: PlanRequest) -> LlmPlan:
    """argv, env and files of a Codex job."""
    try:
        command = shlex.split(req.settings.codex_command)
    except ValueError as exc:
        msg = f"ORCH_CODEX_COMMAND cannot be split: {exc}"
        raise PlanError(msg) from exc
    if not command:
        msg = "ORCH_CODEX_COMMAND is empty"
        raise PlanError(msg)
    codex_home = req.job_home / "codex"
    argv = [*command, "exec", "--json", "--ephemeral", "--strict-config", "--", req.prompt]
    env = {"HOME": str(req.job_home), "CODEX_HOME": str(codex_home)}
    return LlmPlan(argv=argv, env=env, files={codex_home / "config.toml": codex_config_toml(req)})


def codex_cost_usd(
    tokens_in: int, tokens_out: int, price_in_per_mtok: float, price_out_per_mtok: float
) -> float:
    """USD for the tokens at the given prices per million."""
    return (tokens_in * price_in_per_mtok + tokens_out * price_out_per_mtok) / 1_000_000


def parse_codex(
    outcome: Outcome,
    output: str,
    *,
    price_in_per_mtok: float,
    price_out_per_mtok: float,
) -> LlmResult:
    """Codex's outcome, tokens and computed cost from how it ended and its JSONL events."""
    completed = 0
    failures: list[str] = []
    errors: list[str] = []
    tokens_in = 0
    tokens_out = 0
    for event in json_objects(output):
        kind = event.get("type")
        if kind == "turn.completed":
            completed += 1
            usage = event.get("usage")
            if isinstance(usage, dict):
                tokens_in = token_sum(tokens_in, usage.get("input_tokens"))
                tokens_out = token_sum(tokens_out, usage.get("output_tokens"))
        elif kind == "turn.failed":
            err = event.get("error")
            message = err.get("message") if isinstance(err, dict) else err
            failures.append(str(message or "no message"))
        elif kind == "error":
            errors.append(str(event.get("message") or ""))
    seen_usage = completed > 0 or tokens_in > 0 or tokens_out > 0
    cost = (
        codex_cost_usd(tokens_in, tokens_out, price_in_per_mtok, price_out_per_mtok)
        if seen_usage
        else None
    )
    t_in = tokens_in if seen_usage else None
    t_out = tokens_out if seen_usage else None

    def done(kind: OutcomeKind, *reasons: str) -> LlmResult:
        return LlmResult(kind, list(reasons), cost, t_in, t_out)

    killed = tool_error_of(outcome, "codex")
    if killed is not None:
        hints = []
        if any(UNREACHABLE_HINT in e for e in errors):
            hints.append(
                f"codex could not reach the model server: {snippet(errors[-1], 160)} "
                "(it retries forever)"
            )
        return done(killed.outcome, *killed.reasons, *hints)
    code = outcome.exit_code
    if failures:
        return done(
            OutcomeKind.CRASHED,
            f"codex: turn failed: {snippet(failures[-1])}; the model server failed, not the code",
        )
    if completed == 0:
        last = f": {snippet(errors[-1])}" if errors else ""
        return done(
            OutcomeKind.CRASHED,
            f"codex ended without turn.completed (exit code {code}){last}; fail closed",
        )
    if code != 0:
        return done(
            OutcomeKind.CRASHED, f"codex exited with code {code} after turn.completed; fail closed"
        )
    return done(
        OutcomeKind.COMPLETED,
        f"codex: turn completed, tokens in {tokens_in} out {tokens_out}, {money(cost)} "
        f"(at ${price_in_per_mtok:g}/${price_out_per_mtok:g} per Mtok)",
    )
