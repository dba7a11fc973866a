"""`orch serve`: the HTTP API, the dashboard and the scheduler, in one process.

uvicorn serves the app in the main thread; a ``Worker`` runs the scheduler loop in a thread
of its own, and beside it an ``IntakePoller`` files labeled forge issues as tasks every
``ORCH_FORGE_POLL_S``. SIGTERM or SIGINT stops them all: the server finishes its open
requests, the worker re-queues its running jobs (or, with ``--drain``, waits for them), then
the process exits 0.

Mutations need the API token (``ORCH_API_TOKEN``, else ``<home>/api-token``, made here when
missing); ``--insecure-no-token`` serves without one, on loopback only, warning each start.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli._common import EXIT_FAILURE, EXIT_USAGE, fail, run, settings

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.engine.worker import Worker
    from orchestrator.intake import IntakePoller

log = logging.getLogger(__name__)

# Seconds the server waits for open requests (a followed log) once asked to stop.
GRACEFUL_SHUTDOWN_S = 5


def _settings(host: str | None, port: int | None) -> Settings:
    """The settings in force, with --host / --port applied and checked like the env vars.

    Going through ``load_settings`` again means ``--host 0.0.0.0`` meets the same invariant
    as ``ORCH_API_HOST=0.0.0.0``: beyond loopback only with ``ORCH_API_TOKEN`` set.
    """
    from orchestrator.config import load_settings

    base = settings()
    overrides: dict[str, object] = {"home": base.home}
    if host is not None:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    return load_settings(**overrides)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts, so a busy port is one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot resolve --host {host!r}: {exc.strerror}", EXIT_FAILURE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_FAILURE)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _shown_host(host: str) -> str:
    """The host of this server's URLs: loopback for a wildcard bind, IPv6 in brackets."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (a bind address compared, not bound)
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def dashboard(
    host: Annotated[
        str | None,
        typer.Option("--host", help="The address `orch serve` binds (default ORCH_API_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="The port `orch serve` listens on (default ORCH_API_PORT)."),
    ] = None,
) -> None:
    """Print the dashboard's link: opening it lets this browser read what `orch serve` shows.

    The link carries a code derived from the API token (not the token), as the password of
    HTTP Basic authentication, which the browser keeps for that origin alone: it reads and
    changes nothing. A new token revokes it."""
    from orchestrator.api.token import dashboard_link, load_token

    st = run(lambda: _settings(host, port))
    token = run(lambda: load_token(st))
    typer.echo(dashboard_link(f"http://{_shown_host(st.api_host)}:{st.api_port}", token))


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to bind (default ORCH_API_HOST, 127.0.0.1). Beyond loopback needs "
            "ORCH_API_TOKEN, and ORCH_API_ALLOWED_HOSTS for the names clients use.",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (default ORCH_API_PORT, 8765; 0 picks a free one)."),
    ] = None,
    no_scheduler: Annotated[
        bool,
        typer.Option("--no-scheduler", help="Serve the API and dashboard only; run no jobs."),
    ] = False,
    drain: Annotated[
        bool, typer.Option("--drain", help="On SIGTERM wait for running jobs.")
    ] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json.")] = "text",
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Take mutations without the API token (loopback only; any local process "
            "can then change tasks). Host and origin checks stay.",
        ),
    ] = False,
) -> None:
    """Run the API, the dashboard and the scheduler in one process (127.0.0.1 by default)."""
    from orchestrator.api.guard import LOOPBACK_NAMES
    from orchestrator.logs import configure

    configure(log_format)

    def refuse_beyond_loopback(address: str) -> None:
        if insecure_no_token and address not in LOOPBACK_NAMES:
            fail(
                f"--insecure-no-token serves loopback only ({', '.join(LOOPBACK_NAMES)}), "
                f"not {address}",
                EXIT_USAGE,
            )

    # Before the settings are checked: their own refusal of --host 0.0.0.0 without a token
    # would advise setting one, which this option contradicts.
    if host is not None:
        refuse_beyond_loopback(host)
    st = run(lambda: _settings(host, port))
    if insecure_no_token:
        refuse_beyond_loopback(st.api_host)
        if st.api_token:
            fail("--insecure-no-token and ORCH_API_TOKEN contradict each other", EXIT_USAGE)
    # Bound before the server's modules are imported (~0.4 s): a busy port is refused at
    # once, like a bad option; a client that connects meanwhile waits for the first answer.
    sock = _bind(st.api_host, st.api_port)

    import uvicorn

    from orchestrator.api import create_app
    from orchestrator.api.server import Server
    from orchestrator.api.token import dashboard_link
    from orchestrator.store.bootstrap import open_engine

    engine = run(lambda: open_engine(st))
    worker: Worker | None = None
    # Intake is the scheduler's: with --no-scheduler no task is filed from the forge.
    intake: IntakePoller | None = None
    if not no_scheduler:
        from orchestrator.engine.worker import Worker
        from orchestrator.intake import IntakePoller

        worker = Worker(st, engine, name="serve")
        intake = IntakePoller(engine, st, on_filed=worker.wake.set)
    app = run(
        lambda: create_app(
            st,
            engine,
            scheduler=worker is not None,
            wake=worker.wake.set if worker else None,
            insecure_no_token=insecure_no_token,
        )
    )
    bound_host, bound_port = sock.getsockname()[:2]
    shown = _shown_host(bound_host)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    failed = threading.Event()

    def stop_all() -> None:
        # Open log streams end now instead of holding the shutdown up; the scheduler stops
        # claiming at once, while the server finishes its requests.
        app.state.api.stopping.set()
        if intake is not None:
            intake.stopping.set()
        if worker is not None:
            worker.stop(drain=drain)

    server = Server(config, on_exit=stop_all)

    def scheduler() -> None:
        assert worker is not None
        try:
            worker.run()
        except Exception:
            log.exception("the scheduler stopped on an error", extra={"action": "serve"})
            failed.set()
            server.exit_soon()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # While it serves, uvicorn takes the signals (its handle_exit calls stop_all); once
        # it has stopped it raises them again, and they land here: nothing is left but log.
        log.warning("signal %d: stopped", signum, extra={"action": "serve"})
        server.exit_soon()
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=scheduler, name="scheduler", daemon=True)
    if worker is not None:
        thread.start()
    if intake is not None:
        intake.start()
    # One line on stderr that scripts can wait for (the port, when --port 0 picked one).
    sys.stderr.write(
        f"orch serve: listening on http://{shown}:{bound_port} "
        f"(scheduler {'on' if worker else 'off'})\n"
    )
    token = app.state.api.token
    if token is not None:
        made = " (made now)" if token.created else ""
        sys.stderr.write(
            f"orch serve: requests need Authorization: Bearer <token>; the token is "
            f"{token.where}{made}\n"
        )
    # The link that lets a browser read (not the token: it can change nothing), on a
    # terminal only: it reads all the dashboard shows for as long as the token lasts, and
    # a file or pipe is kept. journald gives the lines of a user's own processes (a unit
    # with User=, or systemd --user) to a journal file that user reads, on the system a
    # sandboxed job sees read-only; so would nohup.out or a service's log file.
    if token is None or sys.stderr.isatty():
        link = dashboard_link(f"http://{shown}:{bound_port}", token)
        sys.stderr.write(f"orch serve: the dashboard: {link}\n")
    else:
        sys.stderr.write(
            "orch serve: the dashboard: `orch dashboard` prints its link (never written "
            "where stderr is kept)\n"
        )
    sys.stderr.flush()
    if token is None:
        log.warning(
            "--insecure-no-token: changes need no token; any process or user on this machine "
            "can file, cancel and approve tasks and pause the scheduler",
            extra={"action": "serve"},
        )
    # What is alive now (the modules, the app and its routes, ~140k objects) lives as long
    # as the process: frozen, a full collection no longer walks it. Unfrozen, each one
    # took ~100 ms, every few seconds while the dashboard was read: its p99. The collector
    # is off until here (cli.main): a collection just before the freeze found nothing to
    # free, on a new home or a migrated one, in ~60 ms. From here on it runs.
    gc.freeze()
    gc.enable()
    try:
        server.run(sockets=[sock])
        if not server.started:
            failed.set()
    finally:
        if intake is not None:
            intake.stop()
        if worker is not None:
            worker.stop(drain=drain)
            thread.join()
        sock.close()
        engine.dispose()
    if failed.is_set():
        raise typer.Exit(EXIT_FAILURE)
