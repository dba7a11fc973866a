"""Run an LLM coding agent (``claude``, ``codex``, ``aider``) for one job.

``run_llm_backend`` is what ``engine.launch._spawn`` calls for an LLM backend. It renders
the role prompt (a template error ends the job ``not-started``; no half prompt is sent),
asks the backend for its plan (argv, env additions, files), prepares the job's own home,
runs the plan through ``proc_group.run`` (scrubbed environment, stdin /dev/null, the agent
timeout, tree kill, and as the poll hook the spend meter, which stops the job at its spend
cap, then the stall detector), reads the run's output back from the job log, and lets the
backend's pure parser say what happened: an outcome with reasons, cost and tokens, and a
model-API failure by kind (``domain.faults``; a stall while the model owed an answer is an
outage too). What streamed fills in what the parser could not read (``meter.merge_spend``).
At the development stage whatever the agent left uncommitted is committed, as for the
``command`` backend.

The result is never the agent's word: ``completed`` only means the tool really ran; the
gate reads the artifact and the engine decides.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc_group, taskdir
from orchestrator.agent_env import scrubbed_env
from orchestrator.agents import aider, claude, codex
from orchestrator.agents.common import (
    LlmPlan,
    LlmResult,
    PlanError,
    PlanRequest,
    log_size,
    run_output,
    tool_error_of,
)
from orchestrator.agents.harness import (
    collect_artifact,
    commit_leftovers,
    dev_report,
    run_agent_process,
)
from orchestrator.agents.meter import SpendWatch, merge_spend, meter_for, spend_line
from orchestrator.agents.prompts import PromptError, render_prompt
from orchestrator.agents.stall import StallDetector, model_hang
from orchestrator.agents.tally import Spend
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.faults import ApiFault, FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.gitops import commits
from orchestrator.jobcontract import JobContext, JobResult, job_marker, job_out_dir
from orchestrator.private_files import append_private_text, private_dir

__all__ = ["LLM_PLANNERS", "prepare_files", "run_llm_backend"]

LLM_PLANNERS: dict[str, Callable[[PlanRequest], LlmPlan]] = {
    "claude": claude.plan_claude,
    "codex": codex.plan_codex,
    "aider": aider.plan_aider,
}


@dataclass(frozen=True)
class _Run:
    outcome: proc_group.Outcome
    output: str
    detector: StallDetector
    # What the spend meter read as the job ran, to its last line.
    spend: Spend


def prepare_files(files: dict[Path, str]) -> None:
    """Write a plan's files whole, readable by the job's user only (they may name keys)."""
    for path, text in files.items():
        taskdir.write_atomic(path, text, durable=False)


def _append_log(log_path: Path, lines: list[str]) -> None:
    # The lines quote the CLI's output (a model error's message): a lone surrogate in it
    # (a JSON escape) is written escaped, as proc_group writes its own lines, not a crash.
    with append_private_text(log_path) as fh:
        for line in lines:
            fh.write(f"[orchestrator] {line}\n")


def run_llm_backend(
    ctx: JobContext, backend: str, role: str, stage: Stage, worktree: Path
) -> JobResult:
    """Run ``backend`` as ``role`` at ``stage`` in ``worktree``; what the process did."""

    def not_started(*reasons: str) -> JobResult:
        _append_log(ctx.log_path, [f"{backend}: not started: {r}" for r in reasons])
        return JobResult(OutcomeKind.NOT_STARTED, list(reasons), worktree=worktree)

    planner = LLM_PLANNERS.get(backend)
    if planner is None:
        return not_started(f"no LLM backend {backend!r} (known: {', '.join(LLM_PLANNERS)})")
    st = ctx.settings
    artifact = STAGE_TRANSITIONS[stage].artifact
    task_md = taskdir.read_artifact(ctx.task_dir, A.TASK) or ""
    # The agent writes its artifact in the job's own folder; the orchestrator moves it into
    # the task folder after the run (collect_artifact), which the agent cannot reach.
    out_dir = job_out_dir(ctx)
    try:
        prompt = render_prompt(
            role, stage, ctx.task.key, task_md, out_dir, ctx.previous_failure, worktree
        )
    except PromptError as exc:
        return not_started(f"role prompt: {exc}")
    prompt_file = ctx.task_dir / "runs" / f"{ctx.job.id}-prompt.md"
    taskdir.write_atomic(prompt_file, prompt, durable=False)
    job_home = ctx.task_dir / "runs" / f"{ctx.job.id}-home"
    private_dir(job_home)
    env = scrubbed_env(
        ctx.repo,
        {
            "HOME": str(job_home),
            "ORCH_TASK": ctx.task.key,
            "ORCH_STAGE": stage.value,
            "ORCH_ATTEMPT": str(ctx.job.attempt),
            "ORCH_ARTIFACT_DIR": str(out_dir),
            "ORCH_WORKTREE": str(worktree),
            "ORCH_PROMPT_FILE": str(prompt_file),
        },
    )
    request = PlanRequest(
        backend=backend,
        role=role,
        stage=stage,
        task_key=ctx.task.key,
        prompt=prompt,
        worktree=worktree,
        artifact_dir=out_dir,
        artifact=artifact,
        job_home=job_home,
        settings=st,
        env=env,
        is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        task_left_usd=ctx.task_left_usd,
    )
    try:
        plan = planner(request)
        prepare_files(plan.files)
    except PlanError as exc:
        return not_started(str(exc))
    except OSError as exc:
        return not_started(f"cannot prepare the job home {job_home}: {exc}")

    run = _execute(
        ctx, backend, plan, {**env, **plan.env}, worktree, out_dir, artifact, job_marker(ctx.job)
    )
    collected = collect_artifact(ctx, out_dir, stage)
    reasons_extra = list(collected.reasons)
    artifacts = dict(collected.artifacts)
    branch_diff = None
    if backend == "aider":
        result = _finish_aider(ctx, plan, run, worktree, reasons_extra, artifacts)
    else:
        result = _parse(backend, st, run)
        if result.outcome is OutcomeKind.COMPLETED and stage is Stage.DEVELOPMENT:
            left = commit_leftovers(ctx, worktree, backend, reasons_extra)
            artifacts.update(left.refused or {})
            branch_diff = left.branch_diff
        if result.cut_short:
            _set_aside(ctx, stage, backend, out_dir, result, reasons_extra, artifacts)
    # The parser's final figures, or what streamed when the run ended before them.
    result = merge_spend(backend, result, run.spend, run.outcome.stop_reason)
    if result.api_fault is None and model_hang(run.outcome.stop_reason):
        # Stopped while the model owed an answer: the server hangs, an outage of the
        # backend's, not the task's own stall.
        said = str(run.outcome.stop_reason)
        result = dataclasses.replace(result, api_fault=ApiFault(FaultKind.OUTAGE, said))
    reasons = [*result.reasons, *reasons_extra]
    _append_log(
        ctx.log_path,
        [
            f"{backend}: {result.outcome.value}",
            *reasons,
            f"{backend}: streamed spend: {spend_line(run.spend)}",
        ],
    )
    return JobResult(
        result.outcome,
        reasons,
        run.outcome.exit_code,
        worktree,
        cost_usd=result.cost_usd,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        artifacts=artifacts,
        refused_artifacts=collected.refused,
        api_fault=result.api_fault,
        model_calls=result.model_calls,
        branch_diff=branch_diff,
    )


def _execute(
    ctx: JobContext,
    backend: str,
    plan: LlmPlan,
    env: dict[str, str],
    worktree: Path,
    out_dir: Path,
    artifact: str,
    marker: str,
) -> _Run:
    st = ctx.settings
    start = log_size(ctx.log_path)
    meter = meter_for(backend, plan, st, ctx.log_path, start)
    # Activity is output in the log, a changed file in the worktree or the artifact, or a
    # model answer the meter read. The task folder as a whole is not watched: the job home
    # inside it holds the CLI's own state files, which a hung CLI may still touch.
    detector = StallDetector(
        ctx.log_path,
        [worktree, out_dir / artifact],
        st.agent_stall_timeout_s,
        activity=[meter.progress],
        waiting_on_model=lambda: meter.awaiting_model,
    )
    request = proc_group.ExecuteRequest(
        argv=plan.argv,
        cwd=worktree,
        env=env,
        log_path=ctx.log_path,
        timeout_s=st.agent_timeout_s,
        grace_s=st.kill_grace_s,
        marker=marker,
        secret_names=frozenset(ctx.repo.agent_env),
    )
    job_home = ctx.task_dir / "runs" / f"{ctx.job.id}-home"
    prompt_file = ctx.task_dir / "runs" / f"{ctx.job.id}-prompt.md"
    # The poll hook reads the meter, stops the job once its streamed spend reaches its cap,
    # else asks the stall detector.
    watch = SpendWatch(meter, detector, ctx.spend_cap_usd)
    outcome = run_agent_process(
        ctx, request, [worktree, job_home, out_dir], prompt_file, poll=watch
    )
    # The last lines the CLI wrote before it ended (or was killed) count too.
    spend = meter.update(final=True)
    meter.close()
    return _Run(outcome, run_output(ctx.log_path, start), detector, spend)


def _set_aside(
    ctx: JobContext,
    stage: Stage,
    backend: str,
    out_dir: Path,
    result: LlmResult,
    extra: list[str],
    artifacts: dict[str, str],
) -> None:
    """A run its CLI cut short (max turns, its budget cap) FAILED, whatever its artifact
    says: the artifact is not taken (it stays in the job's output folder, for a human), and
    a developer's attempt is recorded ``dev_status: FAILED`` with the reasons, which the
    rollback feeds into the next prompt. Other roles leave no artifact: their gate FAILs."""
    name = STAGE_TRANSITIONS[stage].artifact
    text = artifacts.pop(name, None)
    if text is not None:
        (ctx.task_dir / name).unlink(missing_ok=True)
        taskdir.write_atomic(out_dir / name, text, durable=False)
        extra.append(
            f"the agent's {name} is not taken: its run was cut short "
            f"(kept as runs/{out_dir.name}/{name})"
        )
    if stage is Stage.DEVELOPMENT:
        reasons = [
            *result.reasons,
            *extra,
            "the next attempt continues on the same branch, from what this one committed",
        ]
        artifacts.update(dev_report(ctx, "FAILED", reasons, backend))
        extra.append(f"the orchestrator wrote {A.DEV_REPORT}: dev_status FAILED")


def _parse(backend: str, st: Settings, run: _Run) -> LlmResult:
    if backend == "claude":
        return claude.parse_claude(
            run.outcome,
            run.output,
            max_turns=st.claude_max_turns,
            permission_mode=st.claude_permission_mode,
        )
    return codex.parse_codex(
        run.outcome,
        run.output,
        price_in_per_mtok=st.codex_price_in_per_mtok_usd,
        price_out_per_mtok=st.codex_price_out_per_mtok_usd,
        sandbox_mode=codex.effective_sandbox(st),
    )


def _finish_aider(
    ctx: JobContext,
    plan: LlmPlan,
    run: _Run,
    worktree: Path,
    extra: list[str],
    artifacts: dict[str, str],
) -> LlmResult:
    """aider's end: clean its cache out of the tree, commit, judge, write the dev report
    (into ``artifacts`` too: the orchestrator's record, which the gate reads)."""
    for cache in worktree.glob(aider.TAGS_CACHE_GLOB):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache, ignore_errors=True)
    analytics: str | None = None
    if plan.side_output is not None:
        try:
            analytics = plan.side_output.read_text(encoding="utf-8", errors="replace")
        except OSError:
            analytics = None
    committed, diff_detail = False, "not looked at: the run did not end by itself"
    if aider.unanswered(analytics):
        # The model failed mid-run (a tool error): what aider left stays uncommitted, as
        # after any tool error. The retry commits it with its own work, so a retry that
        # finds the edit already made does not read as "changed nothing".
        diff_detail = "not committed: the model failed before aider was done"
    elif tool_error_of(run.outcome, "aider") is None:
        # The diff of *this* attempt: aider commits nothing itself (--no-auto-commits), so
        # what it changed is exactly what is left to commit. Earlier attempts' commits on
        # the branch do not count for it.
        done = commits.commit_all(
            worktree, f"{ctx.task.key}: development attempt {ctx.job.attempt} (aider)"
        )
        committed, diff_detail = bool(done), done.detail
    if committed:
        _, diff_detail = commits.has_diff_vs(worktree, ctx.repo.main_branch)
    parsed = aider.parse_aider(
        run.outcome,
        analytics,
        has_diff=committed,
        diff_detail=f"this attempt: {diff_detail}",
        output=run.output,
    )
    if parsed.dev_status is not None:
        body = "\n".join(f"- {r}" for r in parsed.result.reasons)
        text = A.render_artifact(
            A.DEV_REPORT,
            {"dev_status": parsed.dev_status, "agent": "aider", "attempt": ctx.job.attempt},
            body,
        )
        taskdir.write_atomic(ctx.task_dir / A.DEV_REPORT, text)
        artifacts[A.DEV_REPORT] = text
        extra.append(f"the orchestrator wrote {A.DEV_REPORT}: dev_status {parsed.dev_status}")
    return parsed.result
