"""The `orch` command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.cli import demo_cmd, engine_cmds, misc, repo, task
from orchestrator.cli import serve as serve_cmd
from orchestrator.cli._common import set_home

app = typer.Typer(
    name="orch",
    help="orchestrator: tasks from ticket to merged, deployed and watched.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch {__version__}")
        raise typer.Exit


@app.callback()
def root(
    home: Annotated[
        Path | None, typer.Option("--home", help="State directory (overrides ORCH_HOME).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """orchestrator: tasks from ticket to merged, deployed and watched."""
    set_home(home)


app.command("init")(misc.init)
app.command("status")(misc.status)
app.command("demo")(demo_cmd.demo)
app.command("run")(engine_cmds.run_cmd)
app.command("worker")(engine_cmds.worker_cmd)
app.command("pause")(engine_cmds.pause)
app.command("resume")(engine_cmds.resume)
app.command("alerts")(engine_cmds.alerts_cmd)
app.command("serve")(serve_cmd.serve)
app.add_typer(repo.app, name="repo")
app.add_typer(task.app, name="task")
app.add_typer(misc.db_app, name="db")
app.add_typer(misc.config_app, name="config")


def main() -> None:
    """Console-script entry point."""
    app()
