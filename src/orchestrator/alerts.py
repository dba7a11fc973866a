"""Alerts: what a human must see. Stored in the DB, logged, and POSTed to a webhook.

The DB row is written in the same transaction as the decision that raised it, so an alert
is never lost and never raised for a decision that did not commit. Delivery to the webhook
happens afterwards, in the background, with bounded retries: a webhook that is down never
stalls the engine.

A task has one alert per kind. Raised again while it is open, the alert counts one more
occurrence (newest message and reasons) and is not delivered again: nobody has acted on it
since it was delivered. Retrying, approving, cancelling or finishing the task resolves its
alerts; raised again after that, the alert reopens with one more occurrence and is
delivered again, since whoever resolved it needs to hear that it is back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.domain import breaker
from orchestrator.store import alert_rows, breakers
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import AlertRow

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_BACKOFF_S = 0.5

SEVERITY = {
    "infra-budget-exhausted": "critical",
    "developer-budget-exhausted": "warning",
    "task-blocked": "warning",
    "awaiting-human": "info",
    "llm-budget-exhausted": "critical",
    "sandbox-unavailable": "critical",
    "main-rewound": "critical",
    "artifact-changed": "critical",
    "backend-outage": "critical",
    "backend-credentials": "critical",
    "backend-recovered": "info",
    "model-request-refused": "warning",
}


@dataclass(frozen=True)
class Raised:
    """An alert as ``raise_alert`` left it, and whether it is news to deliver."""

    alert: AlertRow
    # Inserted, or reopened after it was resolved: a human has not been told of it yet.
    # False when an open alert counted one more occurrence: it was delivered already.
    new: bool


def raise_alert(
    conn: sa.Connection,
    *,
    kind: str,
    message: str,
    reasons: Sequence[str],
    now: float,
    task_id: int | None = None,
    repo_id: int | None = None,
) -> Raised:
    """Store an alert inside the caller's transaction: one per task and kind (see above).

    Alerts of no task are always new rows.
    """
    severity = SEVERITY.get(kind, "warning")
    known = None if task_id is None else alert_rows.task_alert(conn, task_id=task_id, kind=kind)
    if known is not None:
        reopen = known.resolved_at is not None
        row = alert_rows.repeat_alert(
            conn, known.id, severity=severity, message=message, reasons=reasons, reopen=reopen
        )
        return Raised(row, new=reopen)
    row = alert_rows.insert_alert(
        conn,
        kind=kind,
        severity=severity,
        message=message,
        reasons=list(reasons),
        now=now,
        task_id=task_id,
        repo_id=repo_id,
    )
    return Raised(row, new=True)


def resolve_task_alerts(
    conn: sa.Connection, task_id: int, now: float, kinds: Iterable[str] | None = None
) -> list[int]:
    """Resolve the task's open alerts (of ``kinds``; None: every kind) in the caller's
    transaction: the task moved on. The ids of the alerts resolved."""
    return alert_rows.resolve_alerts(conn, task_id=task_id, now=now, kinds=kinds)


def store_breaker_change(
    conn: sa.Connection,
    row: breakers.BackendRow | None,
    change: breaker.Change,
    *,
    now: float,
    kinds: Mapping[breaker.Event, str],
    messages: Mapping[breaker.Event, str],
) -> AlertRow | None:
    """Store a breaker's change (a model backend's or a forge's; ``row``: as it was) in the
    caller's transaction, with its one alert when it paused or came back: the outage's
    alert is resolved on recovery, and the jobs that wait for it are made due now, not at
    the probe after next. The alert raised, to deliver after the commit; None: nothing new."""
    name = change.state.name
    breakers.save(conn, change.state, now=now)
    event = change.event
    if event is None:
        return None
    recovered = event is breaker.Event.RECOVERED
    if recovered:
        if row is not None and row.alert_id is not None:
            alert_rows.update_alert(conn, row.alert_id, resolved_at=now)
        jobq.wake_waiting(conn, now=now, said=breaker.paused_mark(name))
    raised = raise_alert(
        conn,
        kind=kinds[event],
        message=messages[event],
        reasons=[*change.reasons, f"last error: {change.state.last_error or '?'}"],
        now=now,
    )
    breakers.set_alert(conn, name, None if recovered else raised.alert.id)
    return raised.alert


def payload(alert: AlertRow) -> dict[str, object]:
    """The webhook body: Slack-compatible ``text`` plus the structured fields."""
    text = f"[{alert.severity}] {alert.message}"
    if alert.occurrences > 1:
        text += f" (occurrence {alert.occurrences})"
    if alert.reasons:
        text += "\n" + "\n".join(f"- {r}" for r in alert.reasons)
    return {
        "text": text,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "reasons": list(alert.reasons),
        "alert_id": alert.id,
        "created_at": alert.created_at,
        "occurrences": alert.occurrences,
    }


def post_webhook(url: str, body: dict[str, object], *, timeout_s: float = WEBHOOK_TIMEOUT_S) -> str:
    """POST JSON once; returns '' on a 2xx, else what went wrong."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 (the URL is the operator's own setting)
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return f"unreachable: {exc}"
    return "" if 200 <= code < 300 else f"HTTP {code}"


def deliver(
    engine: sa.Engine,
    alert: AlertRow,
    url: str,
    *,
    attempts: int = WEBHOOK_ATTEMPTS,
    backoff_s: float = WEBHOOK_BACKOFF_S,
) -> bool:
    """Log the alert and POST it, retrying a bounded number of times."""
    log.warning("alert: %s", alert.message, extra={"action": "alert", "kind": alert.kind})
    if not url:
        return False
    body = payload(alert)
    for attempt in range(1, attempts + 1):
        problem = post_webhook(url, body)
        try:
            with engine.begin() as conn:
                alert_rows.update_alert(
                    conn,
                    alert.id,
                    delivery_attempts=attempt,
                    **({"delivered_at": time.time()} if not problem else {}),
                )
        except sa.exc.SQLAlchemyError as exc:
            # The database is gone for a moment: the human still gets the alert; only the
            # record of this attempt is lost (the thread would die here, retries unsent).
            log.warning(
                "could not record webhook attempt %d of alert %d: %s",
                attempt,
                alert.id,
                type(exc).__name__,
            )
        if not problem:
            return True
        log.warning("alert webhook failed (%s), attempt %d of %d", problem, attempt, attempts)
        if attempt < attempts:
            time.sleep(backoff_s * (2 ** (attempt - 1)))
    return False


def deliver_in_background(engine: sa.Engine, alerts: Sequence[AlertRow], url: str) -> None:
    """Deliver after commit without holding up the caller."""
    for alert in alerts:
        threading.Thread(
            target=deliver, args=(engine, alert, url), name=f"alert-{alert.id}", daemon=True
        ).start()
