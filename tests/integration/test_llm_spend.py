"""Streamed spend, with the REAL pinned claude and codex CLIs against the fake model server.

A job killed for any reason keeps what it spent, as the model server billed it; a job is
stopped from outside once its streamed spend reaches its cap; a busy agent that only reads
is not taken for stalled while the model answers; a stall while the model owes an answer
says so. Fixtures are test_llm_backends.py's (imported by name).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import fake_model_server as F
import pytest
from test_llm_backends import (
    HANG_STALL_TIMEOUT_S,
    Job,
    claude_job,
    codex_job,
    dev_report,
    make_job,
    offline_env,
    stall_clock_from_first_request,
)

from orchestrator.agents.backends import run_llm_backend
from orchestrator.agents.codex import codex_cost_usd
from orchestrator.agents.meter import ClaudeMeter, CodexMeter, SpendMeter
from orchestrator.agents.stall import MODEL_HANG
from orchestrator.agents.tally import ClaudePrices
from orchestrator.domain import artifacts as A
from orchestrator.domain.faults import FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage
from orchestrator.jobcontract import JobContext, JobResult

__all__ = ["claude_job", "codex_job", "make_job", "offline_env"]  # fixtures, imported by name

# The longest a watcher waits for the server before it gives up (a bound, not a measurement).
DEADLINE_S = 90.0


def run(job: Job, backend: str, **ctx_fields: Any) -> tuple[JobContext, Callable[[], JobResult]]:
    """The job's context (with ``ctx_fields``) and a call that runs it as the engine does."""
    ctx = dataclasses.replace(job.context(), **ctx_fields)
    return ctx, lambda: run_llm_backend(ctx, backend, "developer", Stage.DEVELOPMENT, job.worktree)


def cancel_when_asked(
    server: F.FakeModelServer, ctx: JobContext, requests: int, meter: SpendMeter
) -> threading.Thread:
    """Cancel the job once the server has received ``requests`` scripted requests and the
    CLI has written out every answer the server billed (``meter``, read apart from the
    job's own). The CLI prints an answer before it asks again, but its output may lag
    behind on a loaded machine: what a CLI never wrote, no reader can count."""

    def watch() -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not ctx.cancel.is_set():
            asked = len(server.scripted_requests()) >= requests
            written = meter.update()
            if asked and (written.tokens_in, written.tokens_out) == server.billed():
                ctx.cancel.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def claude_cost(job: Job, tokens_in: int, tokens_out: int) -> float:
    st = job.settings
    return (
        tokens_in * st.claude_price_in_per_mtok_usd + tokens_out * st.claude_price_out_per_mtok_usd
    ) / 1e6


def read_readme(job: Job, **kw: Any) -> F.Turn:
    return F.tool("Read", {"file_path": str(job.worktree / "README.md")}, **kw)


# ------------------------------------------------------------------------------- killed


def test_claude_cancelled_mid_loop_keeps_what_the_server_billed(claude_job: Any) -> None:
    job, server = claude_job([])
    server.script([read_readme(job) for _ in range(3)], then=F.hang())
    ctx, go = run(job, "claude")
    written = ClaudeMeter(ctx.log_path, 0, ClaudePrices.of(job.settings))
    watcher = cancel_when_asked(server, ctx, 4, written)
    result = go()
    watcher.join()

    assert ctx.cancel.is_set()
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert server.calls == 3
    assert server.billed() == (300, 60)
    assert server.side_billed() == (0, 0)  # everything billed was the agent loop's
    # Killed before its result line: the streamed figures are what the job records.
    assert (result.tokens_in, result.tokens_out) == server.billed()
    assert result.cost_usd is not None
    assert abs(result.cost_usd - claude_cost(job, 300, 60)) < 1e-12
    assert result.model_calls == 3
    assert "claude: streamed spend: 3 model call(s), tokens in 300 out 60" in job.log_text


def test_codex_cancelled_mid_loop_keeps_what_the_server_billed(codex_job: Any) -> None:
    job, server = codex_job([])
    server.script([F.tool("exec_command", {"cmd": "echo hi"}) for _ in range(3)], then=F.hang())
    ctx, go = run(job, "codex")
    home = job.folder / "runs" / f"{job.job.id}-home" / "codex"
    st = job.settings
    written = CodexMeter(home, st.codex_price_in_per_mtok_usd, st.codex_price_out_per_mtok_usd)
    watcher = cancel_when_asked(server, ctx, 4, written)
    result = go()
    watcher.join()

    assert ctx.cancel.is_set()
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert server.calls == 3
    assert server.billed() == (300, 60)
    assert server.side_billed() == (0, 0)
    # No turn.completed (codex's only usage on its output): the rollout file's counts.
    assert (result.tokens_in, result.tokens_out) == server.billed()
    expected = codex_cost_usd(
        300, 60, st.codex_price_in_per_mtok_usd, st.codex_price_out_per_mtok_usd
    )
    assert result.cost_usd is not None
    assert abs(result.cost_usd - expected) < 1e-12
    assert result.model_calls == 3


def test_claude_model_hang_after_answers_is_a_model_hang_and_keeps_its_spend(
    claude_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, server = claude_job([], agent_stall_timeout_s=HANG_STALL_TIMEOUT_S)
    stall_clock_from_first_request(monkeypatch, server)
    server.script([read_readme(job), read_readme(job)], then=F.hang())
    result = job.run("claude")

    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    stalled = f"stalled: no output and no file change for {HANG_STALL_TIMEOUT_S:g}s"
    assert f"{stalled}: {MODEL_HANG}" in result.reasons[0]
    assert server.billed() == (200, 40)
    assert (result.tokens_in, result.tokens_out) == server.billed()
    assert result.model_calls == 2
    # An outage of the backend's (its breaker counts it), not the task's own stall.
    assert result.api_fault is not None
    assert result.api_fault.kind is FaultKind.OUTAGE


def test_codex_model_hang_is_a_model_hang(codex_job: Any) -> None:
    job, _server = codex_job([F.hang()], agent_stall_timeout_s=HANG_STALL_TIMEOUT_S)
    result = job.run("codex")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    assert MODEL_HANG in result.reasons[0]
    assert result.api_fault is not None
    assert result.api_fault.kind is FaultKind.OUTAGE


def test_codex_stall_in_a_tool_is_not_a_model_hang(codex_job: Any) -> None:
    # A command that runs silent longer than the stall timeout: the agent's stall.
    job, _server = codex_job(
        [F.tool("exec_command", {"cmd": "sleep 30", "yield_time_ms": 60000})],
        agent_stall_timeout_s=HANG_STALL_TIMEOUT_S,
    )
    result = job.run("codex")
    assert result.outcome is OutcomeKind.TIMEOUT, result.reasons
    assert "stalled:" in result.reasons[0]
    assert MODEL_HANG not in result.reasons[0]
    assert result.api_fault is None  # the task's own: an infra retry of the task


# ------------------------------------------------------------------------------- budget

# The tool-loop tests' caps are reached at the 4th answer. The answers up to it come at
# once; every answer after it comes this long after its request, so the poll hook (every
# ~50 ms) reads the answer that reaches the cap and stops the job well before the next one
# comes. It was 0.5 s on every answer; the job is stopped within this one, so its length
# costs nothing while the stop works.
THINK_S = 1.0
CAP_AT_ANSWER = 4


def test_claude_tool_loop_is_stopped_at_its_cap_from_outside(claude_job: Any) -> None:
    job, server = claude_job([])
    server.script([read_readme(job)] * CAP_AT_ANSWER, then=read_readme(job, delay_s=THINK_S))
    cap = 0.003
    # The task has far more left than the job's cap: the CLI's own budget stop is not it.
    _ctx, go = run(job, "claude", spend_cap_usd=cap, task_left_usd=1.0)
    result = go()

    per_call = claude_cost(job, 100, 20)
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert result.reasons[0].startswith("claude: stopped from outside: over budget: streamed")
    assert "reached this job's cap $0.003" in result.reasons[0]
    assert result.cost_usd is not None
    assert cap <= result.cost_usd < cap + per_call
    # At $4/$20 per Mtok an answer is $0.0008: the 4th reaches the cap.
    assert (result.tokens_in, result.tokens_out) == (400, 80)
    assert result.model_calls == CAP_AT_ANSWER
    assert '"--max-budget-usd", "1.0"' in job.log_text


def test_claude_caps_itself_at_what_the_task_has_left(claude_job: Any) -> None:
    job, server = claude_job([])
    server.script([], then=read_readme(job))
    _ctx, go = run(job, "claude", task_left_usd=0.001)
    result = go()
    assert '"--max-budget-usd", "0.001"' in job.log_text
    # The CLI's own stop: the attempt FAILED (cut short), not a tool error.
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert "error_max_budget_usd" in result.reasons[0]
    assert server.calls >= 1


def codex_loop_to_its_cap(job: Any) -> JobResult:
    """Run codex with a cap of 3.5 model calls; the job must be stopped at the 4th
    (``CAP_AT_ANSWER``)."""
    st = job.settings
    per_call = codex_cost_usd(
        100, 20, st.codex_price_in_per_mtok_usd, st.codex_price_out_per_mtok_usd
    )
    cap = 3.5 * per_call
    _ctx, go = run(job, "codex", spend_cap_usd=cap)
    result: JobResult = go()
    assert result.outcome is OutcomeKind.CRASHED, result.reasons
    assert "over budget: streamed spend" in result.reasons[0]
    assert result.cost_usd is not None
    assert cap <= result.cost_usd < cap + per_call
    assert result.model_calls == CAP_AT_ANSWER
    return result


def test_codex_tool_loop_is_stopped_at_its_cap_from_outside(codex_job: Any) -> None:
    echo = F.tool("exec_command", {"cmd": "echo hi"})
    job, server = codex_job(
        [echo] * CAP_AT_ANSWER,
        then=F.tool("exec_command", {"cmd": "echo hi"}, delay_s=THINK_S),
    )
    result = codex_loop_to_its_cap(job)
    assert (result.tokens_in, result.tokens_out) == (400, 80)
    assert server.calls >= 4


@pytest.mark.parametrize("how", ["delete", "replace"])
def test_codex_agent_cannot_hide_its_spend_by_swapping_its_session_file(
    codex_job: Any, how: str
) -> None:
    # The attacker: codex's session file (where its spend streams) is in the job home the
    # agent works in. Its third command deletes it, or puts an empty one in its place, then
    # it loops on: the answer that reaches the cap (the 4th) comes after the attack. The
    # meter reads the file codex writes (held open), not the name.
    job, server = codex_job([])
    home = job.folder / "runs" / f"{job.job.id}-home" / "codex" / "sessions"
    # Through python: codex itself refuses an `rm -f`; nothing stops an unlink.
    found = f"glob.glob('{home}/*/*/*/rollout-*.jsonl')"
    hide = (
        f'python3 -c "import glob, os; [os.unlink(f) for f in {found}]"'
        if how == "delete"
        else f"python3 -c \"import glob, os; [os.replace(open(f + '.n', 'w').name, f) "
        f'for f in {found}]"'
    )
    echo = F.tool("exec_command", {"cmd": "echo hi"})
    server.script(
        # The attack's answer comes late too: by then the meter (looking every ~50 ms) has
        # found and opened the session file (codex makes it at its start) that the attack
        # then takes away. It is the one before the last: with its file deleted, codex looks
        # for it some 1.5 s before each request it sends after (measured), so each answer
        # after the attack costs that; one is what shows the meter still counts.
        [echo] * (CAP_AT_ANSWER - 2) + [F.tool("exec_command", {"cmd": hide}, delay_s=0.5), echo],
        then=F.tool("exec_command", {"cmd": "echo hi"}, delay_s=THINK_S),
    )
    codex_loop_to_its_cap(job)
    # The attack did happen: the name holds nothing of the run, or nothing is there.
    left = list(home.glob("*/*/*/rollout-*.jsonl"))
    assert all(b"token_count" not in f.read_bytes() for f in left), left


# ------------------------------------------------------------------------------- stall


def test_busy_silent_claude_is_not_taken_for_stalled(
    claude_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three answers 1 s apart (3 s of model time, twice the stall timeout of 1.5 s; it was
    # 2 s apart against 3 s, and before that five answers, which showed no more), and only
    # reads: no file changes. Each answer shows the agent works. The 0.5 s between a delay
    # and the timeout is for the CLI's own work from an answer to its next request (some
    # 50 ms measured), also on a loaded machine. The window counts from claude's first
    # request: its silent start-up is no part of what this test asks (HANG_STALL_TIMEOUT_S).
    job, server = claude_job([], agent_stall_timeout_s=1.5)
    stall_clock_from_first_request(monkeypatch, server)
    script = [read_readme(job, delay_s=1.0) for _ in range(3)]
    script += [
        F.tool("Write", {"file_path": str(job.out / A.DEV_REPORT), "content": dev_report()}),
        F.text("Done."),
    ]
    assert sum(t.delay_s for t in script) >= 2 * job.settings.agent_stall_timeout_s
    assert all(t.delay_s < job.settings.agent_stall_timeout_s for t in script)
    server.script(script)
    result = job.run("claude")

    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert not any("stalled" in r for r in result.reasons)
    assert server.calls == len(script) == 5
    assert result.model_calls == len(script)
    assert (result.tokens_in, result.tokens_out) == server.billed()


def test_claude_streamed_prices_match_the_clis_own_total(claude_job: Any) -> None:
    # Cache writes and reads priced apart: the streamed cost at the default prices is what
    # the pinned CLI computes for its default model.
    job, server = claude_job([])
    server.script(
        [
            read_readme(job, cache_creation_input_tokens=3000, cache_read_input_tokens=20000),
            F.text("Done.", input_tokens=500, output_tokens=200, cache_read_input_tokens=40000),
        ]
    )
    result = job.run("claude")
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    meter = ClaudeMeter(job.context().log_path, 0, ClaudePrices.of(job.settings))
    streamed = meter.update(final=True)
    assert (streamed.tokens_in, streamed.tokens_out) == server.billed() == (63600, 220)
    assert result.cost_usd is not None  # the CLI's own total_cost_usd
    assert abs(streamed.cost_usd - result.cost_usd) < 1e-9, (streamed.cost_usd, result.cost_usd)


# The attacks on the spend meter, for docs/security.md (tests/integration/security_doc.py).
DEFENDED = [
    {
        "attack": "a codex agent deletes its own session file (where its spend streams) and "
        "loops on, or puts an empty file in its place, to stay under its budget stop",
        "before": "a reader that opens the file by name each time reads nothing more: the loop "
        "ran on unstopped until the job's timeout",
        "now": "the meter holds the file codex writes open (and opens only a regular file, "
        "never through a symlink, never blocking on a FIFO): the job is stopped at its cap "
        "after the same 4 model calls",
        "test": "tests/integration/test_llm_spend.py",
    },
]
