"""The root of `orch`: the Typer app, its options, its errors on one line, and its commands
made on first use. ``orchestrator.cli.main`` runs it; `orch --help` and a bare `orch` are
answered before it is imported (``orchestrator.cli.commands``)."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from orchestrator import __version__
from orchestrator.cli._common import EXIT_USAGE, print_error, set_home
from orchestrator.cli.commands import (
    ABOUT,
    COMMANDS,
    help_width,
    render_root_help,
    summary,
)

try:  # typer >= 0.2x: each value is coerced by a pydantic TypeAdapter typer builds for it
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer.core import _TyperParameter
except ImportError:  # an older typer coerces through click's types: nothing to spare
    _TyperParameter = None  # type: ignore[assignment,misc]


if _TyperParameter is not None:

    @dataclass(frozen=True)
    class _SparePydantic(RuntimeParam):
        """typer's coercion of one parameter (``RuntimeParam.coerce``), minus the pydantic
        TypeAdapter where typer's own answer needs none: a value left out (None) and a str
        for a plain ``str`` parameter come back as typer returns them; any other value goes
        to the runtime parameter typer builds, which then replaces this one.

        typer builds that adapter even for an option left out (`--home` is, in nearly
        every run), and importing pydantic for it (``typer._adapters``) takes ~55 ms.
        ``tests/unit/test_cli_coercion.py`` holds these answers to typer's own.
        """

        def coerce(self, value: Any, param: _TyperParameter, ctx: Any) -> Any:
            many = param.multiple or param.nargs == -1
            if value is None:
                return () if many else None
            plain_str = self.annotation is str and self.parameter_info.parser is None
            if plain_str and not many and type(value) is str:
                return value
            param._runtime_param = real = build_runtime_param(param.type_descriptor)
            return real.coerce(value, param=param, ctx=ctx)

        def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Any) -> Any:
            raise NotImplementedError  # never called: coerce above answers or hands on


def spare_pydantic(params: Iterable[Any]) -> None:
    """Give each typer parameter of ``params`` not yet coerced the coercion above."""
    if _TyperParameter is None:
        return
    for param in params:
        if isinstance(param, _TyperParameter) and param._runtime_param is None:
            descriptor = param.type_descriptor
            param._runtime_param = _SparePydantic(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
            )


def _spare_params_of(command: Any) -> None:
    """Every parameter ``command`` (and, a group, each command under it) parses with, its
    ``--help`` too (click makes that one when first asked), gets ``spare_pydantic``'s
    coercion: ``get_params`` is where click asks for them before it parses."""
    get_params = command.get_params

    def spared(ctx: Any) -> list[Any]:
        params: list[Any] = get_params(ctx)
        spare_pydantic(params)
        return params

    command.get_params = spared  # on this instance: typer made it, of typer's class
    for sub in getattr(command, "commands", {}).values():
        _spare_params_of(sub)


def _click_class(name: str) -> type[Exception]:
    """A class of the click that typer runs on (newer typers vendor their own copy): found
    among the bases of the ``BadParameter`` typer exports, so no private module is named."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_CLICK_ERROR = _click_class("ClickException")
_USAGE_ERROR = _click_class("UsageError")


# The commands that do their work and end: the garbage collector stays off for them
# (``cli.main``). Any other (`orch run`, `worker`, `serve`, `demo`: they run on, and a
# long-lived process needs its cycles collected) turns it back on when it is made.
ENDS_SOON = frozenset(
    {"init", "status", "pause", "resume", "alerts", "backend", "repo", "task", "db", "config"}
)
# `orch serve` turns it on itself, once what it made as it started is frozen (cli.serve):
# until then a collection only walks objects that live as long as the process.
TURNS_GC_ON_ITSELF = frozenset({"serve"})


def build_command(name: str) -> Any:
    """The click command of ``orch NAME``, made by typer from its function or sub-app as
    ``app.command(NAME)`` / ``app.add_typer(sub, name=NAME)`` would."""
    if name not in ENDS_SOON | TURNS_GC_ON_ITSELF:
        gc.enable()
    module, attr, _summary = COMMANDS[name]
    target = getattr(importlib.import_module(f"orchestrator.cli.{module}"), attr)
    if isinstance(target, typer.Typer):
        command: Any = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    _spare_params_of(command)
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
    wraps a long value over many lines. Its help is plain text (``format_help``); a
    command's own help stays typer's. Its commands are made on first use
    (``_LazyCommands``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands(self.commands)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        spare_pydantic(params)
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The root help as ``commands.root_help`` prints it from its table for `orch
        --help`, here from the real options and commands (all of them made), so that a
        test can hold the table to them (``tests/unit/test_cli_help.py``)."""
        options = [r for p in self.get_params(ctx) if (r := p.get_help_record(ctx)) is not None]
        listed = [
            (name, summary(command.short_help or command.help or ""))
            for name, command in self.commands.items()
            if not command.hidden
        ]
        usage = ctx.get_usage()
        formatter.write(render_root_help(usage, self.help or "", options, listed, help_width()))

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
                # No arguments: the help, on stdout as `orch --help` prints it.
                # (A sub-group's help is drawn by typer itself: its message is empty.)
                if message := error.format_message():
                    sys.stdout.write(message + "\n")
                sys.exit(EXIT_USAGE)
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
    help=ABOUT,
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
