"""What every command shares: settings, the engine, errors as one clear line, JSON output.

The root group imports every module of ``orchestrator.cli`` to draw its help through click
(``orch --home DIR --help``; a plain ``orch --help`` reads ``cli.commands`` alone), so
none of them imports SQLAlchemy, Alembic, the settings or the engine at module level: each
command imports what it uses inside its own function. Rich too (it takes longer to
import than typer): it is imported where a table or styled text is drawn, and ``console``
makes its ``Console`` on first use, so a command that prints JSON or one plain line never
loads it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import typer

from orchestrator import money
from orchestrator.cli.exits import EXIT_FAILURE as EXIT_FAILURE
from orchestrator.cli.exits import EXIT_OK as EXIT_OK
from orchestrator.cli.exits import EXIT_USAGE as EXIT_USAGE
from orchestrator.errors import OrchestratorError, UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from rich.console import Console
    from rich.text import Text

    from orchestrator.config import Settings


class _Console:
    """A rich ``Console`` made on first use: ``console.print(...)`` imports rich then.

    Only attribute lookups are passed on: a rich object that is handed the console
    (``Live(console=...)``, which enters it with ``with``) gets the real one,
    ``real_console(console)``."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            from rich.console import Console

            self._made = Console(stderr=self._stderr)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


console = cast("Console", _Console(stderr=False))
err_console = cast("Console", _Console(stderr=True))


def real_console(c: Console) -> Console:
    """The rich ``Console`` itself behind ``console`` or ``err_console``: for rich objects
    that use more of it than its attributes (``with console:``)."""
    return c.made() if isinstance(c, _Console) else c


T = TypeVar("T")

# Set by the root callback from --home; None means the environment decides.
_home_override: dict[str, Path | None] = {"home": None}


def set_home(home: Path | None) -> None:
    """Remember ``--home`` for every later settings load."""
    _home_override["home"] = home


def settings() -> Settings:
    """The settings in force (environment, .env, then --home)."""
    from orchestrator.config import load_settings

    home = _home_override["home"]
    return load_settings(home=home) if home is not None else load_settings()


# Control characters but tab and newline: in a terminal they move the cursor, recolour or
# rewrite what is shown (a carriage return, an escape sequence).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object) -> Text:
    """Text from users and agents (titles, reasons, paths), shown as it is.

    Rich reads markup in plain strings: a title such as ``[/x]`` would raise and kill the
    command, ``[red]`` would restyle the line. A ``Text`` is never markup; control
    characters are shown as U+FFFD instead of reaching the terminal.
    """
    from rich.text import Text

    return Text(_CONTROL_RE.sub("\ufffd", str(value)))


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line whatever the message quotes."""
    # The message may quote user input (an unknown repo's name, a path): never read as
    # markup, and a line break in it is shown escaped (\n) so the error stays one line.
    # (The artifact contract's line breaks, imported here: a command that ends well and
    # has no artifact to read does without the module, ~2 ms.)
    from orchestrator.domain.artifacts import LINE_BREAKS

    line_breaks = re.compile(f"[{re.escape(LINE_BREAKS)}]")
    flat = line_breaks.sub(lambda m: m.group().encode("unicode_escape").decode(), message)
    from rich.text import Text

    err_console.print(
        Text.assemble(("error:", "red"), " ", plain(flat)), highlight=False, soft_wrap=True
    )


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one clear line on stderr and exit."""
    print_error(message)
    raise typer.Exit(code)


@contextmanager
def handled() -> Iterator[None]:
    """Turn our errors into one line and the documented exit code."""
    try:
        yield
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except OrchestratorError as exc:
        fail(str(exc), EXIT_FAILURE)
    except Exception as exc:
        # Only a command that imported SQLAlchemy can raise its errors: looked up, not
        # imported, so that commands without a database never load it.
        sa_exc = getattr(sys.modules.get("sqlalchemy"), "exc", None)
        if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
            fail(f"database error: {exc.orig}", EXIT_FAILURE)
        raise


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` with errors handled."""
    with handled():
        return fn()
    raise AssertionError("unreachable")  # pragma: no cover


def engine() -> sa.Engine:
    """The engine on the configured database, migrated to the newest schema."""
    from orchestrator.store.bootstrap import open_engine

    return open_engine(settings())


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and the like as plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(data: Any) -> None:
    """JSON on stdout, for machines."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, sort_keys=True) + "\n")


def read_input_file(path: Path, option: str) -> bytes:
    """A file named on the command line, or a clear usage error."""
    try:
        return path.expanduser().read_bytes()
    except (OSError, RuntimeError) as exc:  # RuntimeError: ~user of no such user
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"{option}: cannot read {path}: {why}"
        raise UsageError(msg) from exc


def ago(ts: float | None, now: float) -> str:
    """A short 'how long ago' for tables."""
    if ts is None:
        return "-"
    s = max(0, int(now - ts))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def spent_of(spent_usd: float, budget_usd: float | None) -> Text:
    """``$0.0004 of $0.001 (40%)``, in red once the budget is reached (the next LLM job of
    what it counts would be refused)."""
    from rich.text import Text

    reached = money.budget_reached(spent_usd, budget_usd)
    return Text(money.usd_of(spent_usd, budget_usd), style="red" if reached else "")


JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")
