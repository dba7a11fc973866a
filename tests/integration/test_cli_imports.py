"""What `orch` imports: the root help nothing but its table, help without a database layer,
a DB command without Alembic, a command on SQLite without PostgreSQL's dialect, typer
without pydantic where a value needs no adapter, the settings without pydantic where the
environment holds nothing to doubt; and which commands run with the garbage collector off.

Each command runs in a real child process, through ``orchestrator.cli.main`` as the `orch`
script calls it; a small wrapper then reports which heavy packages ended up in
``sys.modules``. Not a timing: an import that is not made costs nothing on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import orchestrator
from orchestrator.store import make_engine, migrate

SRC = Path(orchestrator.__file__).resolve().parents[1]

# argv[1]: the command's arguments as JSON; argv[2]: where to write what was imported, at
# exit (main() ends the process itself, after the atexit handlers).
WRAPPER = """
import atexit, gc, json, sys
from orchestrator.cli import main
args, report = json.loads(sys.argv[1]), sys.argv[2]

def write_report():
    watched = ("sqlalchemy", "alembic")
    commands = sorted(m for m in sys.modules if m.startswith("orchestrator.cli."))
    ui = [m for m in ("typer", "rich") if m in sys.modules]
    also = ("sqlalchemy.dialects.postgresql", "typer._adapters", "pydantic")
    with open(report, "w") as f:
        got = {"imported": [m for m in watched if m in sys.modules], "cli": commands, "ui": ui}
        got["also"] = [m for m in also if m in sys.modules]
        got["gc"] = gc.isenabled()
        got["orchestrator"] = sorted(m for m in sys.modules if m.startswith("orchestrator."))
        json.dump(got, f)

atexit.register(write_report)
sys.argv = ["orch", *args]
main()
"""


def orch_imports(tmp_path: Path, *args: str, code: int = 0) -> dict[str, Any]:
    """Run `orch ARGS` in a child process on a home under ``tmp_path``, which must exit
    ``code``: which of sqlalchemy and alembic it imported (``imported``), which of typer and
    rich (``ui``), which modules of orchestrator.cli (``cli``), which of PostgreSQL's
    dialect, typer's pydantic adapters and pydantic (``also``), whether the garbage
    collector was on at its end (``gc``), every module of orchestrator (``orchestrator``),
    and its ``stdout`` and ``stderr``."""
    (got,) = orch_imports_each(tmp_path, [args], code=code)
    return got


def orch_imports_each(
    tmp_path: Path, cases: Sequence[Sequence[str]], code: int = 0
) -> list[dict[str, Any]]:
    """``orch_imports`` of each of ``cases``, each in a child process of its own, all
    started at once: for commands that only read the home, so that their order does not
    matter (the machine has more than one core)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC))
    started: list[tuple[Sequence[str], Path, subprocess.Popen[str]]] = []
    try:
        for i, args in enumerate(cases):
            report = tmp_path / f"imported-{i}.json"
            report.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [sys.executable, "-c", WRAPPER, json.dumps(list(args)), str(report)],
                cwd=tmp_path,  # no `.env` of the checkout's
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append((args, report, proc))
        reports = []
        for args, report, proc in started:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == code, (args, out, err)
            got: dict[str, Any] = json.loads(report.read_text())
            got["stdout"] = out
            got["stderr"] = err
            reports.append(got)
        return reports
    finally:
        for _args, _report, proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_help_imports_no_database_layer(tmp_path: Path) -> None:
    cases = (["--help"], ["task", "--help"], ["--version"])
    for args, got in zip(cases, orch_imports_each(tmp_path, cases), strict=True):
        assert got["imported"] == [], args


def test_the_root_help_imports_no_command_and_no_typer(tmp_path: Path) -> None:
    # `orch --help` and a bare `orch` print the table of cli.commands: no command module, no
    # typer and no rich (importing typer alone takes longer than the whole help).
    for args, code in (["--help"], 0), ([], 2):
        got = orch_imports(tmp_path, *args, code=code)
        assert got["cli"] == ["orchestrator.cli.commands", "orchestrator.cli.exits"], args
        assert got["ui"] == [], args
        assert got["imported"] == [], args
    # The same text as the root group prints through click (--home makes it parse).
    fast = orch_imports(tmp_path, "--help")["stdout"]
    assert "Commands:" in fast
    parsed = orch_imports(tmp_path, "--home", str(tmp_path / "home"), "--help")
    assert parsed["ui"] == ["typer", "rich"]
    assert parsed["stdout"] == fast


def test_the_version_imports_no_typer_and_says_what_the_root_group_says(tmp_path: Path) -> None:
    fast = orch_imports(tmp_path, "--version")
    assert fast["ui"] == [], fast["ui"]
    assert fast["cli"] == ["orchestrator.cli.exits"], fast["cli"]
    # --home makes click parse: the eager --version option of the root group answers.
    parsed = orch_imports(tmp_path, "--home", str(tmp_path / "home"), "--version")
    assert parsed["ui"] != []
    assert parsed["stdout"] == fast["stdout"] == f"orch {orchestrator.__version__}\n"


def test_python_m_orchestrator_names_itself_as_click_does(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC))
    shown = []
    for args in (["--help"], ["--home", str(tmp_path), "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        shown.append(proc.stdout)
    assert shown[0].startswith("Usage: python -m orchestrator [OPTIONS]")
    assert shown[0] == shown[1]


def test_db_commands_on_a_current_database_do_not_import_alembic(tmp_path: Path) -> None:
    # The first command finds no database: it must migrate, so it does need Alembic.
    assert orch_imports(tmp_path, "init")["imported"] == ["sqlalchemy", "alembic"]
    cases = (["status", "--json"], ["task", "list", "--json"], ["repo", "list"])
    for args, got in zip(cases, orch_imports_each(tmp_path, cases), strict=True):
        assert got["imported"] == ["sqlalchemy"], args


# The homes the tests below start from are made once, by `orch init` and `orch repo add` in
# child processes as before, and each test copies one into its own tmp_path (the database
# with its -wal, the token file): a home of its own, as before, without the two child
# processes that made it (~1 s). The copies share the registered repo, which no command here
# changes: no task of theirs runs.


@pytest.fixture(scope="module")
def inited_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home made by `orch init`, to copy."""
    made = tmp_path_factory.mktemp("inited")
    orch_imports(made, "init")
    return made / "home"


@pytest.fixture(scope="module")
def home_with_a_repo(tmp_path_factory: pytest.TempPathFactory, inited_home: Path) -> Path:
    """A home made by `orch init`, and a one-commit repo registered as ``demo``, to copy."""
    made = tmp_path_factory.mktemp("with-a-repo")
    shutil.copytree(inited_home, made / "home")
    repo = made / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(repo)]
    repo.mkdir()
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    orch_imports(made, "repo", "add", "demo", str(repo))
    return made / "home"


def copy_home(home: Path, tmp_path: Path) -> None:
    """``home`` copied to ``tmp_path``'s home, where ``orch_imports(tmp_path, ...)`` runs."""
    shutil.copytree(home, tmp_path / "home")


def test_rich_is_imported_only_to_draw(tmp_path: Path, home_with_a_repo: Path) -> None:
    # Rich takes longer to import than typer: JSON and one plain line do without it.
    copy_home(home_with_a_repo, tmp_path)
    plain_cases = [
        ["status", "--json"],
        ["task", "add", "demo", "a task"],
        ["task", "list", "--json"],
        ["task", "show", "DEMO-1", "--json"],
        ["repo", "list", "--json"],
        ["alerts", "--json"],
    ]
    drawn_cases = [["status"], ["task", "list"], ["task", "show", "DEMO-1"], ["repo", "list"]]
    # In order up to the task's filing (a status before it); the reads after it side by side.
    for args in plain_cases[:2]:
        assert orch_imports(tmp_path, *args)["ui"] == ["typer"], args
    reads = [*plain_cases[2:], *drawn_cases]
    for args, got in zip(reads, orch_imports_each(tmp_path, reads), strict=True):
        assert got["ui"] == (["typer"] if args in plain_cases else ["typer", "rich"]), args


# The commands issue 19 times (bench/cli.py), and a listing with every filter given.
TIMED = (
    ["status"],
    ["task", "list"],
    ["task", "add", "demo", "a task"],
    ["task", "list", "--repo", "demo", "--state", "active", "--stage", "development"],
)


# What the timed commands, then three more, imported: run once, in this order, on a fresh
# copy of the home with a repo (the task add files DEMO-1). The tests below each check their
# own part of these reports, where each of them ran the same commands for its own.
AFTER_TIMED = (["status", "--json"], ["repo", "list"], ["task", "show", "DEMO-1"])
Reports = dict[tuple[str, ...], dict[str, Any]]


@pytest.fixture(scope="module")
def timed_reports(tmp_path_factory: pytest.TempPathFactory, home_with_a_repo: Path) -> Reports:
    """``orch_imports(...)`` of each of ``TIMED`` and then ``AFTER_TIMED``, by arguments."""
    tmp = tmp_path_factory.mktemp("timed")
    copy_home(home_with_a_repo, tmp)
    reports = {tuple(args): orch_imports(tmp, *args) for args in TIMED}
    # These three only read: side by side.
    after = orch_imports_each(tmp, AFTER_TIMED)
    reports.update(zip(map(tuple, AFTER_TIMED), after, strict=True))
    return reports


def test_a_sqlite_command_imports_no_postgresql_dialect(timed_reports: Reports) -> None:
    # The schema's JSONB columns and the serial gate's PostgreSQL WHERE are looked up only
    # on PostgreSQL (store.schema.JSON, PartialIndex): the dialect took ~15 ms to import.
    for args in [*TIMED, *AFTER_TIMED]:
        assert "sqlalchemy.dialects.postgresql" not in timed_reports[tuple(args)]["also"], args


def test_typer_coerces_plain_values_without_pydantic(
    tmp_path: Path,
    home_with_a_repo: Path,
    timed_reports: Reports,
) -> None:
    # typer builds a pydantic TypeAdapter to coerce each value, even an option left out;
    # a left-out option and a str for a str parameter need none (cli.root._SparePydantic).
    for args in TIMED:
        assert "typer._adapters" not in timed_reports[tuple(args)]["also"], args
    # A value only typer's adapter coerces still goes to it, and is coerced as before.
    copy_home(home_with_a_repo, tmp_path)
    body = tmp_path / "body.md"
    body.write_text("the body\n")
    got = orch_imports(tmp_path, "task", "add", "demo", "with a body", "--body-file", str(body))
    assert "typer._adapters" in got["also"]
    shown = orch_imports(tmp_path, "task", "show", got["stdout"].strip(), "--json")["stdout"]
    assert json.loads(shown)["body"] == "the body\n"


def test_the_timed_commands_import_no_pydantic(
    tmp_path: Path,
    home_with_a_repo: Path,
    timed_reports: Reports,
) -> None:
    # Their settings are read without it when the environment holds nothing to doubt
    # (config.read_plainly), and typer coerces their values without it: pydantic and
    # pydantic-settings took ~80 ms of CPU, a fifth of each of these commands.
    for args in TIMED:
        assert "pydantic" not in timed_reports[tuple(args)]["also"], args
    # A `.env` file is pydantic-settings' to read, as before.
    copy_home(home_with_a_repo, tmp_path)
    (tmp_path / ".env").write_text("ORCH_PAUSED=false\n")
    assert "pydantic" in orch_imports(tmp_path, "status", "--json")["also"]


def test_the_garbage_collector_is_off_only_for_commands_that_end(
    tmp_path: Path,
    home_with_a_repo: Path,
    timed_reports: Reports,
) -> None:
    # Off while `orch` starts (cli.main); a command that runs on turns it back on.
    copy_home(home_with_a_repo, tmp_path)
    # In a home where no task is filed: with one, the scheduler would run it through the
    # pipeline with the default agents (~35 s) to show what an empty run shows.
    assert orch_imports(tmp_path, "run", "--until-idle")["gc"] is True
    for args in TIMED:
        assert timed_reports[tuple(args)]["gc"] is False, args


def test_a_command_imports_its_own_command_module_only(tmp_path: Path, inited_home: Path) -> None:
    # Every command module imports typer and its own helpers, and typer reads the
    # signature of every function it makes a command of: `orch status` pays for its own.
    copy_home(inited_home, tmp_path)
    shared = [f"orchestrator.cli.{m}" for m in ("_common", "commands", "exits", "root")]
    cases = [
        (["status", "--json"], "orchestrator.cli.misc"),
        (["task", "list", "--json"], "orchestrator.cli.task"),
        (["repo", "list"], "orchestrator.cli.repo"),
        (["alerts", "--json"], "orchestrator.cli.engine_cmds"),
    ]
    reports = orch_imports_each(tmp_path, [args for args, _own in cases])
    for (args, own), got in zip(cases, reports, strict=True):
        assert got["cli"] == sorted([*shared, own]), args


def serve_imports(tmp_path: Path, *args: str) -> dict[str, Any]:
    """``orch_imports`` of `orch serve --port 0 ARGS`: up (``/health`` answered), then
    stopped by SIGTERM, which it must end with 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC))
    report = tmp_path / "imported-serve.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, json.dumps(["serve", "--port", "0", *args]), str(report)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        said = ""
        while "listening on " not in said:
            line = proc.stderr.readline()
            assert line, f"orch serve ended before it listened: {said}"
            said += line
        url = said.split("listening on ", 1)[1].split()[0]
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    got: dict[str, Any] = json.loads(report.read_text())
    return got


def test_serve_without_the_forge_imports_none_of_it_and_collects_garbage(
    tmp_path: Path, inited_home: Path
) -> None:
    # Issues are filed from the forge by intake (the scheduler's) and by webhook deliveries
    # (imported at the first signed one): a server that takes neither never imports them.
    # The collector is off while the server starts (cli.main) and on once it serves.
    copy_home(inited_home, tmp_path)
    forge = ["orchestrator.intake", "orchestrator.webhooks"]
    bare = serve_imports(tmp_path, "--no-scheduler")
    assert [m for m in forge if m in bare["orchestrator"]] == []
    assert bare["gc"] is True
    assert "sqlalchemy.dialects.postgresql" not in bare["also"]
    full = serve_imports(tmp_path)
    assert [m for m in forge if m in full["orchestrator"]] == ["orchestrator.intake"]
    assert full["gc"] is True


def test_serve_refuses_bad_options_and_a_busy_port_before_importing_the_server(
    tmp_path: Path, inited_home: Path
) -> None:
    # A refusal is told at once: FastAPI and the app's modules (~0.4 s) are imported only
    # once the options are good and the port is bound.
    copy_home(inited_home, tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        cases = (
            (["serve", "--host", "0.0.0.0"], 1, "beyond loopback"),
            (["serve", "--insecure-no-token", "--host", "0.0.0.0"], 2, "loopback only"),
            (["serve", "--port", port, "--no-scheduler"], 1, f"cannot listen on 127.0.0.1:{port}"),
        )
        for args, code, says in cases:
            got = orch_imports(tmp_path, *args, code=code)
            assert says in got["stderr"], (args, got["stderr"])
            assert "orchestrator.api.app" not in got["orchestrator"], args


def test_the_api_imports_no_engine(tmp_path: Path) -> None:
    # The serial gate of /status and /queue reads its stages from the domain, not the engine;
    # the runners' names (the totals, /metrics, /status) come from there too, not from the
    # runners, whose suite code brings the sandbox, git and the process groups.
    code = (
        "import json, sys\n"
        "from orchestrator.api import create_app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('orchestrator.'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = json.loads(proc.stdout)
    assert [m for m in imported if m.startswith("orchestrator.engine.worker")] == []
    assert [m for m in imported if m.startswith("orchestrator.runners")] == []
    assert "orchestrator.webhooks" not in imported
    assert "orchestrator.api.app" in imported


def test_a_database_behind_is_still_upgraded_by_a_command(
    tmp_path: Path, inited_home: Path
) -> None:
    copy_home(inited_home, tmp_path)
    eng = make_engine(f"sqlite:///{tmp_path / 'home' / 'orchestrator.db'}")
    try:
        migrate.downgrade(eng, "0001")
        assert orch_imports(tmp_path, "status")["imported"] == ["sqlalchemy", "alembic"]
        assert migrate.current_revision(eng) == migrate.head_revision()
    finally:
        eng.dispose()


def test_main_exits_with_the_commands_code_after_the_atexit_handlers(tmp_path: Path) -> None:
    # main() skips the interpreter's teardown of modules: exit codes, output and atexit
    # handlers must be as before, on success, failure and usage errors alike.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC))
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        "from orchestrator.cli import main\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n"
        "sys.argv = ['orch', *sys.argv[1:]]\n"
        "main()\n"
    )
    cases = [
        (["--version"], 0, "orch "),
        (["task", "show", "NOPE-1"], 2, "error: unknown task NOPE-1"),
        (["--bogus"], 2, "error: No such option: --bogus"),
    ]
    for args, want, says in cases:
        marker.unlink(missing_ok=True)
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == want, (args, proc.stdout, proc.stderr)
        assert says in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert marker.exists(), args


# ---- the check itself, on either backend ---------------------------------------------------


def test_shipped_head_read_from_text_is_alembics_head() -> None:
    # Holds the text reading to Alembic's: a migration written so that the plain reading
    # would miss it must make this fail (or make shipped_head None: the slow, safe path).
    assert migrate.shipped_head() == migrate.head_revision()


def _script(folder: Path, rev: str, down: str) -> None:
    (folder / f"{rev}_x.py").write_text(
        f'revision: str = "{rev}"\ndown_revision: str | None = {down}\n'
    )


@pytest.mark.parametrize(
    ("scripts", "head"),
    [
        ({"0001": "None", "0002": '"0001"', "0003": '"0002"'}, "0003"),
        # Two heads: only Alembic can say what "head" means (it refuses).
        ({"0001": "None", "0002": '"0001"', "0003": '"0001"'}, None),
        # A merge names a tuple of parents: not read as text.
        ({"0001": "None", "0002": '"0001"', "0003": '("0001", "0002")'}, None),
        # A parent that no script defines.
        ({"0002": '"0001"'}, None),
        ({}, None),
    ],
)
def test_shipped_head_falls_back_when_the_text_is_not_plain(
    tmp_path: Path, scripts: dict[str, str], head: str | None
) -> None:
    for rev, down in scripts.items():
        _script(tmp_path, rev, down)
    assert migrate.shipped_head(tmp_path) == head


def test_shipped_head_refuses_a_script_without_plain_revision_lines(tmp_path: Path) -> None:
    _script(tmp_path, "0001", "None")
    (tmp_path / "0002_odd.py").write_text('revision = REV = "0002"\ndown_revision = "0001"\n')
    assert migrate.shipped_head(tmp_path) is None


def test_ensure_current_upgrades_only_what_is_behind(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        assert migrate.ensure_current(eng)  # empty: Alembic runs
        assert migrate.is_current(eng)
        assert not migrate.ensure_current(eng)  # current: one plain read
        migrate.downgrade(eng, "0001")
        assert migrate.ensure_current(eng)
        assert migrate.is_current(eng)
        with eng.connect() as conn:
            assert migrate.database_revisions(conn) == [migrate.head_revision()]
    finally:
        eng.dispose()


def test_ensure_current_hands_an_unknown_revision_to_alembic(db_url: str) -> None:
    # A database from a newer orchestrator: not "current", and the upgrade refuses it
    # rather than working on a schema it does not know.
    eng = make_engine(db_url)
    try:
        migrate.upgrade(eng)
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(Exception, match="9999"):
            migrate.ensure_current(eng)
    finally:
        eng.dispose()


def test_a_bare_group_prints_its_help_as_its_help_option_does(tmp_path: Path) -> None:
    # `orch task` alone is a usage error (exit 2) that shows the group's help: the text
    # `orch task --help` prints, and no blank line for the error's empty message after it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC), COLUMNS="80")

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    bare, asked = orch("task"), orch("task", "--help")
    assert (bare.returncode, asked.returncode) == (2, 0)
    assert "Usage: python -m orchestrator task" in asked.stdout
    assert bare.stdout.rstrip("\n") == asked.stdout.rstrip("\n")
    assert not bare.stdout.endswith("\n\n")
