"""What each model-API failure leads to: the rows of the table that ``docs/reliability.md``
and ``docs/llm-usage-policy.md`` show, each naming the test that shows it with the real
pinned CLIs (or, where no CLI can produce it on demand, the parser's test on recorded
output). ``test_model_fault_docs`` keeps both documents equal to ``render()`` and fails when
a named test does not exist.

Regenerate both::

    ORCH_WRITE_MODEL_FAULT_DOCS=1 pytest tests/integration/test_model_fault_docs.py
"""

from __future__ import annotations

from dataclasses import dataclass

BEGIN = "<!-- model-faults:begin (generated from tests/integration/model_faults_doc.py) -->"
END = "<!-- model-faults:end -->"


@dataclass(frozen=True)
class ModelFault:
    fault: str
    leads_to: str
    spends: str
    alert: str
    # "path::test" of the test that shows it (path from the repo root).
    test: str


ROWS: list[ModelFault] = [
    ModelFault(
        "5xx, 529, 429 or a refused connection, fewer than "
        "`ORCH_BACKEND_BREAKER_THRESHOLD` (3) in a row across all tasks",
        "the stage is deferred like any tool error: it may be the task's own trouble",
        "one infra retry of that task",
        "none",
        "tests/unit/test_breaker.py::test_outages_below_the_threshold_are_charged_to_their_tasks",
    ),
    ModelFault(
        "the same, the threshold reached (an outage)",
        "the backend is paused: its jobs wait, one of them probes it after "
        "`ORCH_BACKEND_PROBE_FIRST_S` (doubling up to `ORCH_BACKEND_PROBE_MAX_S`, never "
        "sooner than the server's `retry-after`); the first answer resumes it and the "
        "waiting jobs run. Three tasks caught in it all finish",
        "nothing",
        "`backend-outage` once, `backend-recovered` when it ends",
        "tests/integration/test_backend_faults.py::"
        "test_an_outage_pauses_the_backend_and_every_task_finishes",
    ),
    ModelFault(
        "401 or 403 (credentials rejected)",
        "the backend is paused at once, no retries; a probe every `ORCH_BACKEND_PROBE_MAX_S`, "
        "or at once after `orch backend resume NAME`",
        "nothing",
        "`backend-credentials` once (not one per task)",
        "tests/integration/test_backend_faults.py::"
        "test_rejected_credentials_pause_the_backend_with_one_alert",
    ),
    ModelFault(
        "400 (the server refuses the request)",
        "the task is blocked with the server's message; the backend stays up",
        "nothing",
        "`model-request-refused` for the task",
        "tests/integration/test_backend_faults.py::"
        "test_a_refused_request_blocks_its_task_with_the_server_message",
    ),
    ModelFault(
        "an API error after the model's first answer (aider exits 0 all the same)",
        "the same as before any answer, by the error's kind; nothing the run left is taken "
        'as the attempt\'s, never a "changed nothing" rollback',
        "as for its kind",
        "as for its kind",
        "tests/unit/test_llm_parsers.py::test_aider_api_fault_kinds",
    ),
    ModelFault(
        "the kinds above, recognised in each CLI's own output (claude's "
        "`api_error_status`, codex's error events, aider's litellm errors)",
        "the same outcome whichever backend ran",
        "as for its kind",
        "as for its kind",
        "tests/unit/test_llm_parsers.py::test_codex_api_fault_kinds",
    ),
    ModelFault(
        "a model call that never answers",
        "stall detection stops the job and says the model did not answer; an outage",
        "as for an outage",
        "as for an outage",
        "tests/integration/test_llm_spend.py::"
        "test_claude_model_hang_after_answers_is_a_model_hang_and_keeps_its_spend",
    ),
    ModelFault(
        "a busy agent that prints nothing between model calls (claude thinking, reading)",
        "not a stall: each model call it streams counts as activity",
        "nothing",
        "none",
        "tests/integration/test_llm_spend.py::test_busy_silent_claude_is_not_taken_for_stalled",
    ),
    ModelFault(
        "max turns, or the CLI's own budget cap (`--max-budget-usd`)",
        "the attempt FAILED: rolled back to development with the reason in the next prompt",
        "one developer retry",
        "none",
        "tests/integration/test_llm_backends.py::"
        "test_claude_max_turns_is_rolled_back_with_its_context_not_retried_as_it_was",
    ),
    ModelFault(
        "a job's streamed spend reaches what is left of the task's budget",
        "the job is stopped from outside, what it spent is recorded, the task is blocked",
        "nothing more",
        "`llm-budget-exhausted`",
        "tests/integration/test_llm_spend.py::"
        "test_claude_tool_loop_is_stopped_at_its_cap_from_outside",
    ),
    ModelFault(
        "a job cancelled, stalled, timed out or reaped mid-run",
        "what it spent up to then is recorded (tokens and cost, as it streamed)",
        "as for the stop",
        "as for the stop",
        "tests/integration/test_llm_spend.py::"
        "test_claude_cancelled_mid_loop_keeps_what_the_server_billed",
    ),
    ModelFault(
        "jobs running at once against the day budget",
        "each reserves its cap at dispatch (the task's budget left, within the day's "
        "unreserved part); none starts while the day is reserved whole",
        "nothing",
        "`llm-budget-exhausted` when it is spent",
        "tests/integration/test_backend_faults.py::"
        "test_parallel_jobs_cannot_jointly_overshoot_the_day_budget",
    ),
]


def render() -> str:
    """The generated section, markers included."""
    lines = [
        BEGIN,
        "",
        "| Model-API failure | Leads to | Retries spent | Alert | Shown by |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        path, _, name = row.test.partition("::")
        lines.append(
            f"| {row.fault} | {row.leads_to} | {row.spends} | {row.alert} "
            f"| `{path.rsplit('/', 1)[-1]}::{name}` |"
        )
    lines += ["", END]
    return "\n".join(lines)


def splice(text: str) -> str:
    """``text`` with its generated section replaced by ``render()``; unchanged when it has
    no markers (the caller then fails)."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < 0:
        return text
    return text[:start] + render() + text[stop + len(END) :]
