"""`orch run`, `orch worker`, `orch pause`, `orch resume`, `orch alerts`."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli._common import ago, console, plain, print_json, run, settings

if TYPE_CHECKING:
    from rich.text import Text

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LogFormat = Annotated[str, typer.Option("--log-format", help="text or json.")]


def _setup_logging(fmt: str) -> None:
    from orchestrator.logs import configure

    configure(fmt)


def _loop(name: str, until_idle: bool, drain: bool, log_format: str, *, intake: bool) -> None:
    from orchestrator.engine.worker import Worker
    from orchestrator.intake import IntakePoller
    from orchestrator.store.bootstrap import open_engine

    _setup_logging(log_format)
    st = run(settings)
    engine = run(lambda: open_engine(st))
    worker = Worker(st, engine, name=name)
    # `orch run` takes forge issues in (`orch worker` is an extra pair of hands, and leaves
    # intake to the main process): with --until-idle one round before the loop, so the
    # issues labeled now are run too, else a round every ORCH_FORGE_POLL_S beside it.
    poller = IntakePoller(engine, st, on_filed=worker.wake.set) if intake else None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).warning(
            "signal %d: stopping (%s)", signum, "draining" if drain else "re-queueing"
        )
        if poller is not None:
            poller.stopping.set()
        worker.stop(drain=drain)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if poller is not None and until_idle:
        if st.forge_poll_s > 0:
            poller.poll_once()
    elif poller is not None:
        poller.start()
    try:
        worker.run(until_idle=until_idle)
    finally:
        if poller is not None:
            poller.stop()
    engine.dispose()


def run_cmd(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Return when no task can move.")
    ] = False,
    drain: Annotated[
        bool, typer.Option("--drain", help="On SIGTERM wait for running jobs.")
    ] = False,
    log_format: LogFormat = "text",
) -> None:
    """Run the scheduler in the foreground."""
    _loop("run", until_idle, drain, log_format, intake=True)


def worker_cmd(
    drain: Annotated[
        bool, typer.Option("--drain", help="On SIGTERM wait for running jobs.")
    ] = False,
    log_format: LogFormat = "text",
) -> None:
    """Run an extra worker process on the same database."""
    _loop("worker", False, drain, log_format, intake=False)


def _set_paused(paused: bool) -> None:
    from orchestrator.store import control
    from orchestrator.store.bootstrap import open_engine

    def go() -> None:
        with open_engine(settings()).begin() as conn:
            control.set_paused(conn, paused, now=time.time())

    run(go)
    console.print("paused: no new jobs are claimed" if paused else "resumed")


def pause() -> None:
    """Global kill switch: workers claim no new jobs (running ones finish)."""
    _set_paused(True)


def resume() -> None:
    """Let workers claim jobs again."""
    _set_paused(False)


def alerts_cmd(
    # Bounded: a negative LIMIT is an error on PostgreSQL, a huge one on SQLite.
    limit: Annotated[int, typer.Option(min=0, max=100_000, help="How many, newest first.")] = 50,
    show_all: Annotated[
        bool, typer.Option("--all", help="Resolved alerts too, not only open ones.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List open alerts (one per task and kind), newest first; --all adds resolved ones."""
    from orchestrator.store import alert_rows, queries
    from orchestrator.store.bootstrap import open_engine

    def load() -> list[dict[str, Any]]:
        with open_engine(settings()).connect() as conn:
            keys = {t.id: t.key for t in queries.list_tasks(conn)}
            return [
                {
                    "id": a.id,
                    "kind": a.kind,
                    "severity": a.severity,
                    "message": a.message,
                    "reasons": list(a.reasons),
                    "task": keys.get(a.task_id or -1),
                    "created_at": a.created_at,
                    "delivered_at": a.delivered_at,
                    "delivery_attempts": a.delivery_attempts,
                    "occurrences": a.occurrences,
                    "resolved_at": a.resolved_at,
                }
                for a in alert_rows.list_alerts(conn, limit=limit, open_only=not show_all)
            ]

    rows = run(load)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no alerts" if show_all else "no open alerts (--all lists resolved ones)")
        return
    from rich.table import Table

    now = time.time()
    columns = ["id", "first raised", "times", "severity", "task", "message"]
    table = Table(*columns, *(["resolved"] if show_all else []))
    for a in rows:
        cells: list[str | Text] = [
            str(a["id"]),
            ago(a["created_at"], now),
            str(a["occurrences"]),
            str(a["severity"]),
            str(a["task"] or "-"),
            plain(a["message"]),
        ]
        if show_all:
            cells.append("open" if a["resolved_at"] is None else ago(a["resolved_at"], now))
        table.add_row(*cells)
    console.print(table)


backend_app = typer.Typer(
    help="Model backends (claude, codex, aider): their circuit breakers.", no_args_is_help=True
)


@backend_app.command("list")
def backend_list(as_json: JsonFlag = False) -> None:
    """Each model backend that has run a job: running, or paused (an outage, rejected
    credentials) with its next probe and last error."""
    from orchestrator.backend_ops import list_backends
    from orchestrator.cli.misc import backend_line
    from orchestrator.store.bootstrap import open_engine

    rows = run(lambda: [b.view() for b in list_backends(open_engine(settings()))])
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no model backend has run a job yet")
        return
    for b in rows:
        console.print(plain(backend_line(b)), highlight=False, soft_wrap=True)


@backend_app.command("resume")
def backend_resume(
    name: Annotated[str, typer.Argument(help="The backend: claude, codex or aider.")],
    as_json: JsonFlag = False,
) -> None:
    """Probe a paused backend at once (after fixing its key, or an outage you know is over):
    its next job runs as the probe, and the model answering it resumes the backend."""
    from orchestrator.backend_ops import resume_backend
    from orchestrator.cli.misc import backend_line
    from orchestrator.store.bootstrap import open_engine

    row = run(lambda: resume_backend(open_engine(settings()), name)).view()
    if as_json:
        print_json(row)
        return
    if row["health"] == "closed":
        console.print(plain(f"model backend {name} is not paused: nothing to resume"))
        return
    console.print(plain(backend_line(row)))
    console.print("its next job runs as the probe; an answer resumes it")
