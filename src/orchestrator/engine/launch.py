"""``launch_job``: decide who does a claimed job, run it, and say what the process did.

Reserved deterministic runners are intercepted here, before ``_spawn``, when their
kill-switch is on and the repo is in scope; otherwise the stage's agent is spawned (the
hybrid fallback). Whatever happens, the result is a value: an outcome and reasons.

The engine's own agents run elsewhere: ``command`` in ``engine/command_backend.py``,
``patch`` in ``engine/patch_backend.py`` (a fresh start's carried change is
``engine/fresh_start.py``); the LLM backends in ``agents/backends.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import sqlalchemy as sa

from orchestrator import sandbox
from orchestrator.agent_env import SUITE_ENV, scrubbed_env
from orchestrator.agents.backends import run_llm_backend
from orchestrator.agents.registry import (
    DEFAULT_LLM_BACKEND,
    RESERVED_RUNNERS,
    STAGE_ROLES,
    AgentKind,
    AgentSpec,
    parse_agent_spec,
)
from orchestrator.config import Settings
from orchestrator.domain.decide import APPROVED_AGENT, GATE_ONLY_AGENT, NO_PROCESS_AGENTS
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage
from orchestrator.engine.command_backend import run_command
from orchestrator.engine.fresh_start import carried_diff_path, with_carried
from orchestrator.engine.patch_backend import run_patch
from orchestrator.errors import UsageError
from orchestrator.gitops import commits, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.jobcontract import JobContext, JobResult, job_marker
from orchestrator.runners import (
    deploy_finalizer,
    post_deploy_monitor,
    protected,
    staging_runner,
    suite,
    test_runner,
)
from orchestrator.runners.base import RunContext, RunnerResult, runner_available
from orchestrator.runners.baseline import Baseline, read_for_branch
from orchestrator.store.rows import JobRow, RepoRow

log = logging.getLogger(__name__)


def llm_backend_of(job: JobRow, repo: RepoRow, settings: Settings) -> str | None:
    """The LLM backend this job will call (an LLM agent, or a runner's LLM fallback when
    the runner may not serve the repo), or None when it calls none."""
    if job.agent in NO_PROCESS_AGENTS:
        return None
    try:
        stage = Stage(job.stage)
        spec = parse_agent_spec(job.agent, stage)
        if spec.kind is AgentKind.LLM:
            return spec.backend
        if (
            spec.kind is AgentKind.RUNNER
            and not runner_available(settings, spec.backend, repo.name)[0]
        ):
            fallback = repo.agents.get(f"{stage.value}:fallback", DEFAULT_LLM_BACKEND)
            return parse_agent_spec(fallback, stage).backend
    except (UsageError, ValueError):
        return None
    return None


def uses_llm(job: JobRow, repo: RepoRow, settings: Settings) -> bool:
    """Whether this job will call an LLM: an LLM backend, or a runner falling back to one."""
    return llm_backend_of(job, repo, settings) is not None


def launch_job(ctx: JobContext) -> JobResult:
    """Run the job's agent; never raises (an internal error is a tool error)."""
    try:
        return _launch(ctx)
    except Exception as exc:
        log.exception("launch failed", extra={"task": ctx.task.key, "job": ctx.job.id})
        return JobResult(OutcomeKind.CRASHED, [f"internal error while launching: {exc!r}"])


def _launch(ctx: JobContext) -> JobResult:
    job, repo, st = ctx.job, ctx.repo, ctx.settings
    stage = Stage(job.stage)
    if job.fresh_start is not None and stage is Stage.DEVELOPMENT:
        carry = carried_diff_path(ctx.task_dir, job.id)
        wt = worktrees.rebuild_from_main(
            Path(repo.path),
            repo.main_branch,
            st.worktrees_dir,
            repo.name,
            ctx.task.key,
            carry_to=carry,
            remote=repo.remote,
        )
        if wt.path is not None and carry.exists():
            ctx = dataclasses.replace(
                ctx, previous_failure=with_carried(ctx.previous_failure, carry)
            )
    else:
        wt = worktrees.ensure_worktree(
            Path(repo.path),
            repo.main_branch,
            st.worktrees_dir,
            repo.name,
            ctx.task.key,
            remote=repo.remote,
        )
    if wt.path is None:
        return JobResult(OutcomeKind.NOT_STARTED, [wt.error or "no worktree"])
    worktree = wt.path
    if job.agent == APPROVED_AGENT:
        return JobResult(OutcomeKind.COMPLETED, ["approved by a human; no process"], 0, worktree)
    if job.agent == GATE_ONLY_AGENT:
        return JobResult(OutcomeKind.COMPLETED, ["the gates run again; no process"], 0, worktree)
    try:
        spec = parse_agent_spec(job.agent, stage)
    except UsageError as exc:
        return JobResult(OutcomeKind.NOT_STARTED, [str(exc)], worktree=worktree)
    refusal = _sandbox_refusal(st, spec)
    if refusal is not None:
        return JobResult(
            OutcomeKind.NOT_STARTED, [refusal], worktree=worktree, sandbox_missing=True
        )
    if stage is Stage.DEVELOPMENT:
        # Whatever the last suite or a crashed attempt left uncommitted is not this
        # attempt's work: the agent starts on the branch's last commit, so what is left to
        # commit after it is exactly what it produced.
        # A workspace made just now (read-tree into a new folder) has nothing to discard.
        discarded = None if wt.created else _clean_start(worktree)
        if discarded is not None and discarded.startswith("cannot"):
            return JobResult(OutcomeKind.NOT_STARTED, [discarded], worktree=worktree)
        result = _dispatch(ctx, spec, stage, worktree)
        if discarded is not None:
            result = dataclasses.replace(result, reasons=[discarded, *result.reasons])
        return _publish(ctx, result, worktree)
    if stage is Stage.TESTING:
        return _testing(ctx, spec, worktree)
    return _dispatch(ctx, spec, stage, worktree)


def _testing(ctx: JobContext, spec: AgentSpec, worktree: Path) -> JobResult:
    """The testing stage, whoever tests: protected changes no human accepted wait for one
    (the suite does not run), and the test-runner gets the tests that passed on main."""
    repo, st = ctx.repo, ctx.settings
    found = protected.check_task_branch(worktree, repo.main_branch, repo.options, ctx.task_dir)
    if found.problem is not None:
        why = f"protected paths cannot be checked: {found.problem}"
        return JobResult(OutcomeKind.NOT_STARTED, [why], worktree=worktree)
    if found.held:
        protected.note_hold(ctx.task_dir, found, time.time())
        return JobResult(
            OutcomeKind.COMPLETED,
            protected.hold_reasons(found, ctx.task.key),
            worktree=worktree,
            awaiting_human=True,
        )
    protected.clear_hold(ctx.task_dir)
    notes = [protected.approved_note(found)] if found.changes else []
    base: Baseline | None = None
    runs_runner = spec.kind is AgentKind.RUNNER and spec.backend == "test-runner"
    if runs_runner and found.base is not None and runner_available(st, spec.backend, repo.name)[0]:
        argv = list(repo.test_cmd) if repo.test_cmd else list(suite.DEFAULT_COMMAND)
        approved = protected.approval_of(ctx.task_dir, found.fingerprint) if notes else None
        try:
            base = read_for_branch(st, repo.id, worktree, found.base, argv, approved or ())
        except sa.exc.SQLAlchemyError as exc:
            why = f"cannot read the tests that passed on main: {type(exc).__name__}: {exc}"
            return JobResult(OutcomeKind.NOT_STARTED, [why], worktree=worktree)
    result = _dispatch(ctx, spec, Stage.TESTING, worktree, baseline=base)
    if notes:
        result = dataclasses.replace(result, reasons=[*notes, *result.reasons])
    return result


def _publish(ctx: JobContext, result: JobResult, worktree: Path) -> JobResult:
    """Show the development attempt's commit on the user's ``orch/<KEY>``.

    The branch is made in the task's workspace; the user's repository gets it here, at the
    end of every development job. A branch that cannot be published is infra trouble (the
    attempt's commit stays in the workspace and is published by the next job).
    """
    published, detail = worktrees.publish_branch(Path(ctx.repo.path), worktree, ctx.task.key)
    if published:
        return result
    return dataclasses.replace(
        result, outcome=OutcomeKind.CRASHED, reasons=[*result.reasons, detail]
    )


# Agents that start no process of the task's code: a human, and the runners that deploy with
# the user's credentials (sandboxed only with ORCH_SANDBOX_DEPLOY) or only probe a URL.
_NO_UNTRUSTED_PROCESS = frozenset({"manual", "deploy-finalizer", "post-deploy-monitor"})


def _sandbox_refusal(st: Settings, spec: AgentSpec) -> str | None:
    """Why this job must not start: it runs untrusted code and the sandbox cannot run."""
    if not st.sandbox or spec.backend in _NO_UNTRUSTED_PROCESS:
        return None
    found = sandbox.probe()
    if found.ok:
        return None
    return f"not started: no sandbox for untrusted code: {found.detail}"


def _clean_start(worktree: Path) -> str | None:
    """Put the worktree back at the branch's last commit; what was discarded, or None."""
    left, detail = commits.changed_paths(worktree)
    if left is None:
        return f"cannot start on a clean worktree: {detail}"
    if not left:
        return None
    restored, how = commits.restore_to_head(worktree)
    if not restored:
        return f"cannot start on a clean worktree: {how}"
    return f"discarded what an earlier run left uncommitted: {gitcmd.name_paths(left)}"


def _dispatch(
    ctx: JobContext,
    spec: AgentSpec,
    stage: Stage,
    worktree: Path,
    *,
    baseline: Baseline | None = None,
) -> JobResult:
    """A reserved runner when it may serve the repo (else its LLM fallback), or the agent."""
    job, repo, st = ctx.job, ctx.repo, ctx.settings
    if spec.kind is AgentKind.RUNNER:
        ok, why = runner_available(st, spec.backend, repo.name)
        if ok:
            res = _run_runner(ctx, spec.backend, worktree, baseline=baseline)
            return JobResult(
                res.outcome,
                list(res.reasons),
                res.exit_code,
                worktree,
                artifacts=res.produced,
                passed_tests=res.passed_tests,
            )
        fallback = repo.agents.get(f"{stage.value}:fallback", DEFAULT_LLM_BACKEND)
        log.info("runner unavailable, falling back", extra={"task": ctx.task.key, "action": why})
        result = _spawn(ctx, fallback, stage, worktree)
        return dataclasses.replace(
            result, reasons=[why, f"fell back to {fallback}", *result.reasons], worktree=worktree
        )
    return _spawn(ctx, job.agent, stage, worktree)


def _runner_ctx(ctx: JobContext, worktree: Path, runner: str) -> RunContext:
    return RunContext(
        task_key=ctx.task.key,
        repo_name=ctx.repo.name,
        worktree=worktree,
        artifact_dir=ctx.task_dir,
        log_path=ctx.log_path,
        env=scrubbed_env(
            ctx.repo,
            {"HOME": os.environ.get("HOME", str(ctx.task_dir)), **SUITE_ENV},
            agent_keys=runner == "deploy-finalizer",
        ),
        settings=ctx.settings,
        cancel=ctx.cancel,
        on_start=ctx.on_start,
        marker=job_marker(ctx.job),
        repo_path=Path(ctx.repo.path),
        sandbox_kind="deploy" if runner == "deploy-finalizer" else "suite",
        repo_options=ctx.repo.options,
        # The deploy gets these (agent_keys): its log's header shows them masked.
        secret_names=frozenset(ctx.repo.agent_env),
    )


def _run_runner(
    ctx: JobContext,
    runner: str,
    worktree: Path,
    *,
    baseline: Baseline | None = None,
) -> RunnerResult:
    rctx = _runner_ctx(ctx, worktree, runner)
    result = _run_runner_in(ctx, rctx, runner, baseline=baseline)
    return dataclasses.replace(result, produced=dict(rctx.produced))


def _run_runner_in(
    ctx: JobContext,
    rctx: RunContext,
    runner: str,
    *,
    baseline: Baseline | None = None,
) -> RunnerResult:
    repo = ctx.repo
    if runner == "test-runner":
        # Checked at registration (loopback http). Anything else stored there is passed on
        # as text: the smoke check refuses it and the stage fails, never skips the check.
        smoke = repo.options.get("smoke_urls") if isinstance(repo.options, dict) else None
        if smoke is None:
            urls: list[str] = []
        else:
            urls = [str(u) for u in smoke] if isinstance(smoke, list) else [str(smoke)]
        return test_runner.run_tests(rctx, repo.test_cmd, smoke_urls=urls, baseline=baseline)
    if runner == "staging-runner":
        return staging_runner.run_staging(rctx, repo.staging_cmd)
    if runner == "deploy-finalizer":
        return deploy_finalizer.run_deploy(rctx, repo.deploy_cmd)
    if runner == "post-deploy-monitor":
        opts = repo.options.get("monitor", {}) if isinstance(repo.options, dict) else {}
        return post_deploy_monitor.run_monitor(
            rctx,
            repo.health_url,
            checks=int(opts.get("checks", 5)),
            interval_s=float(opts.get("interval_s", 1.0)),
        )
    msg = f"no runner {runner!r}"
    raise AssertionError(msg)


def _spawn(ctx: JobContext, agent: str, stage: Stage, worktree: Path) -> JobResult:
    """Run a non-reserved agent: ``command``, ``patch``, ``manual``; LLM CLIs come later."""
    spec = parse_agent_spec(agent, stage)
    if spec.backend == "patch":
        return run_patch(ctx, worktree)
    if spec.backend == "manual":
        return JobResult(
            OutcomeKind.COMPLETED,
            ["awaiting human: `orch task approve KEY` completes it"],
            worktree=worktree,
            awaiting_human=True,
        )
    if spec.backend == "command":
        return run_command(ctx, spec.template, stage, worktree)
    return run_llm_backend(ctx, spec.backend, STAGE_ROLES[stage], stage, worktree)


RESERVED = frozenset(RESERVED_RUNNERS)
