"""`orch --help` from the table in ``cli.commands`` is the root group's help.

``orchestrator.cli.main`` answers `orch --help` and a bare `orch` from ``commands.COMMANDS``
and ``commands.OPTIONS`` without importing typer; the root group, through click, prints the
same text from the real options and commands (every command made, its own help read).
These tests hold the one to the other, so a summary or an option changed in one place only
fails here; and show that they would.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app, commands


def groups_help(args: list[str]) -> tuple[int, str]:
    """What the root group prints for ``orch ARGS`` through click, and its exit code."""
    result = CliRunner().invoke(app, args, prog_name="orch")
    return result.exit_code, result.stdout


@pytest.mark.parametrize("columns", ["80", "50", "200"])
def test_the_tables_help_is_the_groups_help(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    fast = commands.root_help("orch")
    assert groups_help(["--help"]) == (0, fast)
    assert groups_help(["--home", "/nowhere", "--help"]) == (0, fast)
    assert groups_help([]) == (2, fast)  # a bare `orch`: the help, as a usage error


def test_the_help_lists_every_command_and_option() -> None:
    shown = commands.root_help("orch").splitlines()
    options, listed = shown.index("Options:"), shown.index("Commands:")

    def first_words(lines: list[str]) -> list[str]:  # a wrapped line's rest is indented more
        return [ln.split()[0] for ln in lines if ln.startswith("  ") and ln[2] != " "]

    named = first_words(shown[listed + 1 :])
    assert named == list(commands.COMMANDS)
    assert {"init", "status", "task", "repo", "config"} <= set(named)
    flags = first_words(shown[options + 1 : listed])
    assert flags == ["--home", "--version", "--help"]


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        # A summary the command's docstring no longer says.
        (commands.COMMANDS, "task", ("task", "app", "Tasks: file, inspect and steer them.")),
        (commands.COMMANDS, "init", ("misc", "init", "Create the state directory.")),
    ],
)
def test_a_drifted_summary_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
    table: dict[str, tuple[str, str, str]],
    key: str,
    value: tuple[str, str, str],
) -> None:
    monkeypatch.setitem(table, key, value)
    assert groups_help(["--help"])[1] != commands.root_help("orch")


def test_a_drifted_option_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    drifted = [("--home <dir>", "State directory (overrides ORCH_HOME)."), *commands.OPTIONS[1:]]
    monkeypatch.setattr(commands, "OPTIONS", drifted)
    assert groups_help(["--help"])[1] != commands.root_help("orch")
    monkeypatch.setattr(commands, "OPTIONS", commands.OPTIONS[:2])  # --help left out
    assert groups_help(["--help"])[1] != commands.root_help("orch")


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("one two three", 80, ["one two three"]),
        ("one two three", 7, ["one two", "three"]),
        ("a verylongword b", 5, ["a", "verylongword", "b"]),
        ("", 10, []),
    ],
)
def test_wrap_breaks_between_words(text: str, width: int, lines: list[str]) -> None:
    assert commands._wrap(text, width) == lines


def test_summary_is_the_first_paragraph_on_one_line() -> None:
    doc = "  Run the scheduler\n    in the foreground.\n\n    More about it.\n"
    assert commands.summary(doc) == "Run the scheduler in the foreground."
