"""What every agent backend does around its process, whoever the backend is.

The ``command`` and ``patch`` backends (``engine.command_backend``,
``engine.patch_backend``) and the LLM backends (``agents.backends``) share these: run the
agent's process in its sandbox, take its artifact from the job's own output folder, commit
what a development agent left uncommitted, and write the orchestrator's own development
report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc_group, sandbox, taskdir
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.gitops import commits
from orchestrator.jobcontract import JobContext
from orchestrator.private_files import append_private_text

__all__ = [
    "Collected",
    "Leftovers",
    "collect_artifact",
    "commit_leftovers",
    "dev_report",
    "run_agent_process",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    """An agent's artifact as the orchestrator took it from the job's output folder."""

    reasons: list[str]
    # name -> text, when the artifact was there and is text a gate may read.
    artifacts: dict[str, str]
    # name -> why not, when it was there but is no text a gate may read (moved in as it is,
    # for the gate to refuse with that reason).
    refused: dict[str, str] = field(default_factory=dict)


def collect_artifact(ctx: JobContext, out_dir: Path, stage: Stage) -> Collected:
    """Copy the stage's artifact from the job's output folder into the task folder.

    It is read once, with the loader's checks (a regular file of its own, within the size
    cap, UTF-8 text); that text is what the gate reads and what the task folder keeps. What
    fails the checks is moved in as it is, so the gate refuses it with the reason. No
    artifact written: none is left in the task folder either, so an earlier attempt's
    report is never read as this job's.
    """
    name = STAGE_TRANSITIONS[stage].artifact
    src, dest = out_dir / name, ctx.task_dir / name
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif os.path.lexists(dest):
        dest.unlink()
    if not os.path.lexists(src):
        return Collected([f"the agent wrote no {name}"], {})
    got = taskdir.load_artifact(out_dir, name)
    if got.text is None:
        os.replace(src, dest)
        return Collected([], {}, {name: got.problem or "not readable"})
    taskdir.write_atomic(dest, got.text)
    src.unlink()
    return Collected([], {name: got.text})


def run_agent_process(
    ctx: JobContext,
    request: proc_group.ExecuteRequest,
    writable: list[Path],
    prompt: Path,
    poll: Callable[[], str | None] | None = None,
) -> proc_group.Outcome:
    """Run an agent's process in its sandbox: the worktree and the job's own folders
    writable, its prompt readable. No sandbox where one is required: not started."""
    try:
        box = sandbox.for_job(
            ctx.settings,
            kind="agent",
            repo_path=Path(ctx.repo.path),
            argv=request.argv,
            writable=writable,
            readonly=[prompt],
            env_path=request.env.get("PATH"),
            options=ctx.repo.options,
        )
    except sandbox.SandboxUnavailable as exc:
        return proc_group.refuse(request, f"sandbox: {exc}")
    if box is None:
        log.warning(
            "sandbox off: %s runs bare (ORCH_SANDBOX=off)",
            ctx.job.agent,
            extra={"task": ctx.task.key, "job": ctx.job.id, "action": "sandbox-off"},
        )
    return proc_group.run(
        dataclasses.replace(request, sandbox=box),
        cancel=ctx.cancel,
        on_start=ctx.on_start,
        poll=poll,
        tree_kill=ctx.settings.subprocess_tree_kill_enabled,
    )


@dataclass(frozen=True)
class Leftovers:
    """What committing a development agent's leftovers did, for its job's result."""

    # The orchestrator's FAILED record when debris was refused (None: nothing refused).
    refused: dict[str, str] | None = None
    # The branch's change against main, when it is exactly this commit's (for the gate).
    branch_diff: str | None = None


def commit_leftovers(ctx: JobContext, worktree: Path, agent: str, reasons: list[str]) -> Leftovers:
    """Commit what a development agent left uncommitted; refused debris is a FAIL.

    Unmerged paths or conflict-marker lines are never committed: the attempt is undone and
    the orchestrator records ``dev_status: FAILED`` with the reason, whatever the agent's
    own report claimed; that record is ``refused``. A commit made on main itself tells the
    development gate the branch's change (``commits.commit_all``'s ``branch_diff``).
    """
    done = commits.commit_all(
        worktree,
        f"{ctx.task.key}: development attempt {ctx.job.attempt} ({agent})",
        main=ctx.repo.main_branch,
    )
    if done:
        reasons.append("the orchestrator committed what the agent left uncommitted")
        return Leftovers(branch_diff=done.branch_diff)
    if done.status == "refused":
        reasons.append(done.detail)
        return Leftovers(refused=dev_report(ctx, "FAILED", [done.detail], agent))
    return Leftovers()


def dev_report(
    ctx: JobContext, status: str, reasons: list[str], agent: str = "patch"
) -> dict[str, str]:
    """Write ``10-dev-report.md`` as the orchestrator's record, and say so in the job log;
    {name: text} of what was written, for the gate."""
    body = "\n".join(f"- {r}" for r in reasons)
    text = A.render_artifact(
        A.DEV_REPORT, {"dev_status": status, "agent": agent, "attempt": ctx.job.attempt}, body
    )
    taskdir.write_atomic(ctx.task_dir / A.DEV_REPORT, text)
    with append_private_text(ctx.log_path) as fh:
        fh.write(f"{agent} backend: {status}\n{body}\n")
    return {A.DEV_REPORT: text}
