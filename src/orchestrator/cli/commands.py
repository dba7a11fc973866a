"""The commands of `orch`, each with its one-line summary, and the root help drawn from them.

`orch --help` lists every command with its summary. Typer reads them by making every
command (importing every command module), then draws the panels with rich: ~300 ms, for a
list that changes only with the code. This module holds the list and prints it in plain
text, and imports nothing but ``os`` and ``sys``, so that `orch --help` and a bare `orch`
are answered before typer is imported (``orchestrator.cli.main``). The root group prints
the same text from the real commands and options (``orchestrator.cli.root``), and
``tests/unit/test_cli_help.py`` holds the one to the other, so the table cannot drift.
"""

from __future__ import annotations

import os
import sys

# The commands of `orch`, in the order its help lists them (commands, then groups, as
# typer lists an app's): name -> (module of orchestrator.cli, attribute, summary). The
# attribute is a command function or a sub-app (a group); the summary is the first
# paragraph of its help, on one line.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": (
        "misc",
        "init",
        "Create the state directory, the database and the API token (idempotent).",
    ),
    "status": (
        "misc",
        "status",
        "Tasks by stage and state, repos, and whether claiming is paused.",
    ),
    "demo": (
        "demo_cmd",
        "demo",
        "Run four tasks through the whole pipeline with deterministic agents.",
    ),
    "run": ("engine_cmds", "run_cmd", "Run the scheduler in the foreground."),
    "worker": ("engine_cmds", "worker_cmd", "Run an extra worker process on the same database."),
    "pause": (
        "engine_cmds",
        "pause",
        "Global kill switch: workers claim no new jobs (running ones finish).",
    ),
    "resume": ("engine_cmds", "resume", "Let workers claim jobs again."),
    "alerts": (
        "engine_cmds",
        "alerts_cmd",
        "List open alerts (one per task and kind), newest first; --all adds resolved ones.",
    ),
    "serve": (
        "serve",
        "serve",
        "Run the API, the dashboard and the scheduler in one process (127.0.0.1 by default).",
    ),
    "dashboard": (
        "serve",
        "dashboard",
        "Print the dashboard's link: opening it lets this browser read what `orch serve` shows.",
    ),
    "backend": (
        "engine_cmds",
        "backend_app",
        "Model backends (claude, codex, aider): their circuit breakers.",
    ),
    "repo": ("repo", "app", "Register and inspect managed repositories."),
    "task": ("task", "app", "File, inspect and steer tasks."),
    "db": ("misc", "db_app", "Database maintenance."),
    "config": ("misc", "config_app", "Render configuration files from the settings."),
}

ABOUT = "orchestrator: tasks from ticket to merged, deployed and watched."

# The root's options as its help lists them (option, help), --help last as click adds it.
OPTIONS: list[tuple[str, str]] = [
    ("--home <path>", "State directory (overrides ORCH_HOME)."),
    ("--version", "Print version."),
    ("--help", "Show this message and exit."),
]


def summary(help_text: str) -> str:
    """The first paragraph of a command's help, on one line: what the root help lists."""
    return " ".join(help_text.strip().split("\n\n")[0].split())


def help_width() -> int:
    """The columns the help fills: ``$COLUMNS``, else the terminal's, else 80 (stdout is
    not a terminal); at least 50, at most 100."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError):  # not a terminal, or a stream without a descriptor
            columns = 80
    return max(50, min(columns, 100))


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken between words (a longer
    word has a line of its own)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def _rows(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Two columns, as click lays out options: the name, then its text wrapped beside it."""
    first = max(len(name) for name, _text in rows)
    room = max(width - first - 4, 20)
    out: list[str] = []
    for name, text in rows:
        wrapped = _wrap(text, room) or [""]
        out.append(f"  {name.ljust(first)}  {wrapped[0]}".rstrip())
        out += [f"{'':{first + 4}}{more}" for more in wrapped[1:]]
    return out


def render_root_help(
    usage: str,
    about: str,
    options: list[tuple[str, str]],
    commands: list[tuple[str, str]],
    width: int,
) -> str:
    """The root help in plain text: usage, what orch is, its options and its commands."""
    lines = [usage, "", *(f"  {line}" for line in _wrap(about, width - 2)), ""]
    lines += ["Options:", *_rows(options, width), "", "Commands:", *_rows(commands, width)]
    return "\n".join(lines) + "\n"


def program_name() -> str:
    """The program as click names it in a usage line: the script's name, or
    ``python -m orchestrator`` when run so (click's ``_detect_program_name``)."""
    package = getattr(sys.modules["__main__"], "__package__", None)
    script = os.path.basename(sys.argv[0])
    if not package:
        return script
    module = os.path.splitext(script)[0]
    return f"python -m {package}" if module == "__main__" else f"python -m {package}.{module}"


def root_help(prog: str) -> str:
    """`orch --help` from the tables above, without typer; ``prog`` as ``program_name()``."""
    listed = [(name, text) for name, (_module, _attr, text) in COMMANDS.items()]
    usage = f"Usage: {prog} [OPTIONS] COMMAND [ARGS]..."
    return render_root_help(usage, ABOUT, OPTIONS, listed, help_width())
