"""What a task tells the forge issue it came from: blocked (and why), done.

After a job's end is committed, a task filed from a forge issue that was just blocked or is
done gets a comment on its issue, sent in the background so the engine never waits on the
forge (the pull request's own notes, opened and merged, come from the landing,
``gates/pull_land.py``). A forge that fails is logged, never retried here: a comment is
news, not state, and the task's history keeps every reason.
"""

from __future__ import annotations

import logging
import os
import threading

import sqlalchemy as sa

from orchestrator.domain.quoting import fence_text
from orchestrator.domain.stages import Transition, TransitionKind
from orchestrator.errors import OrchestratorError
from orchestrator.forge.base import ForgeFault
from orchestrator.forge.connect import forge_for
from orchestrator.store import queries

__all__ = ["MAX_NOTE_CHARS", "note_for", "notify_in_background"]

log = logging.getLogger(__name__)

# A comment keeps the first reasons and stays short; the history has them all.
MAX_NOTE_CHARS = 3000


def note_for(key: str, t: Transition) -> str | None:
    """The comment a task's issue gets for ``t``; None when the move is no news for it."""
    if t.kind is TransitionKind.DONE:
        return f"Task {key} is done: its change is on main and through every stage."
    if t.kind is not TransitionKind.BLOCK:
        return None
    head = f"Task {key} is blocked at {t.to_stage.value}; a human must look:"
    # The reasons hold what agents wrote: quoted as code, none of it is markdown of a
    # comment in the user's name (see ``domain.quoting``).
    quoted = "\n".join(f"- {r.splitlines()[0] if r else r}" for r in t.reasons)
    note = f"{head}\n\n{fence_text(quoted)}"
    if len(note) > MAX_NOTE_CHARS:
        # Cut inside the block, which then needs no longer a fence than before.
        quoted = quoted[: len(quoted) - (len(note) - MAX_NOTE_CHARS) - 4] + "\n..."
        note = f"{head}\n\n{fence_text(quoted)}"
    return note


def _send(engine: sa.Engine, task_id: int, body: str) -> None:
    try:
        with engine.connect() as conn:
            task = queries.get_task_by_id(conn, task_id)
            repo = queries.get_repo_by_id(conn, task.repo_id) if task else None
        if task is None or repo is None or task.forge_issue is None:
            return
        forge = forge_for(repo, os.environ)
        if forge is not None:
            forge.comment(task.forge_issue, body)
    except (ForgeFault, OrchestratorError, sa.exc.SQLAlchemyError) as exc:
        log.warning(
            "could not comment on the task's issue: %s", exc, extra={"action": "forge-note"}
        )


def notify_in_background(
    engine: sa.Engine, task_id: int, key: str, forge_issue: int | None, t: Transition | None
) -> None:
    """Comment on the task's issue about ``t`` without holding up the caller."""
    if forge_issue is None or t is None:
        return
    body = note_for(key, t)
    if body is None:
        return
    threading.Thread(
        target=_send, args=(engine, task_id, body), name=f"forge-note-{key}", daemon=True
    ).start()
