"""A fresh start's old change: where it is kept, and how the next attempt is shown it.

``orch task retry --fresh`` (or a branch that no longer rebases) starts the task's
workspace again from current main (``worktrees.rebuild_from_main``), saving the
branch's old change at ``carried_diff_path``. Every agent of that attempt is shown it in
its failure context (``with_carried``); the patch backend can re-apply it.
"""

from __future__ import annotations

from pathlib import Path

# How much of a carried diff a prompt quotes; the whole of it is in the file it names.
MAX_CARRIED_CHARS = 20_000


def carried_diff_path(task_dir: Path, job_id: int) -> Path:
    """Where a fresh start keeps the branch's old change: ``runs/<job>-carried.diff``."""
    return task_dir / "runs" / f"{job_id}-carried.diff"


def with_carried(previous: str | None, carry: Path) -> str:
    """The failure context, plus the old change a fresh start offers the agent."""
    text = carry.read_bytes()[:MAX_CARRIED_CHARS].decode("utf-8", errors="replace")
    parts = [previous] if previous else []
    parts += [
        "### The previous attempt's change, made on an older main",
        "",
        f"The task branch was started again from current main. The old change is in "
        f"{carry} (shown here at most {MAX_CARRIED_CHARS} characters); carry over what "
        f"still applies.",
        "",
        "```diff",
        text.replace("```", "`\u200b``"),
        "```",
    ]
    return "\n".join(parts)
