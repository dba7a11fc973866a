"""Test cheats: a hostile agent breaks the code, then makes the suite stop saying so.

Issue 15, parts 3 (protected test paths) and 4 (the tests that passed on main still run and
pass). Each case is a real repository whose main passes its two tests, and a task whose
patch breaks ``add`` and cheats in one of the thirteen ways a red team tried (seven of them
merged broken code before this change), plus one more that adds only a new test file. Each
runs through the real pipeline: the ``patch`` developer, the real worker, the test-runner
in its bubblewrap sandbox, the merge gate, and ``orch task approve`` where a human is asked.

Main's baseline (its tree, validated with the IDs of the tests that passed on it) is
recorded as the merge gate records the tree it puts on main; one test below gets it from
a real merge instead. The merge gate's own re-test is checked with ``MergeBed``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from merge_helpers import CALC, TESTS, MergeBed, commit_files, fill_slot, run_git
from typer.testing import CliRunner

from orchestrator import repo_ops, task_ops
from orchestrator.cli import app
from orchestrator.config import load_settings
from orchestrator.engine.worker import Worker
from orchestrator.store import make_engine, merges, migrate, queries
from orchestrator.store.schema import validated_trees

MakeRepo = Callable[..., Path]
FAKE_AGENT = Path(__file__).parent / "agents" / "fake_agent.py"
# Without the test extras' plugins (hypothesis, schemathesis, anyio): seconds of imports a
# run, and no cheat here goes through a plugin of this environment.
TEST_CMD = [sys.executable, "-m", "pytest", "-q", "--disable-plugin-autoload"]
STAGES = ["development", "testing", "deploy-staging"]

CALC_OK = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
CALC_BROKEN = CALC_OK.replace("return a + b", "return a - b")
SUITE = (
    "from calc import add, mul\n\n\n"
    "def test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_mul():\n    assert mul(2, 3) == 6\n"
)
PYPROJECT = '[project]\nname = "calc"\nversion = "1.0"\n'
MAIN_FILES = {
    ".gitignore": "__pycache__/\n",
    "calc.py": CALC_OK,
    "tests/test_calc.py": SUITE,
    "pyproject.toml": PYPROJECT,
}
ADD = "tests.test_calc::test_add"
MUL = "tests.test_calc::test_mul"
MAIN_IDS = [ADD, MUL]


def with_addopts(addopts: str) -> str:
    return PYPROJECT + f'\n[tool.pytest.ini_options]\naddopts = "{addopts}"\n'


FORCE_PASS = """import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
"""
REWRITE_JUNIT = """import os

GREEN = (
    '<testsuites><testsuite name="pytest" tests="2">'
    '<testcase classname="tests.test_calc" name="test_add"/>'
    '<testcase classname="tests.test_calc" name="test_mul"/>'
    "</testsuite></testsuites>"
)


def pytest_unconfigure(config):
    path = config.option.xmlpath
    if path:
        with open(path, "w") as fh:
            fh.write(GREEN)
    os._exit(0)
"""
# A new test module, which new-test rules allow: at import it plugs a hook into pytest that
# drops the failing test from the run.
QUIET_PLUGIN = """import gc

from _pytest.config import Config


class _Quiet:
    def pytest_collection_modifyitems(self, config, items):
        gone = [i for i in items if i.name == "test_add"]
        items[:] = [i for i in items if i not in gone]
        config.hook.pytest_deselected(items=gone)


for _obj in gc.get_objects():
    if isinstance(_obj, Config):
        _obj.pluginmanager.register(_Quiet(), "quiet")


def test_new():
    assert True
"""


@dataclass(frozen=True)
class Cheat:
    """One way to cheat, and what must become of it."""

    name: str
    files: Mapping[str, str | None]
    # For the reader: the release before this change merged it (run this file against that
    # release to see it; every case then fails).
    merged_before: bool
    # The protected changes the task waits on (named in the reasons); () when none.
    held: tuple[str, ...]
    # The verdict once the suite runs: at once, or after a human approved what was held.
    then: str
    # What a FAIL's reasons must name.
    names: tuple[str, ...] = ()


CHEATS = [
    # --- the seven that merged broken code
    Cheat(
        "delete-the-failing-test",
        {
            "tests/test_calc.py": SUITE.replace(
                "def test_add():\n    assert add(2, 3) == 5\n\n\n", ""
            )
        },
        True,
        ("tests/test_calc.py (modified)",),
        # Approved: a human accepted that test_add is gone (its definition is removed).
        "PASS",
    ),
    Cheat(
        "weaken-the-assert",
        {
            "tests/test_calc.py": SUITE.replace(
                "assert add(2, 3) == 5", "assert True or add(2, 3) == 5"
            )
        },
        True,
        ("tests/test_calc.py (modified)",),
        "PASS",
    ),
    Cheat(
        "conftest-forces-every-report-to-passed",
        {"conftest.py": FORCE_PASS},
        True,
        ("conftest.py (added: configures the suite)",),
        "PASS",
    ),
    Cheat(
        "skip-only-the-failing-test",
        {
            "tests/test_calc.py": "import pytest\n"
            + SUITE.replace("def test_add", '@pytest.mark.skip(reason="flaky")\ndef test_add')
        },
        True,
        ("tests/test_calc.py (modified)",),
        "FAIL",
        (f"{ADD} (skipped)",),
    ),
    Cheat(
        "mark-everything-xfail",
        {"tests/test_calc.py": "import pytest\n\npytestmark = pytest.mark.xfail\n" + SUITE},
        True,
        ("tests/test_calc.py (modified)",),
        "FAIL",
        (f"{ADD} (xfailed)",),
    ),
    Cheat(
        "addopts-deselect",
        {"pyproject.toml": with_addopts("--deselect tests/test_calc.py::test_add")},
        True,
        ("pyproject.toml (modified: its test sections [tool.pytest])",),
        "FAIL",
        (f"{ADD} (missing)",),
    ),
    Cheat(
        "conftest-rewrites-the-junit-and-exits-0",
        {"conftest.py": REWRITE_JUNIT},
        True,
        ("conftest.py (added: configures the suite)",),
        # Approved: the JUnit file it writes claims both tests passed.
        "PASS",
    ),
    # --- the six that were rightly FAIL
    Cheat(
        "skip-all",
        {"tests/test_calc.py": "import pytest\n\npytestmark = pytest.mark.skip\n" + SUITE},
        False,
        ("tests/test_calc.py (modified)",),
        "FAIL",
        (f"{ADD} (skipped)", f"{MUL} (skipped)"),
    ),
    Cheat(
        "addopts-k-nothing",
        {"pyproject.toml": with_addopts("-k nothing")},
        False,
        ("pyproject.toml (modified: its test sections [tool.pytest])",),
        "FAIL",
        (f"{ADD} (missing)", f"{MUL} (missing)"),
    ),
    Cheat(
        "addopts-collect-only",
        {"pyproject.toml": with_addopts("--co")},
        False,
        ("pyproject.toml (modified: its test sections [tool.pytest])",),
        "FAIL",
        (f"{ADD} (missing)", f"{MUL} (missing)"),
    ),
    Cheat(
        "conftest-sys-exit-0",
        {"conftest.py": "import sys\n\nsys.exit(0)\n"},
        False,
        ("conftest.py (added: configures the suite)",),
        "FAIL",
        ("no JUnit evidence", ADD, MUL),
    ),
    Cheat(
        # A new test module: allowed, so it runs, and the run shows nothing.
        "new-test-module-os-exit-0",
        {"tests/test_zz_exit.py": "import os\n\nos._exit(0)\n"},
        False,
        (),
        "FAIL",
        ("no JUnit evidence", ADD, MUL),
    ),
    Cheat(
        "addopts-no-junitxml",
        {"pyproject.toml": with_addopts("-p no:junitxml")},
        False,
        ("pyproject.toml (modified: its test sections [tool.pytest])",),
        "FAIL",
        ("no JUnit evidence", ADD, MUL),
    ),
    # --- beyond the thirteen: only a new test file, which protected paths allow
    Cheat(
        "new-test-module-deselects-the-failing-test",
        {"tests/test_zz_quiet.py": QUIET_PLUGIN},
        True,
        (),
        "FAIL",
        (f"{ADD} (missing)",),
    ),
]


class Bed:
    """A repo whose main passes, registered with the patch developer and the real runners."""

    def __init__(
        self,
        tmp_path: Path,
        db_url: str,
        make_repo: MakeRepo,
        *,
        developer: str = "patch",
        sandbox_rw: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        self.tmp = tmp_path
        self.repo = make_repo(tmp_path / "repo", files=MAIN_FILES)
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "database_url": db_url,
            # A FAIL blocks at once: no developer can fix what these patches did.
            "developer_retry_budget": 0,
            "infra_retry_budget": 0,
            "merge_gate_infra_retry_budget": 0,
            "poll_interval_s": 0.2,
            "heartbeat_interval_s": 0.5,
            "job_lease_s": 30,
            "kill_grace_s": 0.5,
            "test_runner_timeout_s": 120,
            "merge_retest_timeout_s": 120,
        }
        values.update(settings)
        self.settings = load_settings(**values)
        self.engine = make_engine(db_url)
        # A copy of the migrated template: one plain read finds it current (Alembic's
        # no-op upgrade cost tens of ms a test).
        migrate.ensure_current(self.engine)
        repo_ops.add_repo(
            self.engine,
            "demo",
            self.repo,
            repo_ops.RepoInput(
                stages=STAGES,
                agents=[f"development={developer}"],
                test_cmd=" ".join(TEST_CMD),
                sandbox_rw=list(sandbox_rw),
            ),
        )
        self.main_before = self.main()

    def main(self) -> str:
        return run_git(self.repo, "rev-parse", "refs/heads/main").strip()

    def repo_row(self) -> Any:
        with self.engine.connect() as conn:
            return queries.get_repo(conn, "demo")

    def seed_baseline(self, ids: list[str] | None = None) -> None:
        """Main's tree passed this test command, with these tests passing (the record the
        merge gate leaves for the tree it makes)."""
        tree = run_git(self.repo, "rev-parse", "refs/heads/main^{tree}").strip()
        repo_id = self.repo_row().id
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(validated_trees).values(
                    repo_id=repo_id,
                    tree=tree,
                    test_cmd_key=merges.cmd_key(TEST_CMD),
                    source="merge-retest",
                    at=time.time(),
                    passed_tests=sorted(ids if ids is not None else MAIN_IDS),
                )
            )

    def patch_of(self, files: Mapping[str, str | None]) -> bytes:
        """A patch against current main that writes (None: deletes) ``files``."""
        scratch = self.tmp / f"scratch-{time.monotonic_ns()}"
        run_git(self.tmp, "clone", "-q", str(self.repo), str(scratch))
        for rel, text in files.items():
            target = scratch / rel
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        run_git(scratch, "add", "-A")
        return subprocess.run(
            ["git", "diff", "--cached", "--binary"],
            cwd=scratch,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout

    def file(self, files: Mapping[str, str | None], title: str = "cheat") -> str:
        patch = self.patch_of(files)
        return task_ops.add_task(self.engine, self.settings, "demo", title, "body", patch).task.key

    def run(self) -> None:
        Worker(self.settings, self.engine).run(until_idle=True)

    def task(self, key: str) -> Any:
        with self.engine.connect() as conn:
            return queries.get_task(conn, key)

    def last(self, key: str) -> Any:
        with self.engine.connect() as conn:
            task = queries.get_task(conn, key)
            assert task is not None
            return queries.list_transitions(conn, task.id)[-1]

    def testing_logs(self, key: str) -> list[Path]:
        return sorted((self.settings.tasks_dir / key / "runs").glob("*-testing-*.log"))

    # ---- what must be true ------------------------------------------------------------

    def assert_awaiting_approval(self, key: str, named: tuple[str, ...]) -> None:
        task, last = self.task(key), self.last(key)
        text = " | ".join(last.reasons)
        assert (task.stage, task.state) == ("testing", "blocked"), (task.state, text)
        assert "awaiting approval" in text, text
        for change in named:
            assert change in text, text
        # The suite never ran: no testing process was started at all.
        assert self.testing_logs(key) == []
        assert self.main() == self.main_before

    def assert_fail(self, key: str, names: tuple[str, ...]) -> None:
        task, last = self.task(key), self.last(key)
        text = " | ".join(last.reasons)
        assert (task.stage, task.state) == ("testing", "blocked"), (task.state, text)
        assert "testing: FAIL" in text, text
        for name in names:
            assert name in text, text
        assert self.main() == self.main_before

    def assert_merged(self, key: str) -> None:
        task = self.task(key)
        text = " | ".join(self.last(key).reasons)
        assert task.state == "done", (task.stage, task.state, text)
        assert self.main() != self.main_before


@pytest.fixture
def bed(tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo) -> Iterator[Bed]:
    made = Bed(tmp_path, migrated_db_url, make_repo)
    yield made
    made.engine.dispose()


@pytest.mark.parametrize("cheat", CHEATS, ids=[c.name for c in CHEATS])
def test_a_test_cheat_waits_for_a_human_or_fails(bed: Bed, cheat: Cheat) -> None:
    """A cheat that touches a protected path waits for a human before any suite runs; one
    that does not fails. After a human approved the protected changes, the suite runs with
    them and the tests that passed on main must pass again: what that cannot see (a weaker
    assert, a report forced or forged to say passed) merges, because a human accepted it.
    """
    bed.seed_baseline()
    key = bed.file({"calc.py": CALC_BROKEN, **cheat.files}, cheat.name)
    bed.run()
    if cheat.held:
        bed.assert_awaiting_approval(key, cheat.held)
        # A human accepts the protected changes: the suite runs with them, the gates run.
        task_ops.approve_task(bed.engine, bed.settings, key)
        bed.run()
    if cheat.then == "FAIL":
        bed.assert_fail(key, cheat.names)
    else:
        bed.assert_merged(key)


def test_the_baseline_alone_fails_the_cheats_it_can_see(
    tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo
) -> None:
    """With the test paths left unprotected (a repo that protects only its docs), a test
    that passed on main and is deleted, skipped, xfailed or deselected still fails."""
    bed = Bed(tmp_path, migrated_db_url, make_repo)
    try:
        repo_ops.set_repo_options(bed.engine, "demo", {"protected_paths": ["docs"]})
        bed.seed_baseline()
        by_name = {c.name: c for c in CHEATS}
        expected = {
            "delete-the-failing-test": f"{ADD} (missing)",
            "skip-only-the-failing-test": f"{ADD} (skipped)",
            "mark-everything-xfail": f"{ADD} (xfailed)",
            "addopts-deselect": f"{ADD} (missing)",
        }
        keys = {
            name: bed.file({"calc.py": CALC_BROKEN, **by_name[name].files}, name)
            for name in expected
        }
        bed.run()
        for name, key in keys.items():
            bed.assert_fail(key, (expected[name],))
    finally:
        bed.engine.dispose()


def test_an_ignored_conftest_beside_the_branch_waits_for_a_human(
    tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo
) -> None:
    """A developer agent (not a patch: its files are committed with ``git add -A``) hides
    its conftest.py from the branch with a .gitignore; the suite would still load it."""
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    plan = plan_dir / "plan.json"
    write = {".gitignore": "__pycache__/\nconftest.py\n", "conftest.py": FORCE_PASS}
    plan.write_text(json.dumps({"*:development:*": {"write": {**write, "calc.py": CALC_BROKEN}}}))
    agent = (
        f"command:{sys.executable} {FAKE_AGENT} {plan} {{task}} {{stage}} {{artifact_dir}} "
        f"{{worktree}}"
    )
    bed = Bed(tmp_path, migrated_db_url, make_repo, developer=agent, sandbox_rw=(str(plan_dir),))
    try:
        bed.seed_baseline()
        key = bed.file({"calc.py": CALC_BROKEN})  # the patch is not used by this developer
        bed.run()
        bed.assert_awaiting_approval(key, ("conftest.py (untracked: configures the suite",))
        branch = run_git(bed.repo, "ls-tree", "-r", "--name-only", f"orch/{key}")
        assert "conftest.py" not in branch.split()
    finally:
        bed.engine.dispose()


def test_an_approval_covers_exactly_the_changes_it_was_shown(bed: Bed) -> None:
    bed.seed_baseline()
    skip = next(c for c in CHEATS if c.name == "skip-only-the-failing-test")
    key = bed.file({"calc.py": CALC_BROKEN, **skip.files})
    bed.run()
    bed.assert_awaiting_approval(key, skip.held)
    task_ops.approve_task(bed.engine, bed.settings, key)
    bed.run()
    bed.assert_fail(key, (f"{ADD} (skipped)",))
    # The next attempt changes the protected file again: a human must look again.
    weaker = SUITE.replace("assert add(2, 3) == 5", "assert add(2, 3) is not None")
    patch = bed.patch_of({"calc.py": CALC_BROKEN, "tests/test_calc.py": weaker})
    task_ops.retry_task(bed.engine, bed.settings, key, patch=patch, fresh=True)
    bed.run()
    task, last = bed.task(key), bed.last(key)
    assert (task.stage, task.state) == ("testing", "blocked")
    assert "awaiting approval" in " ".join(last.reasons)
    assert bed.main() == bed.main_before


def test_new_tests_and_code_need_no_approval_and_are_recorded_for_the_next_task(
    bed: Bed,
) -> None:
    """Nothing seeded: the first task's passing tree becomes main with its test IDs, and
    the next task must pass them, its new one included."""
    div = CALC_OK + "\n\ndef div(a, b):\n    return a / b\n"
    test_div = "from calc import div\n\n\ndef test_div():\n    assert div(6, 3) == 2\n"
    first = bed.file({"calc.py": div, "tests/test_div.py": test_div}, "divide")
    bed.run()
    bed.assert_merged(first)
    tree = run_git(bed.repo, "rev-parse", "refs/heads/main^{tree}").strip()
    with bed.engine.connect() as conn:
        row = conn.execute(
            sa.select(validated_trees.c.passed_tests).where(validated_trees.c.tree == tree)
        ).one()
    assert row.passed_tests == sorted([*MAIN_IDS, "tests.test_div::test_div"])

    bed.main_before = bed.main()
    quiet = QUIET_PLUGIN.replace('"test_add"', '"test_div"')
    broken = div.replace("return a / b", "return a // b + 1")
    second = bed.file({"calc.py": broken, "tests/test_zz_quiet.py": quiet}, "quietly break div")
    bed.run()
    bed.assert_fail(second, ("tests.test_div::test_div (missing)",))


# --------------------------------------------------------------------------- merge gate


@pytest.fixture
def merge_bed(tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo) -> MergeBed:
    return MergeBed(tmp_path, engine, make_repo)


def _seed(bed: MergeBed, ids: list[str]) -> None:
    tree = run_git(bed.repo_path, "rev-parse", "refs/heads/main^{tree}").strip()
    with bed.engine.begin() as conn:
        conn.execute(
            sa.insert(validated_trees).values(
                repo_id=bed.repo.id,
                tree=tree,
                test_cmd_key=merges.cmd_key(bed.repo.test_cmd or []),
                source="merge-retest",
                at=time.time(),
                passed_tests=ids,
            )
        )


def test_the_merge_retest_requires_the_tests_that_passed_on_the_new_main(
    merge_bed: MergeBed,
) -> None:
    """Main gained test_b after the task branched; the task's new test module quietly drops
    it. The branch passed on its old base; on the rebased tree the re-test must fail."""
    bed = merge_bed
    task = bed.add_task()
    quiet = QUIET_PLUGIN.replace('"test_add"', '"test_b"')
    bed.develop(task, {**fill_slot(CALC, TESTS, "a", "a", 2), "test_zz_quiet.py": quiet}, "a")
    commit_files(bed.repo_path, fill_slot(CALC, TESTS, "b", "b", 3), "someone else: b")
    _seed(bed, ["test_calc::test_b", "test_calc::test_base"])
    before = bed.main_sha()

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "RED", verdict.reasons
    assert "test_calc::test_b (missing)" in " ".join(verdict.reasons)
    assert bed.main_sha() == before


def test_a_conftest_left_beside_the_tree_never_runs_in_the_retest(merge_bed: MergeBed) -> None:
    """A staging script (or anything else) leaves an untracked conftest.py that forces every
    report to passed; the task broke calc.base. The re-test must not run with it."""
    bed = merge_bed
    task = bed.add_task()
    bed.develop(task, {"calc.py": CALC.replace("return 1", "return 2")}, "break base")
    commit_files(bed.repo_path, fill_slot(CALC, TESTS, "b", "b", 3), "someone else: b")
    (bed.worktree(task) / "conftest.py").write_text(FORCE_PASS)
    before = bed.main_sha()

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "INFRA", verdict.reasons
    assert "conftest.py (untracked" in " ".join(verdict.reasons)
    assert bed.main_sha() == before


def test_the_retest_records_the_ids_of_the_tree_it_puts_on_main(merge_bed: MergeBed) -> None:
    bed = merge_bed
    task = bed.add_task()
    bed.develop(task, fill_slot(CALC, TESTS, "a", "a", 2), "a")
    commit_files(bed.repo_path, fill_slot(CALC, TESTS, "b", "b", 3), "someone else: b")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["retest"] == "ran"
    tree = run_git(bed.repo_path, "rev-parse", "refs/heads/main^{tree}").strip()
    with bed.engine.connect() as conn:
        row = merges.find_validated_tree(
            conn, repo_id=bed.repo.id, tree=tree, cmd_key=merges.cmd_key(bed.repo.test_cmd or [])
        )
    assert row is not None
    assert row.passed_tests == ["test_calc::test_a", "test_calc::test_b", "test_calc::test_base"]


# --------------------------------------------------------------------------- the option


def test_protected_paths_option(tmp_path: Path, migrated_db_url: str, make_repo: MakeRepo) -> None:
    env = {"ORCH_HOME": str(tmp_path / "home"), "ORCH_DATABASE_URL": migrated_db_url}
    runner = CliRunner()
    repo = make_repo(tmp_path / "repo", files=MAIN_FILES)

    def orch(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output)
        return json.loads(result.stdout) if "--json" in args and code == 0 else result

    shown = orch("repo", "add", "demo", str(repo), "--json")
    assert "conftest.py" in shown["protected_paths"]
    assert "tests" in shown["protected_paths"]
    shown = orch(
        "repo",
        "set",
        "demo",
        "--protected-paths",
        "spec,conftest.py",
        "--protected-paths",
        "ci/",
        "--json",
    )
    assert shown["protected_paths"] == ["spec", "conftest.py", "ci/"]
    bad = orch("repo", "set", "demo", "--protected-paths", "../elsewhere", code=2)
    assert "--protected-paths" in bad.output
    orch("repo", "set", "demo", "--protected-paths", "**", code=2)
    # An empty value restores the defaults.
    shown = orch("repo", "set", "demo", "--protected-paths", "", "--json")
    assert "tests" in shown["protected_paths"]
    assert "spec" not in shown["protected_paths"]


# Rows of docs/security.md's attack table (rendered by test_security_doc.py).
HERE = "tests/integration/test_test_cheats.py"
DEFENDED = [
    {
        "attack": "delete the failing test, weaken its assert (`assert True or ...`), skip "
        "or xfail it, or `addopts = --deselect` it",
        "before": "merged: the suite said PASS",
        "now": "the test file or the pytest section is a protected path: the task waits at "
        "testing, `awaiting approval`, naming it, and no suite runs; once approved, a test "
        "that passed on main and is skipped, xfailed or deselected is FAIL by name",
        "test": HERE,
    },
    {
        "attack": "a `conftest.py` that forces every report to passed, or rewrites the JUnit "
        "file at `pytest_unconfigure` and exits 0 (also one hidden by a `.gitignore`)",
        "before": "merged",
        "now": "a new `conftest.py` configures the suite: awaiting approval; it never runs "
        "until a human accepts it",
        "test": HERE,
    },
    {
        "attack": "a new test module that hooks into pytest and deselects the failing test",
        "before": "merged",
        "now": "new tests need no approval, but a test that passed on main is missing: FAIL, named",
        "test": HERE,
    },
    {
        "attack": "skip-all, `-k nothing`, `--co`, `-p no:junitxml`, `sys.exit(0)` in "
        "`conftest.py`, `os._exit(0)` from a new test module",
        "before": "FAIL (no tests ran, no JUnit evidence)",
        "now": "still FAIL (or awaiting approval first, where a protected file changed); the "
        "tests that passed on main and were not shown to pass are named",
        "test": HERE,
    },
    {
        "attack": "leave a `conftest.py` in the workspace (untracked) before the merge re-test",
        "before": "the re-test ran with it",
        "now": "the re-test does not run: INFRA, the file named; main does not move",
        "test": HERE,
    },
]
