"""The `orch` command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main
from typer.core import TyperGroup

from orchestrator import __version__
from orchestrator.cli._common import EXIT_USAGE, print_error, set_home


def _click_class(name: str) -> type[Exception]:
    """A class of the click that typer runs on (newer typers vendor their own copy): found
    among the bases of the ``BadParameter`` typer exports, so no private module is named."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_CLICK_ERROR = _click_class("ClickException")
_USAGE_ERROR = _click_class("UsageError")


# The commands of `orch`, in the order its help lists them (commands, then groups, as
# typer lists an app's): name -> (module of orchestrator.cli, attribute), the attribute a
# command function or a sub-app (a group).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("misc", "init"),
    "status": ("misc", "status"),
    "demo": ("demo_cmd", "demo"),
    "run": ("engine_cmds", "run_cmd"),
    "worker": ("engine_cmds", "worker_cmd"),
    "pause": ("engine_cmds", "pause"),
    "resume": ("engine_cmds", "resume"),
    "alerts": ("engine_cmds", "alerts_cmd"),
    "serve": ("serve", "serve"),
    "backend": ("engine_cmds", "backend_app"),
    "repo": ("repo", "app"),
    "task": ("task", "app"),
    "db": ("misc", "db_app"),
    "config": ("misc", "config_app"),
}


def build_command(name: str) -> Any:
    """The click command of ``orch NAME``, made by typer from its function or sub-app as
    ``app.command(NAME)`` / ``app.add_typer(sub, name=NAME)`` would."""
    module, attr = COMMANDS[name]
    target = getattr(importlib.import_module(f"orchestrator.cli.{module}"), attr)
    if isinstance(target, typer.Typer):
        command: Any = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _LazyCommands(dict[str, Any]):
    """The root's commands, each made on first use.

    Typer makes the click command of every command of an app (reading each function's
    signature and annotations) and the CLI would import every command module, on every
    run; `orch status` needs one. Looking a name up (``get``, ``[]``) makes that command
    only; reading the values (help, a walk of the tree) makes them all. The keys are there
    from the start, in ``COMMANDS``' order, which the help keeps.
    """

    def __init__(self, given: Mapping[str, Any]) -> None:
        super().__init__(dict.fromkeys(COMMANDS))
        self.update(given)

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if value is None and name in COMMANDS:
            value = build_command(name)
            super().__setitem__(name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def values(self) -> Any:
        return [self[name] for name in self]

    def items(self) -> Any:
        return [(name, self[name]) for name in self]


class _OneLineErrors(TyperGroup):
    """The root group: click's own usage errors (an unknown option, a missing argument or
    value) are one ``error:`` line, as every error of ours is, not a framed panel that
    wraps a long value over many lines. Help, --version and exit codes are unchanged.
    Its commands are made on first use (``_LazyCommands``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands(self.commands)

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
