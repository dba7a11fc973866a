"""The `orch` command line. Exit codes (``cli.exits``): 0 ok, 1 failure, 2 usage error.

``main`` answers `orch --help` and a bare `orch` from ``cli.commands`` alone, and
`orch --version` from the package's version; anything
else runs the Typer app of ``cli.root`` (``app``, imported on first use, PEP 562). Nothing
here imports typer before it is needed: importing it alone takes longer than the whole help.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

from orchestrator.cli.exits import EXIT_OK, EXIT_USAGE

# typing.TYPE_CHECKING, without importing typing (mypy reads the name the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from orchestrator.cli.root import app as app


def __getattr__(name: str) -> Any:
    """``app``, the Typer app of `orch`, imported on first use (PEP 562)."""
    if name != "app":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    from orchestrator.cli.root import app

    globals()[name] = app
    return app


def asks_root_help(args: list[str]) -> bool:
    """`orch --help` or a bare `orch`: the root help, known without parsing anything.

    Not when a shell's completion asks: click reads it from ``_<PROG>_COMPLETE`` in the
    environment, with no arguments.
    """
    return args in ([], ["--help"]) and not any(k.endswith("_COMPLETE") for k in os.environ)


def main() -> None:
    """Console-script entry point."""
    # A command's imports (SQLAlchemy, typer, rich) make ~100,000 objects the cyclic garbage
    # collector tracks, and it walked them again and again as they came (~140 collections
    # in `orch status`), ~9% of a short command's time, to free a few hundred. Off while
    # `orch` starts; a command that runs on (the scheduler, the server, the demo) turns it
    # back on as it is made (``cli.root.build_command``), and the others end soon after.
    gc.disable()
    args = sys.argv[1:]
    if asks_root_help(args):
        from orchestrator.cli.commands import program_name, root_help

        sys.stdout.write(root_help(program_name()))
        _exit(EXIT_OK if args else EXIT_USAGE)  # no arguments is a usage error, as click says
    if args == ["--version"]:  # what the root group's eager --version prints, as fast
        from orchestrator import __version__

        sys.stdout.write(f"orch {__version__}\n")
        _exit(EXIT_OK)
    from orchestrator.cli.root import app

    try:
        app()
    except SystemExit as exc:
        _exit(exc.code)
    _exit(EXIT_OK)


def _exit(code: str | int | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without tearing down every module.

    Freeing what a command imported (SQLAlchemy, pydantic, typer) takes a third of a short
    command's time, and nothing needs it once the exit steps that matter have run: the
    atexit handlers (logging's flush, temporary folders) and the flush of stdout and stderr.
    With any other thread alive the interpreter's own exit joins it as usual.
    """
    # Only threading's threads are joined at exit; without the module (the root help never
    # imports it) there are none.
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
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
