"""What the LLM backends share: the plan a backend makes, the result its parser returns, and
reading a run's output back from the job log.

A backend is two things: a *planner* (role, task, prompt, worktree, job home, settings →
argv, env additions, files to prepare) and a pure *parser* (how the process ended, what it
printed or left in files → outcome, reasons, cost, tokens). ``agents.backends`` runs the
plan through ``proc_group.run`` and hands the result to the parser.

Output: proc_group sends stdout and stderr straight to the job log, after a header ending
in ``----- output -----`` and before the ``[orchestrator] end:`` footer. No CLI here can
write its machine output (claude's JSON, codex's JSONL) to a file of its own, so parsers
read the run's section of the log: the bytes appended since the run started, between the
header and the footer. Machine output is one JSON object per line; a line that does not
parse (a warning on stderr) is skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.agents.stall import is_stall
from orchestrator.config import Settings
from orchestrator.domain.faults import ApiFault, FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage
from orchestrator.errors import OrchestratorError
from orchestrator.proc_group import Outcome
from orchestrator.self_deploy import map_outcome

OUTPUT_MARK = b"----- output -----\n"
FOOTER_PREFIX = "[orchestrator] "
# A run's output is read from its tail when it is larger than this: every result a parser
# needs (claude's result object, codex's turn events) is at the end.
MAX_OUTPUT_BYTES = 32 * 1024 * 1024
# How much of an agent's last words a reason quotes.
SNIPPET_CHARS = 300


class PlanError(OrchestratorError):
    """A backend cannot run this job as configured; the job ends ``not-started``."""


@dataclass(frozen=True)
class PlanRequest:
    """Everything a backend needs to plan one job."""

    backend: str
    role: str
    stage: Stage
    task_key: str
    prompt: str
    worktree: Path
    artifact_dir: Path
    artifact: str
    job_home: Path
    settings: Settings
    # The environment the job will get before the plan's additions (scrubbed, with the
    # repo's --agent-env names): a backend reads e.g. OPENAI_BASE_URL from it.
    env: Mapping[str, str] = field(default_factory=dict)
    is_root: bool = False
    # What is left of the task's LLM budget (None: no limit), for a CLI that caps itself.
    task_left_usd: float | None = None


@dataclass(frozen=True)
class LlmPlan:
    """How to run one job: argv, env additions, files to write first."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    # Where the backend leaves machine output of its own (aider's analytics log).
    side_output: Path | None = None


@dataclass(frozen=True)
class LlmResult:
    """What a parser read: the outcome with reasons, and what the job cost."""

    outcome: OutcomeKind
    reasons: list[str]
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    # ``completed``, but the CLI stopped the agent at a limit of its own (its turns, its
    # budget) before the agent was done: the tool worked and the attempt FAILED, whatever
    # its artifact says. Not a tool error: running the same prompt again would hit the
    # same limit, so the failure and its reasons go to the next attempt's prompt instead.
    cut_short: bool = False
    # A model-API failure the parser recognised in the CLI's own output (None: none seen).
    api_fault: ApiFault | None = None
    # Model calls answered, as far as the output tells (None: it does not say).
    model_calls: int | None = None


def tool_error_of(outcome: Outcome, backend: str) -> LlmResult | None:
    """The tool error of a run that did not end by itself, else None (the parser decides).

    Not started → ``not-started``; stopped by stall detection or our timeout → ``timeout``;
    cancelled, or killed by any signal → ``crashed`` (``self_deploy.map_outcome``'s words).
    """
    if outcome.start_error is None and is_stall(outcome.stop_reason):
        return LlmResult(
            OutcomeKind.TIMEOUT,
            [f"{backend}: {outcome.stop_reason}; killed the process tree"],
        )
    # Always through the one mapping, without a shortcut on "it has an exit code": an outcome
    # that also says timed out, cancelled or not started is not a clean end (fail closed).
    mapping = map_outcome(outcome, kind="command")
    if mapping.tool_error is None:  # exited by itself after all
        return None
    return LlmResult(OutcomeKind(mapping.tool_error), [f"{backend}: {r}" for r in mapping.reasons])


# What each kind of model-API failure means for the task, in a reason.
_FAULT_MEANS = {
    FaultKind.OUTAGE: "the model server failed, not the code",
    FaultKind.CREDENTIALS: "the model server rejected the credentials, not the code",
    FaultKind.REQUEST: "the model server refused the request, not the code",
}


def fault_reasons(backend: str, fault: ApiFault) -> list[str]:
    """The reasons of a run that ended on a model-API failure."""
    status = f"HTTP {fault.status}" if fault.status is not None else "no HTTP status"
    retry = (
        f"; the server asked to retry after {fault.retry_after_s:g}s"
        if fault.retry_after_s is not None
        else ""
    )
    return [
        f"{backend}: API error ({status}, {fault.kind.value}); {_FAULT_MEANS[fault.kind]}{retry}",
        f"the server said: {snippet(fault.message)}",
    ]


def log_size(path: Path) -> int:
    """The job log's size now: where the next run's section will start."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_output(log_path: Path, start: int) -> str:
    """The output of the run that began at byte ``start`` of the log, without our lines."""
    try:
        with open(log_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(start)
            head = fh.read(64 * 1024)
            mark = head.find(OUTPUT_MARK)
            if mark < 0:
                return ""
            begin = start + mark + len(OUTPUT_MARK)
            begin = max(begin, size - MAX_OUTPUT_BYTES)
            fh.seek(begin)
            raw = fh.read()
    except OSError:
        return ""
    lines = raw.decode("utf-8", "replace").splitlines()
    return "\n".join(line for line in lines if not line.startswith(FOOTER_PREFIX))


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object, in order."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("{"):
            continue
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            # RecursionError: nesting deeper than the decoder goes is not an object we read.
            continue
        if isinstance(value, dict):
            yield value


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The tail of ``text`` on one line, for a reason."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-limit:]


# The most tokens a job is counted for: far above any real run, and what the 32-bit INTEGER
# columns hold on both databases. A larger claim (an integral 9e307 is valid JSON) is counted
# as this much, the safe side of a budget, instead of an infinite cost or a row PostgreSQL
# refuses, which would leave the job's end unrecorded.
MAX_TOKENS = 2**31 - 1


# The most a job is counted to cost, in USD: far above any real run. A larger claim (1e308
# is valid JSON) is counted as this much, the safe side of any budget. Not the largest
# float: PostgreSQL's SUM of two such costs overflows ("value out of range"), and every
# spend total, every admission and every later job's end would then fail for good.
MAX_COST_USD = 1_000_000.0


def as_int(value: object) -> int:
    """A token count from JSON: ints (and integral floats) count, anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def token_sum(*values: object) -> int:
    """Token counts from JSON added up, at most ``MAX_TOKENS`` (the one place they are capped)."""
    return min(sum(as_int(v) for v in values), MAX_TOKENS)


def as_amount(value: object) -> float | None:
    """A finite non-negative number from JSON (a delay, say), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an int too large for a float
        return None
    # Not NaN, not Infinity (JSON allows both): neither is an amount, nor storable as one.
    return amount if math.isfinite(amount) and amount >= 0 else None


def as_cost(value: object) -> float | None:
    """A USD amount from JSON, at most ``MAX_COST_USD``, or None when it is not a finite
    non-negative number. Only for costs: the cap is a budget's (``as_amount`` for others)."""
    amount = as_amount(value)
    return None if amount is None else min(amount, MAX_COST_USD)


def money(cost: float | None) -> str:
    """``$0.0123`` or ``cost unknown``."""
    return "cost unknown" if cost is None else f"${cost:.4f}"
