"""One circuit breaker per forge, the model backends' own (``domain.breaker``), for landings.

A forge that fails (5xx, timeouts, rate limits) ``ORCH_BACKEND_BREAKER_THRESHOLD`` times in
a row across all tasks is paused, and a forge that rejects the token is paused at once:
each with one alert for the forge (``forge-outage``, ``forge-credentials``), not one per
task. While it is paused, landings wait for its next probe without calling it (nothing is
spent); one landing is the probe, and the forge answering it resumes the forge and
resolves the alert (``forge-recovered``). ``orch backend resume forge:...`` probes at once.
The state lives beside the model backends' (``store.breakers``), named ``forge:<host>``.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import sqlalchemy as sa

from orchestrator.alerts import deliver_in_background, store_breaker_change
from orchestrator.config import Settings
from orchestrator.domain import breaker
from orchestrator.domain.faults import ApiFault, FaultKind
from orchestrator.forge.base import ForgeFault, ForgeFaultKind
from orchestrator.store import breakers

__all__ = ["FORGE_PREFIX", "admit", "forge_name", "record"]

FORGE_PREFIX = "forge:"

_KINDS = {
    ForgeFaultKind.OUTAGE: FaultKind.OUTAGE,
    ForgeFaultKind.RATE_LIMITED: FaultKind.OUTAGE,
    ForgeFaultKind.CREDENTIALS: FaultKind.CREDENTIALS,
    ForgeFaultKind.REQUEST: FaultKind.REQUEST,
}
_ALERTS = {
    breaker.Event.OPENED: "forge-outage",
    breaker.Event.CREDENTIALS: "forge-credentials",
    breaker.Event.RECOVERED: "forge-recovered",
}


def forge_name(api_url: str) -> str:
    """The breaker's name of the forge at ``api_url``: ``forge:api.github.com``."""
    return FORGE_PREFIX + (urlsplit(api_url).netloc or api_url)


def _policy(st: Settings) -> breaker.BreakerPolicy:
    return breaker.BreakerPolicy(
        st.backend_breaker_threshold, st.backend_probe_first_s, st.backend_probe_max_s
    )


def admit(engine: sa.Engine | None, name: str, job_id: int | None) -> float | None:
    """None when a landing may call the forge now (as usual, or as its probe); else the
    time to wait until, with the forge left alone meanwhile."""
    if engine is None:
        return None
    now = time.time()
    with engine.begin() as conn:
        breakers.lock_spend(conn)
        row = breakers.get(conn, name)
        admission, probing = breaker.admit(row.state if row else None, job_id or 0, now)
        if probing is not None:
            breakers.save(conn, probing, now=now)
    if admission.run:
        return None
    return admission.wait_until if admission.wait_until is not None else now


def record(
    engine: sa.Engine | None,
    st: Settings,
    name: str,
    job_id: int | None,
    fault: ForgeFault | None,
) -> float | None:
    """Tell the forge's breaker how a landing's calls went (``fault`` None: it answered);
    the time to wait until when the forge is paused now, else None."""
    if engine is None:
        return None
    now = time.time()
    api_fault = None
    if fault is not None:
        api_fault = ApiFault(_KINDS[fault.kind], fault.message, fault.status, fault.retry_after_s)
    with engine.begin() as conn:
        breakers.lock_spend(conn)
        row = breakers.get(conn, name)
        change = breaker.on_end(
            row.state if row else None,
            name=name,
            job_id=job_id or 0,
            answered=fault is None,
            fault=api_fault,
            now=now,
            policy=_policy(st),
        )
        raised = store_breaker_change(
            conn,
            row,
            change,
            now=now,
            kinds=_ALERTS,
            messages={e: f"{name}: {kind.removeprefix('forge-')}" for e, kind in _ALERTS.items()},
        )
    if raised is not None:
        # Delivered after the commit, like every alert the engine raises.
        deliver_in_background(engine, [raised], st.alert_webhook_url)
    return change.wait_until if change.state.paused else None
