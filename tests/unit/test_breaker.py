"""The model backends' circuit breaker and the day budget's reservations: pure decisions."""

from __future__ import annotations

import pytest

from orchestrator.domain.breaker import (
    BackendState,
    BreakerPolicy,
    Event,
    Health,
    admit,
    on_end,
    resume,
)
from orchestrator.domain.budget import reserve
from orchestrator.domain.faults import ApiFault, FaultKind, fault_of_status, status_in

POLICY = BreakerPolicy(threshold=3, probe_first_s=10.0, probe_max_s=80.0)
OUTAGE = ApiFault(FaultKind.OUTAGE, "Overloaded", 529)
DENIED = ApiFault(FaultKind.CREDENTIALS, "invalid x-api-key", 401)


def fail(state: BackendState | None, job: int, now: float, fault: ApiFault = OUTAGE) -> object:
    return on_end(
        state, name="claude", job_id=job, answered=False, fault=fault, now=now, policy=POLICY
    )


def test_outages_below_the_threshold_are_charged_to_their_tasks() -> None:
    change = on_end(
        None, name="claude", job_id=1, answered=False, fault=OUTAGE, now=0, policy=POLICY
    )
    assert change.state.health is Health.CLOSED
    assert change.state.failures == 1
    assert change.wait_until is None
    assert change.event is None
    again = on_end(
        change.state, name="claude", job_id=2, answered=False, fault=OUTAGE, now=1, policy=POLICY
    )
    assert again.state.failures == 2
    assert again.wait_until is None


def test_an_answer_resets_the_count() -> None:
    state = BackendState("claude", failures=2)
    change = on_end(state, name="claude", job_id=3, answered=True, fault=None, now=5, policy=POLICY)
    assert change.state.failures == 0
    assert change.event is None


def test_a_job_that_failed_on_its_own_says_nothing_about_the_backend() -> None:
    state = BackendState("claude", failures=2)
    change = on_end(
        state, name="claude", job_id=3, answered=False, fault=None, now=5, policy=POLICY
    )
    assert change.state == state


def test_the_threshold_opens_it_with_one_alert_and_the_job_waits() -> None:
    state = BackendState("claude", failures=2)
    change = on_end(
        state, name="claude", job_id=3, answered=False, fault=OUTAGE, now=100, policy=POLICY
    )
    assert change.state.health is Health.OPEN
    assert change.event is Event.OPENED
    assert change.wait_until == 110.0
    assert change.state.probe_at == 110.0


def test_a_paused_backend_admits_one_probe_when_due() -> None:
    opened = BackendState("claude", Health.OPEN, 3, opened_at=100, probe_at=110, probe_delay_s=10)
    waiting, stored = admit(opened, job_id=7, now=105)
    assert not waiting.run
    assert waiting.wait_until == 110
    assert stored is None
    assert any("no retry is spent" in r for r in waiting.reasons)
    probe, stored = admit(opened, job_id=7, now=111)
    assert probe.run
    assert probe.probe
    assert stored is not None
    assert stored.probe_job_id == 7
    # The next job waits for the probe's answer (one delay further at most).
    other, _ = admit(stored, job_id=8, now=112)
    assert not other.run
    assert other.wait_until == 121


def test_a_failed_probe_doubles_the_delay_up_to_the_most() -> None:
    state = BackendState(
        "claude", Health.OPEN, 3, opened_at=0, probe_at=10, probe_delay_s=10, probe_job_id=7
    )
    change = on_end(
        state, name="claude", job_id=7, answered=False, fault=OUTAGE, now=10, policy=POLICY
    )
    assert change.state.probe_delay_s == 20
    assert change.wait_until == 30
    assert change.event is None  # one alert per outage, not per probe
    delays = []
    for job in range(8, 14):
        state = change.state.__class__(**{**change.state.__dict__, "probe_job_id": job})
        change = on_end(
            state, name="claude", job_id=job, answered=False, fault=OUTAGE, now=50, policy=POLICY
        )
        delays.append(change.state.probe_delay_s)
    assert delays[-1] == POLICY.probe_max_s
    assert max(d for d in delays if d is not None) == POLICY.probe_max_s


def test_retry_after_is_honoured() -> None:
    state = BackendState("claude", failures=2)
    slow = ApiFault(FaultKind.OUTAGE, "slow down", 429, retry_after_s=45)
    change = on_end(
        state, name="claude", job_id=3, answered=False, fault=slow, now=0, policy=POLICY
    )
    assert change.state.probe_delay_s == 45
    assert change.wait_until == 45


def test_a_job_started_before_the_pause_does_not_push_the_probe_out() -> None:
    state = BackendState(
        "claude", Health.OPEN, 3, opened_at=0, probe_at=10, probe_delay_s=10, probe_job_id=7
    )
    change = on_end(
        state, name="claude", job_id=5, answered=False, fault=OUTAGE, now=2, policy=POLICY
    )
    assert change.state.probe_at == 10
    assert change.state.probe_delay_s == 10
    assert change.wait_until == 10


def test_an_answer_closes_it_with_one_alert() -> None:
    state = BackendState(
        "claude", Health.OPEN, 4, opened_at=0, probe_at=30, probe_delay_s=20, probe_job_id=9
    )
    change = on_end(
        state, name="claude", job_id=9, answered=True, fault=None, now=31, policy=POLICY
    )
    assert change.state.health is Health.CLOSED
    assert change.state.failures == 0
    assert change.event is Event.RECOVERED
    assert change.wait_until is None


def test_credentials_pause_at_once_and_alert_once() -> None:
    change = on_end(
        None, name="claude", job_id=1, answered=False, fault=DENIED, now=0, policy=POLICY
    )
    assert change.state.health is Health.CREDENTIALS
    assert change.event is Event.CREDENTIALS
    assert change.wait_until == POLICY.probe_max_s
    assert any("orch backend resume claude" in r for r in change.reasons)
    again = on_end(
        change.state, name="claude", job_id=2, answered=False, fault=DENIED, now=1, policy=POLICY
    )
    assert again.event is None
    assert again.state.health is Health.CREDENTIALS


def test_resume_makes_the_next_job_the_probe() -> None:
    state = BackendState(
        "claude", Health.CREDENTIALS, 1, opened_at=0, probe_at=600, probe_delay_s=600
    )
    probe, stored = admit(resume(state, 5), job_id=3, now=5)
    assert probe.run
    assert probe.probe
    assert stored is not None


def test_a_refused_request_leaves_the_breaker_alone() -> None:
    state = BackendState("claude", failures=2)
    bad = ApiFault(FaultKind.REQUEST, "bad", 400)
    change = on_end(state, name="claude", job_id=3, answered=False, fault=bad, now=0, policy=POLICY)
    assert change.state == state
    assert change.wait_until is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, FaultKind.CREDENTIALS),
        (403, FaultKind.CREDENTIALS),
        (400, FaultKind.REQUEST),
        (404, FaultKind.REQUEST),
        (429, FaultKind.OUTAGE),
        (500, FaultKind.OUTAGE),
        (503, FaultKind.OUTAGE),
        (529, FaultKind.OUTAGE),
    ],
)
def test_fault_kinds_by_status(status: int, kind: FaultKind) -> None:
    assert fault_of_status(status, "x").kind is kind


def test_status_in_reads_only_statuses() -> None:
    assert status_in("unexpected status 401 Unauthorized") == 401
    assert status_in("exceeded retry limit, last status: 429 Too Many Requests") == 429
    assert status_in("request id 4012345, 2 tokens") is None


# ------------------------------------------------------------------------------ reservations


def test_no_budget_no_cap() -> None:
    assert reserve(task_left_usd=None, day_left_usd=None, reserved_by_others_usd=0) == (None, None)


def test_the_cap_is_the_task_left_within_the_unreserved_day() -> None:
    assert reserve(task_left_usd=2.0, day_left_usd=10.0, reserved_by_others_usd=3.0) == (2.0, None)
    assert reserve(task_left_usd=2.0, day_left_usd=10.0, reserved_by_others_usd=9.0) == (1.0, None)
    assert reserve(task_left_usd=None, day_left_usd=10.0, reserved_by_others_usd=4.0) == (6.0, None)


def test_a_day_reserved_whole_makes_the_job_wait() -> None:
    cap, why = reserve(task_left_usd=2.0, day_left_usd=5.0, reserved_by_others_usd=5.0)
    assert cap is None
    assert why is not None
    assert "reserved by running jobs" in why
