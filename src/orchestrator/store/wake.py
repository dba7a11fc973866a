"""Wake-ups across processes: PostgreSQL LISTEN/NOTIFY.

A worker sleeps between turns of its loop until the poll interval ends or something wakes
it. Inside one process a finishing job or an API call sets its Event. Across processes
(several ``orch worker``s, an ``orch serve``, an ``orch task add``) on PostgreSQL, every
write that makes work claimable also sends ``NOTIFY`` in its own transaction: PostgreSQL
delivers it when, and only if, that transaction commits, so a listener never wakes for a
job that does not exist. SQLite has nothing of the kind; there the poll finds the work.

The poll stays as the fallback: a notification sent while a listener was reconnecting is
lost, so a listener that (re)connects wakes its worker once, and the poll covers the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger(__name__)

CHANNEL = "orch_wake"
# What a listener reports when it has just (re)connected and may have missed some.
CONNECTED = "listener-connected"
# Shown in pg_stat_activity, so an operator (and a test) can tell the listener's session.
APPLICATION_NAME = "orch-wake-listener"

RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
# How long one wait for notifications lasts before the stop flag is looked at again.
WAIT_S = 0.5


def notify(conn: sa.Connection, why: str) -> None:
    """Wake every listening worker when this transaction commits (PostgreSQL; else nothing).

    ``why`` is the payload (``job-queued``, ``job-finished``...), for whoever debugs it.
    PostgreSQL folds identical notifications of one transaction into one.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, why)))


def listener_conninfo(url: sa.URL | str) -> str:
    """The libpq URI of ``url`` (a SQLAlchemy PostgreSQL URL), for a connection of its own."""
    parsed = sa.make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class WakeListener:
    """A thread that LISTENs on a connection of its own and calls ``on_wake(payload)``.

    The connection is outside the engine's pool: it stays in LISTEN for the worker's life.
    When it drops (the server restarts, a session is terminated) the thread reconnects
    with backoff and reports ``CONNECTED`` once it listens again.
    """

    def __init__(self, url: sa.URL | str, on_wake: Callable[[str], None]) -> None:
        self._conninfo = listener_conninfo(url)
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        self.connects = 0

    def start(self) -> None:
        """Start listening in the background."""
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and wait for the thread (at most ``WAIT_S`` plus a connect attempt)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        import psycopg

        delay = RECONNECT_FIRST_S
        down_logged = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=APPLICATION_NAME,
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connects += 1
                    self.listening.set()
                    if down_logged:
                        log.warning("wake listener: listening again", extra={"action": "listen"})
                        down_logged = False
                    delay = RECONNECT_FIRST_S
                    self._on_wake(CONNECTED)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=WAIT_S):
                            self._on_wake(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                if not down_logged:
                    # Not fatal: the worker's poll still finds the work, only later.
                    log.warning(
                        "wake listener: %s; reconnecting (the poll covers meanwhile)",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                        extra={"action": "listen"},
                    )
                    down_logged = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        self.listening.clear()
