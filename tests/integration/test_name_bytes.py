"""File names the agent chose, in bytes that are not UTF-8: every git read of them ends in a
verdict with a reason, never a crash.

The agent names every file of its workspace, and a name is bytes: git prints it as it is
(``diff --check``, ``ls-files -z``, ``diff --raw -z``, warnings on stderr, and every
listing when a user's ``core.quotePath`` is false). A name that must be matched or found
again (a protected path, a file beside the tree) is read as its bytes (surrogateescape, as
``os.fsdecode``); one that is only shown is shown with U+FFFD, so that no reason, record,
row or response holds a string that cannot be written as UTF-8. Real git repositories;
where cheap, the whole pipeline with the real worker and sandboxed test-runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestrator import task_ops
from orchestrator.api import create_app
from orchestrator.cli import app
from orchestrator.domain.stages import Stage
from orchestrator.gates import registry
from orchestrator.gitops import changes, commits, worktrees
from orchestrator.gitops import git as gitcmd
from orchestrator.runners import protected
from orchestrator.store import queries

try:
    from merge_helpers import MergeBed, commit_files, run_git
    from test_store import add_repo, add_task
    from test_test_cheats import CALC_BROKEN, FAKE_AGENT, FORCE_PASS, SUITE, Bed
except ImportError:  # imported as tests.integration.test_name_bytes
    from tests.integration.merge_helpers import MergeBed, commit_files, run_git
    from tests.integration.test_store import add_repo, add_task
    from tests.integration.test_test_cheats import CALC_BROKEN, FAKE_AGENT, FORCE_PASS, SUITE, Bed

DEBRIS = "<<<<<<< ours\na = 1\n=======\na = 2\n>>>>>>> theirs\n"
REPLACED = "\ufffd"


def name(raw: bytes) -> str:
    """A file name as Python's file system calls take it (``os.fsdecode``)."""
    return os.fsdecode(raw)


def _workspace(repo: Path, root: Path, key: str = "DEMO-1") -> Path:
    made = worktrees.ensure_worktree(repo, "main", root, "demo", key)
    assert made.error is None, made.error
    assert made.path is not None
    return made.path


def _git(cwd: Path, *args: str) -> str:
    return run_git(cwd, *args).strip()


def _writable(text: str) -> str:
    """``text``, checked to be writable as UTF-8 (a file, a row, a response)."""
    text.encode("utf-8")
    return text


# --------------------------------------------------------------------------- git's output


def test_a_warning_naming_a_file_that_is_not_utf8_does_not_crash_a_commit(
    tmp_path: Path, make_repo: Any
) -> None:
    # `git add -A` warns on stderr, the name as its bytes, of an embedded repository.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    inner = ws / name(b"\xfbsub")
    inner.mkdir()
    subprocess.run(["git", "init", "-q", str(inner)], check=True)
    (inner / "a.txt").write_text("a\n")
    run_git(inner, "add", "a.txt")
    run_git(inner, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "x")
    (ws / "work.txt").write_text("work\n")
    done = commits.commit_all(ws, "DEMO-1: work", main="main")
    assert done.status == "committed", done.detail


def test_shown_names_are_writable_and_say_what_they_hide() -> None:
    assert gitcmd.shown(name(b"a\xff/b.py")) == f"a{REPLACED}/b.py"
    # A line break or an escape in a name must not start a line of its own in a reason.
    assert gitcmd.shown("a\nb\x1b[31m.py") == "a\\nb\\x1b[31m.py"
    assert gitcmd.shown("caf\u00e9/\u202etxt.py") == "caf\u00e9/\\u202etxt.py"
    assert gitcmd.name_paths(["ok.py", name(b"\xfe.py")]) == f"ok.py, {REPLACED}.py"


# --------------------------------------------------------------------------- protected paths


def test_a_protected_test_renamed_to_a_name_that_is_not_utf8_is_a_protected_change(
    tmp_path: Path, make_repo: Any
) -> None:
    # `git diff --raw -z` prints the new name as its bytes: the deletion of the protected
    # test must still be seen (before: UnicodeDecodeError, the job CRASHED).
    repo = make_repo(files={"calc.py": "x = 1\n", "tests/test_calc.py": SUITE})
    ws = _workspace(repo, tmp_path / "worktrees")
    base = _git(ws, "rev-parse", "HEAD")
    os.rename(ws / "tests/test_calc.py", ws / name(b"\xff.py"))
    commit_files(ws, {}, "rename")

    diff, why = changes.diff_paths(ws, base, "HEAD")
    assert diff is not None, why
    assert sorted((d.status, d.path) for d in diff) == [
        ("A", name(b"\xff.py")),
        ("D", "tests/test_calc.py"),
    ]
    found = protected.check_paths(ws, base, "HEAD", None, workspace_files=True)
    assert found.problem is None
    assert [str(c) for c in found.changes] == ["tests/test_calc.py (deleted)"]


def test_a_protected_file_whose_name_is_not_utf8_is_matched_by_its_bytes(
    tmp_path: Path, make_repo: Any
) -> None:
    # Main has a test helper whose name is not UTF-8; the branch changes it. It is held,
    # shown with U+FFFD, and the fingerprint tells it from another name shown the same.
    odd, other = name(b"tests/data\xff.py"), name(b"tests/data\xfe.py")
    repo = make_repo(files={"calc.py": "x = 1\n", odd: "A = 1\n", other: "B = 1\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    base = _git(ws, "rev-parse", "HEAD")
    (ws / odd).write_text("A = 2\n")
    commit_files(ws, {}, "edit one")
    found = protected.check_paths(ws, base, "HEAD", None, workspace_files=True)
    assert found.problem is None
    assert [c.path for c in found.changes] == [odd]  # its bytes, not a look-alike
    shown = protected.hold_reasons(found, "DEMO-1")
    assert f"tests/data{REPLACED}.py (modified)" in _writable(" ".join(shown))

    (ws / odd).write_text("A = 1\n")
    (ws / other).write_text("B = 2\n")
    commit_files(ws, {}, "edit the other instead")
    again = protected.check_paths(ws, base, "HEAD", None, workspace_files=True)
    assert [c.path for c in again.changes] == [other]
    assert [str(c) for c in again.changes] == [str(c) for c in found.changes]
    assert again.fingerprint != found.fingerprint


def test_a_conftest_beside_the_tree_in_a_folder_that_is_not_utf8_is_found_and_read(
    tmp_path: Path, make_repo: Any
) -> None:
    # `ls-files --others -z` prints the folder's name as its bytes: the stray conftest.py
    # must be found (before: UnicodeDecodeError) and read where it is (its bytes: a name
    # with U+FFFD would name no file, and read as "unreadable").
    repo = make_repo(files={"calc.py": "x = 1\n", ".gitignore": "*.log\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    folder = ws / name(b"\xff")
    folder.mkdir()
    (folder / "conftest.py").write_text(FORCE_PASS)
    (ws / name(b"\xfe.log")).write_text("ignored\n")

    strays, why = changes.stray_paths(ws)
    assert strays is not None, why
    assert sorted(strays) == sorted([name(b"\xff/conftest.py"), name(b"\xfe.log")])
    head = _git(ws, "rev-parse", "HEAD")
    found = protected.check_paths(ws, head, head, None, workspace_files=True)
    assert found.problem is None
    [change] = found.changes
    assert change.kind == "untracked"
    assert change.content.startswith("sha256:")  # the file itself was read
    assert _writable(str(change)).startswith(f"{REPLACED}/conftest.py (untracked: configures")


def test_a_carriage_return_in_a_name_is_kept(tmp_path: Path, make_repo: Any) -> None:
    # Read as text, "\r" was a line break: the folder "sub\r" became "sub\n", a name that
    # is no file (read as "unreadable"), and the untracked file was never deleted.
    repo = make_repo(files={"calc.py": "x = 1\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / "sub\r").mkdir()
    (ws / "sub\r" / "conftest.py").write_text(FORCE_PASS)
    head = _git(ws, "rev-parse", "HEAD")
    found = protected.check_paths(ws, head, head, None, workspace_files=True)
    [change] = found.changes
    assert change.path == "sub\r/conftest.py"
    assert change.content.startswith("sha256:")  # the file itself was read
    assert str(change).startswith("sub\\r/conftest.py (untracked")

    (ws / "calc.py").write_text(DEBRIS)
    done = commits.commit_all(ws, "DEMO-1: attempt")
    assert done.status == "refused", done.detail
    assert "the attempt was undone" in done.detail
    assert not (ws / "sub\r").exists()


def test_a_hold_on_a_name_that_is_not_utf8_is_recorded_and_approved(
    tmp_path: Path, make_repo: Any
) -> None:
    # The record keeps the exact name (JSON escapes it); what approving returns is shown.
    odd = name(b"tests/data\xff.py")
    repo = make_repo(files={"calc.py": "x = 1\n", odd: "A = 1\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    (ws / odd).write_text("A = 2\n")
    commit_files(ws, {}, "edit")
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    found = protected.check_task_branch(ws, "main", None, task_dir)
    assert found.held, found
    protected.note_hold(task_dir, found, 1.0)
    accepted = protected.approve_hold(task_dir, "someone", 2.0)
    assert accepted == [f"tests/data{REPLACED}.py (modified)"]
    again = protected.check_task_branch(ws, "main", None, task_dir)
    assert again.approved
    assert not again.held
    assert [c.path for c in protected.approval_of(task_dir, again.fingerprint) or []] == [odd]


# --------------------------------------------------------------------------- commits


def test_branch_markers_in_a_file_whose_name_is_not_utf8_are_refused(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    # An agent commits conflict debris itself under a name that is not UTF-8: `git diff
    # --check` prints the name as its bytes. Before: UnicodeDecodeError at the gate.
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    ws = bed.worktree(task)
    (ws / name(b"\xfe-calc.py")).write_text(DEBRIS)
    commit_files(ws, {}, "debris")

    markers, why = commits.branch_markers(ws, "main")
    assert markers == [f"{REPLACED}-calc.py:1", f"{REPLACED}-calc.py:3", f"{REPLACED}-calc.py:5"]
    assert why == ""
    verdict = registry.check_branch_has_diff(bed.context(task, stage=Stage.DEVELOPMENT))
    assert not verdict.passed
    assert f"conflict markers: {REPLACED}-calc.py:1" in _writable(" ".join(verdict.reasons))


def test_branch_markers_fail_closed_when_git_cannot_tell(tmp_path: Path, make_repo: Any) -> None:
    # `git diff --check` failing (here: no such base) is not "no markers".
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    markers, why = commits.branch_markers(ws, "no-such-branch")
    assert markers is None
    assert "git diff --check" in why


def test_names_git_prints_unquoted_do_not_crash_a_commit_or_its_gate(
    tmp_path: Path, make_repo: Any
) -> None:
    # A user's `core.quotePath=false` (common where names are not English): `commit`'s
    # summary and `diff --stat` print a new file's name as its bytes.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    run_git(ws, "config", "core.quotePath", "false")
    (ws / name(b"\xfd-notes.txt")).write_text("notes\n")
    done = commits.commit_all(ws, "DEMO-1: notes", main="main")
    assert done.status == "committed", done.detail
    (ws / name(b"\xfc-more.txt")).write_text("more\n")
    assert commits.commit_all(ws, "DEMO-1: more").status == "committed"
    has, detail = commits.has_diff_vs(ws, "main")
    assert has, detail
    assert detail == "2 files changed, 2 insertions(+)"


def test_an_unmerged_path_whose_name_is_not_utf8_is_refused(tmp_path: Path, make_repo: Any) -> None:
    # A conflict left in the index on a name that is not UTF-8 (as `apply --3way` or a
    # merge leaves one): refused and undone, not a crash listing the unmerged paths.
    odd = name(b"\xff.txt")
    repo = make_repo(files={odd: "a\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    head = _git(ws, "rev-parse", "HEAD")
    run_git(ws, "checkout", "-q", "-b", "other")
    commit_files(ws, {odd: "b\n"}, "other")
    run_git(ws, "checkout", "-q", "-")
    commit_files(ws, {odd: "c\n"}, "ours")
    subprocess.run(["git", "merge", "-q", "other"], cwd=ws, capture_output=True, check=False)
    ours = _git(ws, "rev-parse", "HEAD")
    assert ours != head

    done = commits.commit_all(ws, "DEMO-1: attempt")
    assert done.status == "refused", done.detail
    assert f"unmerged paths (a conflict left unresolved): {REPLACED}.txt" in _writable(done.detail)
    assert _git(ws, "rev-parse", "HEAD") == ours


# --------------------------------------------------------------------------- the database


def test_a_reason_that_cannot_be_written_as_utf8_is_stored_with_replacement(
    engine: sa.Engine,
) -> None:
    # A surrogate that reaches a JSON column (a name read as its bytes, shown without
    # `shown`): PostgreSQL refused the row (and a job's end was tried again and again),
    # SQLite stored it for every reader to fail on. It is written with U+FFFD.
    odd = name(b"tests/\xff.py")
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        queries.insert_transition(
            conn,
            task_id=task.id,
            kind="block",
            from_stage="development",
            to_stage="development",
            from_state="active",
            to_state="blocked",
            reasons=[f"{odd} (deleted)", "plain", "caf\u00e9 \U0001f600"],
            actor="engine",
            now=3.0,
        )
    with engine.connect() as conn:
        stored = queries.list_transitions(conn, task.id)[-1].reasons
    assert stored == [f"tests/{REPLACED}.py (deleted)", "plain", "caf\u00e9 \U0001f600"]


# --------------------------------------------------------------------------- whole runs


def _shown_everywhere(bed: Bed, key: str, expected: str) -> None:
    """The reasons name ``expected`` in the database, `orch task show --json` and the API."""
    text = " | ".join(bed.last(key).reasons)
    assert expected in text, text
    env = {"ORCH_HOME": str(bed.settings.home), "ORCH_DATABASE_URL": str(bed.settings.database_url)}
    shown = CliRunner().invoke(app, ["task", "show", key, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert expected in json.dumps(json.loads(shown.stdout), ensure_ascii=False)
    api = create_app(bed.settings, bed.engine)
    token = (bed.settings.home / "api-token").read_text().strip()
    client = TestClient(
        api,
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
        raise_server_exceptions=False,
    )
    got = client.get(f"/tasks/{key}")
    assert got.status_code == 200, got.text
    assert expected in got.content.decode("utf-8")


def test_a_patch_that_renames_a_protected_test_to_bytes_waits_for_a_human(
    bed: Bed,
) -> None:
    """The patch developer moves the suite's test module to a name that is not UTF-8 and
    breaks the code: the task waits at testing for a human, the deletion named, and no
    suite runs (before: the testing job CRASHED on git's output)."""
    bed.seed_baseline()
    key = bed.file({"calc.py": CALC_BROKEN, "tests/test_calc.py": None, name(b"\xff.py"): SUITE})
    bed.run()
    bed.assert_awaiting_approval(key, ("tests/test_calc.py (deleted)",))
    _shown_everywhere(bed, key, "tests/test_calc.py (deleted)")


def test_a_conftest_left_in_a_folder_that_is_not_utf8_waits_for_a_human(
    tmp_path: Path, migrated_db_url: str, make_repo: Any
) -> None:
    """A developer agent leaves an untracked conftest.py that forces every report to pass,
    in a folder whose name is not UTF-8: it is found, named (with U+FFFD) and held; once a
    human approves it, the run goes on to a verdict."""
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    plan = plan_dir / "plan.json"
    # A .gitignore keeps the folder out of the branch (`git add -A` commits the rest):
    # "?" is one byte to git, so "/?/" is the folder \xff.
    write = {
        ".gitignore": "__pycache__/\n/?/\n",
        name(b"\xff/conftest.py"): FORCE_PASS,
        "calc.py": CALC_BROKEN,
    }
    # JSON escapes the name's surrogates; the agent's json.loads gives them back, and
    # open() writes the name's bytes.
    plan.write_text(json.dumps({"*:development:*": {"write": write}}))
    agent = (
        f"command:{sys.executable} {FAKE_AGENT} {plan} {{task}} {{stage}} {{artifact_dir}} "
        f"{{worktree}}"
    )
    made = Bed(tmp_path, migrated_db_url, make_repo, developer=agent, sandbox_rw=(str(plan_dir),))
    try:
        made.seed_baseline()
        key = made.file({"calc.py": CALC_BROKEN})  # the patch is not used by this developer
        made.run()
        held = f"{REPLACED}/conftest.py (untracked: configures the suite"
        made.assert_awaiting_approval(key, (held,))
        _shown_everywhere(made, key, held)
        task_ops.approve_task(made.engine, made.settings, key)
        made.run()
        task = made.task(key)
        assert (task.stage, task.state) == ("testing", "blocked"), made.last(key).reasons
    finally:
        made.engine.dispose()


def test_the_merge_retest_refuses_a_conftest_in_a_folder_that_is_not_utf8(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    """A file beside the candidate's tree in a folder whose name is not UTF-8, which would
    configure the re-test: INFRA, named; main does not move (before: the gate crashed)."""
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    bed.develop(task, {"feature.txt": "work\n"}, "work")
    folder = bed.worktree(task) / name(b"\xff")
    folder.mkdir()
    (folder / "conftest.py").write_text(FORCE_PASS)
    before = bed.main_sha()
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "INFRA", verdict.reasons
    text = _writable(" ".join(verdict.reasons))
    assert f"{REPLACED}/conftest.py (untracked" in text
    assert bed.main_sha() == before


def test_a_rebase_conflict_on_a_name_that_is_not_utf8_is_a_conflict(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    """Main gained the same file under a name that is not UTF-8 (another task landed it):
    the rebase conflicts, and git's own report names the file as its bytes. CONFLICT, the
    file named; main does not move (before: the gate crashed, INFRA internal error)."""
    odd = name(b"\xff.txt")
    bed = MergeBed(tmp_path, engine, make_repo)
    task = bed.add_task()
    bed.develop(task, {odd: "mine\n"}, "mine")
    commit_files(bed.repo_path, {odd: "theirs\n"}, "someone else")
    before = bed.main_sha()
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "CONFLICT", verdict.reasons
    assert f"conflicts in: {REPLACED}.txt" in _writable(" ".join(verdict.reasons))
    assert bed.main_sha() == before


def test_unquoted_names_in_the_statuses_of_the_merge_do_not_crash_it(
    tmp_path: Path, engine: sa.Engine, make_repo: Any
) -> None:
    """A user's `core.quotePath=false`: `git status` prints names as their bytes, in the
    task's workspace (a file the re-test would see beside the tree) and in the user's
    checkout of main (a local change to a file landed earlier). Each is read for what it
    says (before: the gate crashed on the first, INFRA internal error)."""
    odd = name(b"\xfb-landed.txt")
    bed = MergeBed(tmp_path, engine, make_repo)
    commit_files(bed.repo_path, {odd: "landed\n"}, "landed earlier")
    run_git(bed.repo_path, "config", "core.quotePath", "false")

    first = bed.add_task("beside")
    bed.develop(first, {"a.txt": "a\n"}, "a")
    ws = bed.worktree(first)
    run_git(ws, "config", "core.quotePath", "false")
    (ws / name(b"\xfe.txt")).write_text("left beside the tree\n")
    verdict = bed.gate(first)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert "internal error" not in " ".join(verdict.reasons)
    assert verdict.fields["retest"] == "ran"

    (bed.repo_path / odd).write_text("the user's local change\n")
    second = bed.add_task("local change")
    bed.develop(second, {"b.txt": "b\n"}, "b")
    verdict = bed.gate(second)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert "has local changes" in " ".join(verdict.reasons)
    assert (bed.repo_path / odd).read_text() == "the user's local change\n"


@pytest.fixture
def bed(tmp_path: Path, migrated_db_url: str, make_repo: Any) -> Any:
    made = Bed(tmp_path, migrated_db_url, make_repo)
    yield made
    made.engine.dispose()


# Rows of docs/security.md's attack table (rendered by test_security_doc.py).
HERE = "tests/integration/test_name_bytes.py"
DEFENDED = [
    {
        "attack": "rename a protected test to a name that is not UTF-8, or leave a "
        "`conftest.py` in a folder so named beside the branch",
        "before": "the testing job crashed on git's output (`UnicodeDecodeError`): no "
        "verdict, a crash the agent could cause at will",
        "now": "the name is read as its bytes: the deletion, or the stray `conftest.py`, is "
        "a protected change and the task waits for a human, the name shown with U+FFFD",
        "test": HERE,
    },
    {
        "attack": "commit conflict markers in a file whose name is not UTF-8",
        "before": "the development gate crashed on `git diff --check`'s report",
        "now": "FAIL, the file and lines named; a `diff --check` that fails is FAIL too",
        "test": HERE,
    },
    {
        "attack": "leave a `conftest.py` in a folder whose name is not UTF-8 before the "
        "merge re-test",
        "before": "the merge gate crashed (INFRA: internal error)",
        "now": "the re-test does not run: INFRA, the file named; main does not move",
        "test": HERE,
    },
    {
        "attack": "land a file whose name is not UTF-8, so that a later task changing it "
        "conflicts on it at the merge gate (or, under a user's `core.quotePath=false`, "
        "leave one beside the tree or in the checkout of main)",
        "before": "the merge gate crashed on git's report of the rebase (or on `git status`):"
        " INFRA, internal error",
        "now": "CONFLICT, the file named (the task goes back to development); the statuses "
        "are read for what they say",
        "test": HERE,
    },
]
