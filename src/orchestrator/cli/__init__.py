"""The `orch` command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from orchestrator import __version__
from orchestrator.cli import demo_cmd, engine_cmds, misc, repo, task
from orchestrator.cli import serve as serve_cmd
from orchestrator.cli._common import EXIT_USAGE, print_error, set_home


def _click_class(name: str) -> type[Exception]:
    """A class of the click that typer runs on (newer typers vendor their own copy): found
    among the bases of the ``BadParameter`` typer exports, so no private module is named."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_CLICK_ERROR = _click_class("ClickException")
_USAGE_ERROR = _click_class("UsageError")


class _OneLineErrors(TyperGroup):
    """The root group: click's own usage errors (an unknown option, a missing argument or
    value) are one ``error:`` line, as every error of ours is, not a framed panel that
    wraps a long value over many lines. Help, --version and exit codes are unchanged."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        own = (args, prog_name, complete_var, False, windows_expand_args)
        if not standalone_mode:
            return super().main(*own, **extra)
        try:
            code = super().main(*own, **extra)
        except _CLICK_ERROR as exc:
            error: Any = exc
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(EXIT_USAGE)  # no arguments: the help is printed already
            ctx = getattr(error, "ctx", None)
            where = ""
            if isinstance(exc, _USAGE_ERROR) and ctx is not None:
                sys.stderr.write(ctx.get_usage().strip() + "\n")
                where = f" (see `{ctx.command_path} --help`)"
            print_error(error.format_message() + where)
            sys.exit(error.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        # Not standalone, click returns the exit code of a typer.Exit, or the command's
        # return value (None) when it simply ended.
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
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
app.add_typer(engine_cmds.backend_app, name="backend")
app.command("serve")(serve_cmd.serve)
app.add_typer(repo.app, name="repo")
app.add_typer(task.app, name="task")
app.add_typer(misc.db_app, name="db")
app.add_typer(misc.config_app, name="config")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _exit(code: str | int | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without tearing down every module.

    Freeing what a command imported (SQLAlchemy, pydantic, typer) takes a third of a short
    command's time, and nothing needs it once the exit steps that matter have run: the
    atexit handlers (logging's flush, temporary folders) and the flush of stdout and stderr.
    With any other thread alive the interpreter's own exit joins it as usual.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    status = 0
    if isinstance(code, int):
        status = code
    elif code is not None:  # sys.exit("message"): the message on stderr, status 1
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to tell it
            status = status or 1
    os._exit(status)
