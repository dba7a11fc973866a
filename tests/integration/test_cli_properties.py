"""Hypothesis on the `orch` command line: generated argv for every command that takes input.

Argument values are drawn from hostile text: shell metacharacters, ``--``, options without
their value, unknown options, unicode, control characters (no NUL: no argv holds one),
huge strings, path traversal, rich markup, next to values that can succeed. For every argv:

- the exit code is 0, 1 or 2, nothing else;
- no traceback: nothing escapes but SystemExit;
- a usage error (2) is one ``error:`` line on stderr (a usage line may come first);
- a command that fails (1 or 2) writes nothing: every table of the database and every file
  of the home are as they were;
- what a command that succeeds stores is well formed: repo names, key prefixes and task
  keys of their documented shapes, titles of one line.

One database per test function (the ``migrated_db_url`` fixture, SQLite or PostgreSQL), snapshotted
before each example and compared after it. ``ORCH_TEST_CLI_EXAMPLES`` sets the number of
examples per test (default 100).
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator import taskdir
from orchestrator.cli import app
from orchestrator.store import make_engine, metadata, migrate, queries

# Each example is a real CLI call (settings, engine, migrations check): a modest count, which
# ORCH_TEST_CLI_EXAMPLES raises for a longer hunt.
EXAMPLES = int(os.environ.get("ORCH_TEST_CLI_EXAMPLES", "100"))

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
HOSTILE = [
    "; rm -rf /", "$(id)", "`id`", "a && b", "|", "'", '"', "\\", "--", "-", "-x", "--nope",
    "--json", "--help=x", "../../etc", "../../../../etc/passwd", "/etc/passwd", "..", "/",
    "~/.ssh", "\x1b[31mred", "\x7f", "\t", *LINE_BREAKS, "\u202e", "\u200b", "\ufeff", "é",
    "日本語", "🙂", "[/x]", "[bold]", "[red]x[/red]", "%s", "{}", "{task}", "${HOME}", "*",
    "?", "=", "a=b", "", " ", "x" * 5000, "DEMO-1\n", "demo\n", "-1", "0", "99999999999999999999",
]  # fmt: skip
hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=6), max_size=5).map("".join),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
)


# Values that can make a command succeed (or fail deep inside), by what they stand for.
# "\0name\0" is a path under the test's folder, filled in per test: no argv holds a NUL.
VALUES: dict[str, list[str]] = {
    "name": ["demo", "other", "new\n", "demo.2", "a" * 65, "-x", "ОТ"],
    "path": ["\0repo\0", "\0files\0", "../../etc", "/", "/nonexistent"],
    "key": ["DEMO-1", "DEMO-2", "DEMO-3", "DEMO-99", "DEMO-1\n", "demo-1", "DEMO-0"],
    "title": ["a title", "a\u2028b", "x" * 201, "  padded  "],
    "file": ["\0body\0", "\0patch\0", "\0approve\0", "\0empty\0", "/etc/passwd",
             "/nonexistent", "\0files\0"],
    "cmd": ["python -m pytest -q", "sh -c 'echo $HOME'", "a '", "", "pytest {task}"],
    "url": ["http://127.0.0.1:9/health", "http://[::1", "http://10.0.0.1/", "ftp://x",
            "http://127.0.0.1/é", "http://localhost:99999/"],
    "stages": ["development,testing,deploy-staging", "development", "qa,testing",
               "development,testing,deploy-staging,post-deploy-monitor"],
    "agent": ["development=patch", "testing=test-runner", "development=command:python a.py {task}",
              "development=command:x {nope}", "deploy=claude", "qa=claude", "development=",
              "development=command:x {task!r}"],
    "env": ["HOME,PATH", "1BAD", ",,", "A-B"],
    "prefix": ["OTHER", "X\n", "x", "1A", "ABCDEFGHIJKLMNOPQ"],
    "state": ["active", "blocked", "cancelled", "nope"],
    "stage": ["development", "testing", "qa"],
    "limit": ["5", "-1", "0", "99999999999999999999", "x"],
    "main": ["main", "nope", "-x"],
    "text": ["a reason", "a\nb"],
}  # fmt: skip
OPTION_VALUES = {
    "--main": "main", "--remote": "name", "--test-cmd": "cmd", "--staging-cmd": "cmd",
    "--deploy-cmd": "cmd", "--health-url": "url", "--stages": "stages", "--agent": "agent",
    "--agent-env": "env", "--prefix": "prefix", "--body": "text", "--body-file": "file",
    "--patch": "file", "--artifact": "file", "--reason": "text", "--repo": "name",
    "--state": "state", "--stage": "stage", "--limit": "limit",
}  # fmt: skip


@dataclass(frozen=True)
class Command:
    """A command: its words, what its positionals are, its options and its flags."""

    words: tuple[str, ...]
    positionals: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    flags: tuple[str, ...] = ("--json",)


REPO_OPTIONS = (
    "--main",
    "--remote",
    "--test-cmd",
    "--staging-cmd",
    "--deploy-cmd",
    "--health-url",
    "--stages",
    "--agent",
    "--agent-env",
)
REPO_COMMANDS = [
    Command(
        ("repo", "add"), ("name", "path"), (*REPO_OPTIONS, "--prefix"), ("--json", "--self-hosting")
    ),
    Command(
        ("repo", "set"), ("name",), REPO_OPTIONS, ("--json", "--self-hosting", "--not-self-hosting")
    ),
    Command(("repo", "show"), ("name",)),
    Command(("repo", "list")),
]
TASK_COMMANDS = [
    Command(("task", "add"), ("name", "title"), ("--body", "--body-file", "--patch")),
    Command(("task", "show"), ("key",)),
    Command(("task", "cancel"), ("key",), ("--reason",)),
    Command(("task", "retry"), ("key",), ("--patch",)),
    Command(("task", "approve"), ("key",), ("--artifact",)),
    Command(("task", "list"), (), ("--repo", "--state", "--stage")),
]
OTHER_COMMANDS = [
    Command(("status",)),
    Command(("alerts",), (), ("--limit",)),
    Command(("pause",), (), (), ()),
    Command(("resume",), (), (), ()),
    Command(("backend", "list")),
    Command(("backend", "resume"), ("name",)),
]  # fmt: skip


def _value(kind: str) -> st.SearchStrategy[str]:
    # A value of its kind twice as often as a hostile one: one hostile value among right
    # ones is what reaches the deepest checks.
    useful = st.sampled_from(VALUES[kind])
    return st.one_of(useful, useful, hostile)


def argv_for(commands: list[Command]) -> st.SearchStrategy[list[str]]:
    """argv for one of ``commands``: its words, then its positionals, options and junk in
    any order; sometimes one positional short or one too many."""

    def for_command(cmd: Command) -> st.SearchStrategy[list[str]]:
        options = cmd.options or ("--nope",)
        with_value = st.sampled_from(options).flatmap(
            lambda o: _value(OPTION_VALUES.get(o, "text")).map(lambda v: (o, v))
        )
        option = st.one_of(
            with_value.map(list),
            with_value.map(list),
            with_value.map(lambda t: [f"{t[0]}={t[1]}"]),
            st.sampled_from(cmd.flags or ("--json",)).map(lambda f: [f]),
            # An option without its value, an unknown one, a lone "--".
            st.sampled_from([*cmd.options, "--nope", "-z", "--"]).map(lambda o: [o]),
        )
        kinds = list(cmd.positionals)
        shapes = [kinds] * 4 + [kinds[:-1], [*kinds, "text"]]
        positionals = st.sampled_from(shapes).flatmap(
            lambda ks: st.tuples(*(_value(k) for k in ks)).map(list)
        )
        tokens = st.tuples(positionals, st.lists(option, max_size=3)).map(
            lambda t: [[v] for v in t[0]] + t[1]
        )
        return tokens.flatmap(st.permutations).map(
            lambda groups: [*cmd.words, *(w for g in groups for w in g)]
        )

    return st.sampled_from(commands).flatmap(for_command)


# --------------------------------------------------------------------------- the bench


class Bench:
    """A home and a database with a repo and tasks in three states, and a CLI to call."""

    def __init__(self, root: Path, db_url: str, repo: Path) -> None:
        self.home = root / "home"
        self.files = root / "files"
        self.files.mkdir()
        (self.files / "body").write_text("a body\nwith two lines\n")
        (self.files / "good.patch").write_text("--- a/x\n+++ b/x\n")
        (self.files / "approve.md").write_text("---\ndev_status: DONE\n---\n")
        (self.files / "empty").write_text("")
        self.repo = repo
        self.engine = make_engine(db_url)
        # A copy of the migrated template: one plain read finds it current (Alembic's
        # no-op upgrade cost tens of ms a test).
        migrate.ensure_current(self.engine)
        self.runner = CliRunner()

    def setup(self) -> None:
        self.invoke_ok("repo", "add", "demo", str(self.repo))
        for title in ("active task", "to be cancelled", "to be blocked"):
            self.invoke_ok("task", "add", "demo", title)
        self.invoke_ok("task", "cancel", "DEMO-2")
        with self.engine.begin() as conn:
            task = queries.get_task(conn, "DEMO-3")
            assert task is not None
            queries.update_task(conn, task.id, now=task.updated_at, state="blocked")

    def invoke(self, argv: list[str]) -> Any:
        return self.runner.invoke(app, argv)

    def invoke_ok(self, *argv: str) -> None:
        result = self.invoke(list(argv))
        assert result.exit_code == 0, (argv, result.output, result.exception)

    def snapshot(self) -> tuple[dict[str, list[str]], dict[str, bytes]]:
        """Every row of every table, and every file of the home."""
        with self.engine.connect() as conn:
            rows = {
                t.name: sorted(repr(tuple(r)) for r in conn.execute(sa.select(t)))
                for t in metadata.sorted_tables
            }
        files = {
            str(p.relative_to(self.home)): p.read_bytes()
            for p in sorted(self.home.rglob("*"))
            if p.is_file()
        }
        return rows, files

    def check_stored(self) -> None:
        """What the commands that succeeded stored has its documented shape."""
        with self.engine.connect() as conn:
            repos = queries.list_repos(conn)
            tasks = queries.list_tasks(conn)
        for r in repos:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", r.name), r.name
            assert re.fullmatch(r"[A-Z][A-Z0-9]{0,15}", r.key_prefix), r.key_prefix
        for t in tasks:
            assert taskdir.valid_key(t.key), t.key
            assert t.title == t.title.strip(), t.title
            assert 0 < len(t.title) <= 200, t.title
            assert not any(c in t.title for c in LINE_BREAKS), t.title
        tasks_dir = self.home / "tasks"
        if tasks_dir.is_dir():
            for folder in tasks_dir.iterdir():
                assert taskdir.valid_key(folder.name), folder


@pytest.fixture
def bench(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bench]:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    monkeypatch.chdir(tmp_path)
    b = Bench(tmp_path, migrated_db_url, make_repo())
    b.setup()
    yield b
    b.engine.dispose()


def check_call(bench: Bench, argv: list[str]) -> None:
    """One CLI call and every property of it."""
    before = bench.snapshot()
    result = bench.invoke(argv)
    shown = f"argv={argv!r}\nexit={result.exit_code}\noutput={result.output[-2000:]!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"unhandled exception\n{shown}\n{trace}")
    assert result.exit_code in (0, 1, 2), shown
    assert "Traceback" not in result.output, shown
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, shown
        assert all(line in errors or line.startswith("Usage: ") for line in lines), shown
    if result.exit_code != 0:
        assert bench.snapshot() == before, f"a failed command wrote something\n{shown}"
    else:
        bench.check_stored()


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One database for all the examples of a test: the snapshot makes each example see
    # (and check) exactly what the previous ones left.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _fill(bench: Bench, argv: list[str]) -> list[str]:
    paths = {
        "repo": bench.repo,
        "files": bench.files,
        "body": bench.files / "body",
        "patch": bench.files / "good.patch",
        "approve": bench.files / "approve.md",
        "empty": bench.files / "empty",
    }
    return [re.sub("\0([a-z]+)\0", lambda m: str(paths[m[1]]), a) for a in argv]


# Each @example is a bug these properties found, kept as a fixed case.
@SETTINGS
@given(argv=argv_for(REPO_COMMANDS))
@example(argv=["repo", "add", "new\n", "\0repo\0"])  # "$" matched before the newline
@example(argv=["repo", "add", "other", "\0repo\0", "--prefix", "X\n"])
@example(argv=["repo", "set", "demo", "--health-url", "http://[::1"])  # ValueError escaped
@example(argv=["repo", "show", "[/x]"])  # rich markup in an error message raised
@example(argv=["repo", "set", "\0"])  # PostgreSQL: "text fields cannot contain NUL" escaped
def test_repo_commands(bench: Bench, argv: list[str]) -> None:
    check_call(bench, _fill(bench, argv))


@SETTINGS
@given(argv=argv_for(TASK_COMMANDS))
@example(argv=["task", "add", "demo", "a\u2028b"])  # a title of two lines was stored
@example(argv=["task", "add", "demo", "t", "--nope"])  # a usage error was a framed panel
def test_task_commands(bench: Bench, argv: list[str]) -> None:
    check_call(bench, _fill(bench, argv))


@SETTINGS
@given(argv=argv_for(OTHER_COMMANDS))
@example(argv=["alerts", "--limit", "99999999999999999999"])  # OverflowError on SQLite
@example(argv=["alerts", "--limit", "-1"])  # a negative LIMIT: an error on PostgreSQL
@example(argv=["backend", "resume", "\0"])  # a NUL reaching PostgreSQL
def test_other_commands(bench: Bench, argv: list[str]) -> None:
    check_call(bench, _fill(bench, argv))
