"""The ``codex`` backend: Codex CLI, headless (``codex exec --json``), JSONL events.

Plan::

    codex exec --json --strict-config -- <prompt>

with ``CODEX_HOME`` (and ``HOME``) in the job home, holding a ``config.toml`` we write: the
model (``ORCH_CODEX_MODEL``: one the pinned CLI's bundled catalog knows; for any other it
runs on fallback metadata and offers the model no ``apply_patch`` tool), one model provider
``orchestrator`` (``base_url`` from the repo's ``OPENAI_BASE_URL`` when it passes one, else
``ORCH_CODEX_BASE_URL``; ``env_key`` ``ORCH_CODEX_API_KEY_ENV``; ``wire_api = "responses"``;
bounded request and stream retries), the sandbox (``danger-full-access`` inside ours, see
``effective_sandbox``; else ``ORCH_CODEX_SANDBOX``, default ``workspace-write`` with the
artifact folder as an extra writable root), ``approval_policy = "never"`` (nobody is there
to approve),
``[features] plugins = false`` and ``[analytics] enabled = false``. ``--strict-config`` makes
a key this version does not know an error instead of a silent no-op. stdin is /dev/null:
with an open pipe it waits for more input.

Not ``--ephemeral``: the session file codex then writes in ``CODEX_HOME`` holds each model
call's token counts as they happen, which ``agents.meter`` reads while the job runs.

Codex retries forever while the server is unreachable ("Reconnecting... waiting for
network"), so our timeout and stall detection own that case.

Parse: JSONL events on stdout. ``turn.completed`` carries ``usage`` (summed over turns);
``turn.failed`` carries the error. Mapping:

- a sandbox that could not start → ``crashed``, with codex's own words (see below);
- a ``turn.failed`` event → ``crashed`` with an ``ApiFault`` (``codex_fault``: by the status
  its message names; a bare JSON error body, printed for a 400 only, is a refused request;
  anything else an outage): the server failed or refused, not the code;
- no ``turn.completed`` → ``crashed`` (fail closed);
- a non-zero exit code → ``crashed``;
- else ``completed``: the gate reads the artifact.

Codex reports no cost: it is computed from the tokens and the price table in settings
(``ORCH_CODEX_PRICE_IN_PER_MTOK_USD``, ``ORCH_CODEX_PRICE_OUT_PER_MTOK_USD``). Cached input
tokens are priced as input tokens: over-estimating is the safe side of a budget. A command
the sandbox refuses is a failed command the agent sees and works around; codex has no
"permission denied" outcome of its own.

A sandbox that cannot start is another matter: every command and every ``apply_patch``
fails, the agent reports whatever it reports, and the gate would blame the code. Codex's
own sandbox runs each command as ``bwrap ... codex-linux-sandbox ...``, a helper it links
into ``CODEX_HOME`` at start; it refuses to link it under the temporary directory
("could not create PATH aliases: Refusing to create helper binaries under temporary dir"),
and then every sandboxed command fails with "bwrap: execvp codex-linux-sandbox". Those
failures reach the model only: ``--json`` shows no event for them. So with its own sandbox
on (``sandbox_mode`` other than ``danger-full-access``) the warning alone is the tool error,
and so, in any mode, is a line of codex's own (stderr, an error event or item) that names
``codex-linux-sandbox``, a ``bwrap:`` failure, a "sandbox error" or a missing bubblewrap.
Inside the orchestrator's sandbox codex's is off (``effective_sandbox``), so none of this
happens there: a command's own output is never read for these words.
"""

from __future__ import annotations

import dataclasses
import json
import shlex

from orchestrator.agents.common import (
    LlmPlan,
    LlmResult,
    PlanError,
    PlanRequest,
    fault_reasons,
    json_objects,
    money,
    snippet,
    token_sum,
    tool_error_of,
)
from orchestrator.config import Settings
from orchestrator.domain.faults import ApiFault, FaultKind, fault_of_status, status_in
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.proc_group import Outcome

__all__ = [
    "codex_config_toml",
    "codex_cost_usd",
    "codex_fault",
    "parse_codex",
    "plan_codex",
]

PROVIDER = "orchestrator"
UNREACHABLE_HINT = "Reconnecting"
NO_SANDBOX = "danger-full-access"
# Codex's own words when its sandbox cannot run a command (0.169.0): the startup warning
# is read only while its sandbox is on (it is harmless without one); the rest always.
HELPERS_REFUSED = "could not create PATH aliases"
SANDBOX_FAILURES = (
    "codex-linux-sandbox",
    "bwrap: ",
    "sandbox error",
    "bubblewrap is unavailable",
)


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything we write (quotes,
    # backslashes and control characters are escaped the same way).
    return json.dumps(value)


def effective_sandbox(st: Settings) -> str:
    """Codex's own sandbox mode. Inside ours it is switched off: our bubblewrap already
    confines the job, and Codex's own, a second bubblewrap inside it, fails wherever its
    helper cannot be linked (a job home under the temporary directory) or user namespaces
    do not nest: every command then fails with "bwrap: execvp codex-linux-sandbox"."""
    return NO_SANDBOX if st.sandbox else st.codex_sandbox


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
    # Not --ephemeral: the rollout file codex then writes under CODEX_HOME/sessions has a
    # token count after every model answer, which agents.meter reads while the job runs
    # (--json shows usage only when the whole turn completes).
    argv = [*command, "exec", "--json", "--strict-config", "--", req.prompt]
    env = {"HOME": str(req.job_home), "CODEX_HOME": str(codex_home)}
    return LlmPlan(argv=argv, env=env, files={codex_home / "config.toml": codex_config_toml(req)})


def codex_cost_usd(
    tokens_in: int, tokens_out: int, price_in_per_mtok: float, price_out_per_mtok: float
) -> float:
    """USD for the tokens at the given prices per million."""
    return (tokens_in * price_in_per_mtok + tokens_out * price_out_per_mtok) / 1_000_000


def sandbox_failure(output: str, sandbox_mode: str) -> str | None:
    """The first line of codex's own output saying a sandbox could not run its commands, or
    None. Read: its stderr (lines that are not JSON), ``error`` events and ``error`` items;
    never a command's output, which may quote any of these words (a repo about sandboxes)."""
    own_sandbox = sandbox_mode != NO_SANDBOX
    for line in output.splitlines():
        said = line.strip()
        if said.startswith("{"):
            said = _error_message(said)
        if own_sandbox and HELPERS_REFUSED in said:
            return said
        if any(sign in said for sign in SANDBOX_FAILURES):
            return said
    return None


def _sandbox_reasons(line: str | None, sandbox_mode: str) -> list[str]:
    if line is None:
        return []
    if sandbox_mode == NO_SANDBOX:
        return [
            f"codex: a sandbox could not start: {snippet(line)}",
            "the agent's commands could not run; not the code's fault",
        ]
    return [
        f"codex: its own sandbox could not start (sandbox_mode {sandbox_mode}): {snippet(line)}",
        "every command and apply_patch of the agent fails there, not the code's fault: run "
        "codex inside the orchestrator's sandbox (ORCH_SANDBOX=on switches codex's own off), "
        "keep ORCH_HOME out of the temporary directory ($TMPDIR, /tmp), or set "
        "ORCH_CODEX_SANDBOX=danger-full-access",
    ]


def _error_message(line: str) -> str:
    """The message of an ``error`` event or item on this JSONL line, else ""."""
    for event in json_objects(line):
        item = event.get("item")
        if event.get("type") == "error":
            return str(event.get("message") or "")
        if isinstance(item, dict) and item.get("type") == "error":
            return str(item.get("message") or "")
    return ""


def codex_fault(message: str) -> ApiFault:
    """The kind of a failed turn by codex's message: the status it names (``unexpected
    status 401 Unauthorized``, ``last status: 429``); a bare JSON error body, which codex
    prints only for a 400, is a refused request (its ``message`` quoted); a lost connection,
    or anything else, an outage."""
    status = status_in(message)
    if status is not None:
        return fault_of_status(status, message)
    try:
        body = json.loads(message)
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return ApiFault(FaultKind.REQUEST, str(err.get("message") or message))
    return ApiFault(FaultKind.OUTAGE, message)


def parse_codex(
    outcome: Outcome,
    output: str,
    *,
    price_in_per_mtok: float,
    price_out_per_mtok: float,
    sandbox_mode: str = NO_SANDBOX,
) -> LlmResult:
    """Codex's outcome, tokens and computed cost from how it ended and its JSONL events
    (``sandbox_mode``: codex's own, as its config said)."""
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

    sandbox_reasons = _sandbox_reasons(sandbox_failure(output, sandbox_mode), sandbox_mode)
    killed = tool_error_of(outcome, "codex")
    if killed is not None:
        hints = []
        if any(UNREACHABLE_HINT in e for e in errors):
            hints.append(
                f"codex could not reach the model server: {snippet(errors[-1], 160)} "
                "(it retries forever)"
            )
        ended = done(killed.outcome, *killed.reasons, *hints, *sandbox_reasons)
        if hints:
            ended = dataclasses.replace(ended, api_fault=ApiFault(FaultKind.OUTAGE, errors[-1]))
        return ended
    if sandbox_reasons:
        return done(OutcomeKind.CRASHED, *sandbox_reasons)
    code = outcome.exit_code
    if failures:
        fault = codex_fault(failures[-1])
        return dataclasses.replace(
            done(OutcomeKind.CRASHED, *fault_reasons("codex", fault)), api_fault=fault
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
