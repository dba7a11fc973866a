"""The model backends' breakers as a user sees and steers them (``orch backend``)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from orchestrator.agents.registry import LLM_BACKENDS
from orchestrator.domain import breaker
from orchestrator.errors import NotFoundError
from orchestrator.gates.forge_breaker import FORGE_PREFIX
from orchestrator.store import breakers
from orchestrator.store import jobs as jobq


def list_backends(engine: sa.Engine) -> list[breakers.BackendRow]:
    """The model backends' breakers, by name (a backend no job has used has none)."""
    with engine.connect() as conn:
        return breakers.list_backends(conn)


def _known_name(name: str) -> bool:
    if name in LLM_BACKENDS:
        return True
    host = name.removeprefix(FORGE_PREFIX)
    return host != name and 0 < len(host) <= 255 and host.isprintable() and " " not in host


def resume_backend(engine: sa.Engine, name: str) -> breakers.BackendRow:
    """Probe a paused model backend (or forge) at once (``orch backend resume``): its next
    job runs as the probe, and the model (or forge) answering it closes the breaker."""
    with engine.begin() as conn:
        breakers.lock_spend(conn)
        # Only a backend's name is looked up (a NUL is an error on PostgreSQL): a model
        # backend's, or a forge's (``forge:<host>``, see gates.forge_breaker).
        row = breakers.get(conn, name) if _known_name(name) else None
        if row is None:
            known = ", ".join(r.state.name for r in breakers.list_backends(conn)) or "none yet"
            msg = f"no model backend {name!r} has run a job (known: {known})"
            raise NotFoundError(msg)
        if row.state.paused:
            now = time.time()
            breakers.save(conn, breaker.resume(row.state, now), now=now)
            # Its waiting jobs may run now: the first one claimed is the probe.
            jobq.wake_waiting(conn, now=now, said=breaker.paused_mark(name))
        fresh = breakers.get(conn, name)
    assert fresh is not None
    return fresh
