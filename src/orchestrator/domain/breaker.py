"""A circuit breaker per model backend (``claude``, ``codex``, ``aider``): pure decisions.

Model-API outages are counted per backend across every task, not against each task's own
infra budget. Values in, values out; ``store.breakers`` keeps the state and the engine
acts on what these functions return.

- **closed**: jobs run. An outage fault (5xx, 529, 429, a refused connection, a model call
  that never answers) counts one more failure in a row; a job the model answered resets
  the count. A fault below the threshold is charged to its task as any tool error is
  (a failure that may be its own).
- **open**: ``threshold`` outage faults in a row opened it. The backend's jobs wait, and no
  task's retry budget is spent. At ``probe_at`` one job runs as the probe; the model
  answering it closes the breaker, another outage fault opens it again with the delay
  doubled (at most ``probe_max_s``, at least the server's ``retry-after``).
- **credentials**: a 401 or 403 paused the backend at once: no retries, no per-task
  alerts, one alert for the operator. A probe runs only every ``probe_max_s`` (or at once
  after ``orch backend resume``), since waiting does not fix a key.

One alert when a backend opens (or its credentials are rejected) and one when it closes:
``Change.event`` says which, and the store raises it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.domain.faults import ApiFault, FaultKind

__all__ = [
    "Admission",
    "BackendState",
    "BreakerPolicy",
    "Change",
    "Event",
    "Health",
    "admit",
    "on_end",
    "paused_mark",
    "resume",
]


class Health(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    CREDENTIALS = "credentials"


class Event(StrEnum):
    """What a human is told (one alert each)."""

    OPENED = "backend-outage"
    CREDENTIALS = "backend-credentials"
    RECOVERED = "backend-recovered"


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 3
    probe_first_s: float = 30.0
    probe_max_s: float = 600.0


@dataclass(frozen=True)
class BackendState:
    name: str
    health: Health = Health.CLOSED
    # Outage faults in a row while closed; probes failed in a row while open.
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None
    probe_delay_s: float | None = None
    probe_job_id: int | None = None
    last_error: str | None = None

    @property
    def paused(self) -> bool:
        return self.health is not Health.CLOSED


@dataclass(frozen=True)
class Admission:
    """Whether a job of the backend may start now: as usual, as the probe, or not before
    ``wait_until``."""

    run: bool
    probe: bool = False
    wait_until: float | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """A backend's state after a job's end, and what that end means for its task."""

    state: BackendState
    # The alert to raise for this change (None: nothing new for a human).
    event: Event | None = None
    # The task's job waits for the backend instead of being charged (a paused backend's
    # failure is nobody's own); None: the usual decision applies.
    wait_until: float | None = None
    reasons: tuple[str, ...] = ()


def paused_mark(name: str) -> str:
    """The words every reason of a job that waits for backend ``name`` holds: how the jobs
    to wake are found when it resumes."""
    return f"backend {name} paused"


def _paused_why(state: BackendState) -> str:
    if state.health is Health.CREDENTIALS:
        return f"{paused_mark(state.name)}: credentials rejected ({state.last_error or '?'})"
    return (
        f"{paused_mark(state.name)}: {state.failures} model-API failure(s) in a row "
        f"({state.last_error or '?'})"
    )


def admit(
    state: BackendState | None, job_id: int, now: float
) -> tuple[Admission, BackendState | None]:
    """Whether job ``job_id`` may start; the state to store when it starts as the probe."""
    if state is None or not state.paused:
        return Admission(run=True), None
    due = state.probe_at is None or state.probe_at <= now
    if not due:
        assert state.probe_at is not None
        return (
            Admission(
                run=False,
                wait_until=state.probe_at,
                reasons=(_paused_why(state), "waiting for its next probe; no retry is spent"),
            ),
            None,
        )
    # This job is the probe. Until it reports, the next probe is due one delay later (a
    # probe whose worker died must not keep the backend paused for good).
    delay = state.probe_delay_s or 0.0
    probing = dataclasses.replace(state, probe_job_id=job_id, probe_at=now + delay)
    return (
        Admission(run=True, probe=True, reasons=(f"probing backend {state.name} with this job",)),
        probing,
    )


def _delay(policy: BreakerPolicy, previous: float | None, fault: ApiFault) -> float:
    base = policy.probe_first_s if previous is None else min(previous * 2, policy.probe_max_s)
    if fault.retry_after_s is not None:
        base = max(base, fault.retry_after_s)
    return base


def on_end(
    state: BackendState | None,
    *,
    name: str,
    job_id: int,
    answered: bool,
    fault: ApiFault | None,
    now: float,
    policy: BreakerPolicy,
) -> Change:
    """A job of backend ``name`` ended: ``answered`` when the model answered it without a
    model-API failure, ``fault`` the failure its CLI reported (None: none). Only the probe's
    failure pushes the next probe out (doubled); the failures of jobs that started before
    the pause wait for the probe already planned."""
    current = state or BackendState(name)
    if fault is None:
        if not answered:
            # A job that failed on its own (a stall in a tool, a crash of the CLI) says
            # nothing about the backend.
            return Change(current)
        if current.paused:
            closed = BackendState(name, last_error=current.last_error)
            downtime = f" after {now - current.opened_at:.0f}s" if current.opened_at else ""
            return Change(
                closed,
                Event.RECOVERED,
                reasons=(f"backend {name} answers again{downtime}: resumed",),
            )
        return Change(dataclasses.replace(current, failures=0))
    if fault.kind is FaultKind.REQUEST:
        return Change(current)
    if fault.kind is FaultKind.CREDENTIALS:
        paused = BackendState(
            name,
            Health.CREDENTIALS,
            failures=current.failures + 1,
            opened_at=current.opened_at if current.paused else now,
            probe_at=now + policy.probe_max_s,
            probe_delay_s=policy.probe_max_s,
            last_error=fault.summary,
        )
        event = None if current.health is Health.CREDENTIALS else Event.CREDENTIALS
        return Change(
            paused,
            event,
            wait_until=paused.probe_at,
            reasons=(
                f"credentials rejected for {name}: {fault.summary}",
                f"{paused_mark(name)}; fix its key, then `orch backend resume {name}`",
            ),
        )
    # An outage.
    if current.paused and current.probe_job_id != job_id and current.probe_at is not None:
        # A job that started before the backend was paused failed as well: it waits for
        # the probe already planned, which is not pushed further out by it.
        return Change(
            dataclasses.replace(current, last_error=fault.summary),
            wait_until=max(current.probe_at, now),
            reasons=(_paused_why(current), "waiting for its next probe; no retry is spent"),
        )
    if current.paused:
        delay = _delay(policy, current.probe_delay_s, fault)
        reopened = dataclasses.replace(
            current,
            health=Health.OPEN if current.health is Health.OPEN else current.health,
            failures=current.failures + 1,
            probe_at=now + delay,
            probe_delay_s=delay,
            probe_job_id=None,
            last_error=fault.summary,
        )
        return Change(
            reopened,
            wait_until=reopened.probe_at,
            reasons=(_paused_why(reopened), f"next probe in {delay:g}s; no retry is spent"),
        )
    failures = current.failures + 1
    if failures < policy.threshold:
        return Change(
            dataclasses.replace(current, failures=failures, last_error=fault.summary),
            reasons=(
                f"backend {name}: model-API failure {failures} in a row "
                f"(paused at {policy.threshold})",
            ),
        )
    delay = _delay(policy, None, fault)
    opened = BackendState(
        name,
        Health.OPEN,
        failures=failures,
        opened_at=now,
        probe_at=now + delay,
        probe_delay_s=delay,
        last_error=fault.summary,
    )
    return Change(
        opened,
        Event.OPENED,
        wait_until=opened.probe_at,
        reasons=(_paused_why(opened), f"first probe in {delay:g}s; no retry is spent"),
    )


def resume(state: BackendState, now: float) -> BackendState:
    """``orch backend resume``: probe at once (a job runs as the probe; its answer closes)."""
    return dataclasses.replace(state, probe_at=now, probe_job_id=None)
