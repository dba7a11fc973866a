"""What a gate check is given and what it may trust: ``GateContext``, ``read_produced``.

Below every check (the artifact checks and the branch check in ``registry``, the merge
gate) and the table that names them, so a check never imports the table it is in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.config import Settings
from orchestrator.domain.stages import Stage
from orchestrator.domain.verdicts import ARTIFACT_CHANGED, Verdict, VerdictStatus, failed
from orchestrator.forge.base import Forge
from orchestrator.gitops import worktrees
from orchestrator.store.rows import RepoRow, TaskRow


@dataclass(frozen=True)
class GateContext:
    """What a check may look at."""

    task: TaskRow
    repo: RepoRow
    stage: Stage
    task_dir: Path
    worktree: Path | None
    settings: Settings
    # For checks that keep state (the merge gate's validated trees and results).
    engine: sa.Engine | None = None
    # A check that runs a process (the merge gate's re-test) runs it as part of the job:
    # the job's cancel (cancel, reaper, lease loss, shutdown), its process registration and
    # its env marker, so recovery after a crash finds and kills it like any agent.
    cancel: threading.Event | None = None
    job_id: int | None = None
    on_start: Callable[[int, int], None] | None = None
    marker: str | None = None
    # {artifact name: text} the job produced, as the orchestrator took it (a runner's
    # verdict as returned, an agent's artifact as collected): what the checks read.
    produced: Mapping[str, str] = field(default_factory=dict)
    # {artifact name: SHA-256s} the task's jobs recorded: a check that reads a file no job
    # of this run produced (a gate-only retry, an approval) reads it only if it is one of
    # these. None: no record was given, so such a file is not read at all.
    recorded: Mapping[str, set[str]] | None = None
    # {artifact name: text} the gates themselves wrote (the merge report, the coverage
    # report), for the job's record.
    written: dict[str, str] = field(default_factory=dict)
    # The repo's forge, for a repo that lands by pull request (None: connected on demand
    # from the repo's settings).
    forge: Forge | None = None
    # The branch's change against main as the job's own commit told it (the orchestrator
    # committed on main itself: ``commits.Committed.branch_diff``); None: ask git.
    branch_diff: str | None = None

    @property
    def workspace(self) -> Path:
        """The task's worktree: the job's, or where the engine makes it for the task."""
        return self.worktree or worktrees.worktree_path(
            self.settings.worktrees_dir, self.repo.name, self.task.key
        )


Check = Callable[[GateContext], Verdict]


def read_produced(ctx: GateContext, name: str) -> tuple[str | None, Verdict | None]:
    """The text of artifact ``name`` a check may trust, or the verdict that refuses it.

    The job's own artifact comes from memory, and the file must still say the same, else
    it was changed after it was written: a tool error (the stage runs again, an alert is
    raised), never the file's word. Otherwise (no job of this run produced it) the file is
    read only when a job of the task recorded exactly it.
    """
    got = taskdir.load_artifact(ctx.task_dir, name)
    produced = ctx.produced.get(name)
    if produced is not None:
        if got.text != produced:
            now = "missing" if got.text is None and got.problem is None else "different"
            return None, Verdict(
                VerdictStatus.FAIL,
                [
                    f"{name}: artifact changed after it was written (the file is now "
                    f"{now}); the job's own verdict stands for nothing until the stage "
                    f"runs again"
                ],
                tool_error=ARTIFACT_CHANGED,
            )
        return produced, None
    if got.problem is not None:
        # There, but not a file a gate may read (too large, not text, a symlink...).
        return None, failed(f"{name}: {got.problem}")
    if got.text is None:
        return None, None
    if ctx.recorded is None or taskdir.digest(got.text) not in ctx.recorded.get(name, set()):
        return None, failed(f"{name}: {taskdir.NOT_OURS}; not read")
    return got.text, None
