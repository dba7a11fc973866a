"""The merge gate on real git repos, a real database and real pytest suites.

Each test builds a repo (and, where it matters, a bare "remote") with ``MergeBed``, plays
the developer and the testing stage, runs ``check_branch_mergeable`` the way the engine
does, and checks main, the remote, the worktree, the merge report, the ``merge_results``
rows and what the domain makes of the verdict.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from merge_helpers import (
    CALC,
    HELPER_MARK,
    PROJECT,
    TESTS,
    MergeBed,
    commit_files,
    decide,
    fill_slot,
    read_at,
    run_git,
    status_porcelain,
    suite_passes_at,
)

import orchestrator
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage, State, TransitionKind
from orchestrator.domain.verdicts import VerdictStatus
from orchestrator.gates import merge_gate, registry, validated
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops import merge as gm
from orchestrator.gitops import worktrees
from orchestrator.store import alert_rows, merges

MakeRepo = Callable[..., Path]
SRC = Path(orchestrator.__file__).parent


@pytest.fixture
def bed(tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo) -> MergeBed:
    return MergeBed(tmp_path, engine, make_repo)


@pytest.fixture
def remote_bed(tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo) -> MergeBed:
    return MergeBed(tmp_path, engine, make_repo, remote=True)


def slot(slot_name: str, name: str, value: int) -> dict[str, str]:
    return fill_slot(CALC, TESTS, slot_name, name, value)


# --------------------------------------------------------------------------- clean merge


def test_clean_merge_moves_main_by_one_tested_commit(bed: MergeBed) -> None:
    task = bed.add_task("add a")
    old_main = bed.main_sha()
    bed.develop(task, slot("a", "a", 2), "first try")
    bed.develop(task, {"notes.txt": "why a\n"}, "notes")

    verdict = bed.gate(task)

    assert verdict.status is VerdictStatus.PASS, verdict.reasons
    assert verdict.tool_error is None
    assert verdict.fields["merge_status"] == "MERGED"
    assert verdict.fields["retest"] == "ran"
    merged = verdict.fields["merged_sha"]
    assert bed.main_sha() == merged
    # One commit on top of the old main, carrying the task's trailer: the intermediate
    # commits of the branch never ran the suite, so they never reach main.
    assert bed.main_log() == [merged, old_main]
    message = run_git(bed.repo_path, "log", "-1", "--format=%B", merged)
    assert f"Orch-Task: {task.key}" in message
    assert "2 commit(s)" in message
    assert "def a():" in read_at(bed.repo_path, "main", "calc.py")
    # The main repo had main checked out and clean: its files followed the CAS.
    assert "def a():" in (bed.repo_path / "calc.py").read_text()
    assert status_porcelain(bed.repo_path) == ""
    # The task branch is the merged commit; its worktree is clean.
    wt = bed.worktree(task)
    assert run_git(wt, "rev-parse", "HEAD").strip() == merged
    assert status_porcelain(wt) == ""

    keys = bed.report(task)
    assert keys["merge_status"] == ["MERGED"]
    assert keys["merged_sha"] == [merged]
    assert keys["retest"] == ["ran"]
    assert keys["rounds"] == ["1"]
    assert len(bed.retest_logs(task)) == 1
    (row,) = bed.results(task)
    assert (row.status, row.retest, row.merged_sha, row.classification) == (
        "MERGED",
        "ran",
        merged,
        None,
    )
    t = decide(verdict)
    assert (t.kind, t.to_stage) == (TransitionKind.DONE, Stage.DEPLOY_STAGING)


def test_the_gate_table_holds_the_merge_check_whatever_was_imported_before() -> None:
    # A fresh interpreter: in this one the engine (or this module) imported the gate long
    # ago. Importing the table alone is enough: no check is plugged in by an import.
    code = (
        "import sys\n"
        "from orchestrator.gates import registry\n"
        "check = registry.CHECKS.get('check_branch_mergeable')\n"
        "merge_gate = sys.modules['orchestrator.gates.merge_gate']\n"
        "found = check is merge_gate.check_branch_mergeable\n"
        "named = 'check_branch_mergeable' in registry.QG_CHECKS[registry.Stage.DEPLOY_STAGING]\n"
        "print(found, named)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["True", "True"]


def test_the_gate_table_has_every_check_the_pipeline_names_and_no_other() -> None:
    named = {name for names in registry.QG_CHECKS.values() for name in names}
    assert set(registry.CHECKS) == named
    steps = {name for spec in STAGE_TRANSITIONS.values() for name in spec.after_pass}
    assert set(registry.AFTER_PASS) == steps == {"record_validated_tree", "open_pull_request"}


# --------------------------------------------------------------------------- conflict


def test_conflict_is_a_fail_with_the_files_and_a_clean_worktree(bed: MergeBed) -> None:
    task = bed.add_task()
    wt = bed.worktree(task)
    head = bed.develop(task, slot("a", "a", 2), "a is 2")
    main_files = slot("a", "a", 3)
    commit_files(bed.repo_path, main_files, "someone else: a is 3")
    old_main = bed.main_sha()

    verdict = bed.gate(task)

    assert verdict.status is VerdictStatus.FAIL
    assert verdict.tool_error is None
    assert verdict.fields["merge_status"] == "CONFLICT"
    text = "\n".join(verdict.reasons)
    assert "calc.py" in text
    assert "test_calc.py" in text
    assert bed.main_sha() == old_main
    # The rebase was aborted: same commit, nothing staged, no rebase in progress.
    assert run_git(wt, "rev-parse", "HEAD").strip() == head
    assert status_porcelain(wt) == ""
    assert not any((Path(run_git(wt, "rev-parse", "--git-dir").strip())).glob("rebase-*"))
    assert bed.report(task)["merge_status"] == ["CONFLICT"]
    assert bed.results(task)[0].classification == "conflict"
    assert bed.retest_logs(task) == []
    t = decide(verdict)
    assert (t.kind, t.to_stage) == (TransitionKind.ROLLBACK, Stage.DEVELOPMENT)


# --------------------------------------------------------------------------- red


def test_red_retest_rolls_back_and_leaves_main(bed: MergeBed) -> None:
    task = bed.add_task()
    old_main = bed.main_sha()
    broken = {"test_calc.py": TESTS + "\n\ndef test_broken():\n    assert calc.base() == 2\n"}
    bed.develop(task, broken, "a broken test")

    verdict = bed.gate(task)

    assert verdict.status is VerdictStatus.FAIL
    assert verdict.tool_error is None
    assert verdict.fields["merge_status"] == "RED"
    assert verdict.fields["retest"] == "ran"
    assert any("1 failed" in r for r in verdict.reasons), verdict.reasons
    assert bed.main_sha() == old_main
    assert bed.report(task)["merge_status"] == ["RED"]
    assert bed.results(task)[0].classification == "red"
    t = decide(verdict)
    assert (t.kind, t.to_stage) == (TransitionKind.ROLLBACK, Stage.DEVELOPMENT)
    assert t.spends_developer_retry


# --------------------------------------------------------------------------- timeout


def test_hung_retest_is_a_timeout_that_stays_on_deploy_staging(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo
) -> None:
    # The suite never ends by itself: any limit is met by a timeout, however loaded the
    # machine.
    bed = MergeBed(tmp_path, engine, make_repo, merge_retest_timeout_s=0.3, kill_grace_s=0.2)
    task = bed.add_task()
    old_main = bed.main_sha()
    hang = {"test_hang.py": "import time\n\n\ndef test_hang():\n    time.sleep(120)\n"}
    bed.develop(task, hang, "a suite that hangs")

    verdict = bed.gate(task)

    assert verdict.status is VerdictStatus.FAIL
    assert verdict.tool_error == "timeout"
    assert verdict.fields["merge_status"] == "INFRA"
    assert bed.main_sha() == old_main
    keys = bed.report(task)
    assert (keys["merge_status"], keys["classification"]) == (["INFRA"], ["timeout"])
    # The domain defers on the same stage: no rollback, no developer retry...
    t = decide(verdict)
    assert (t.kind, t.to_stage, t.to_state) == (
        TransitionKind.DEFER,
        Stage.DEPLOY_STAGING,
        State.DEFERRED,
    )
    assert t.spends_gate_retry
    assert not t.spends_developer_retry
    # ... and blocks with an alert once the infra budget is spent.
    spent = decide(verdict, gate_retries=2, gate_budget=2)
    assert (spent.kind, spent.to_stage, spent.alert) == (
        TransitionKind.BLOCK,
        Stage.DEPLOY_STAGING,
        "infra-budget-exhausted",
    )
    assert bed.counters()["timeouts"] == 1


# --------------------------------------------------------------------------- lock-busy


def test_a_held_ref_lock_on_main_is_lock_busy_then_merges(bed: MergeBed) -> None:
    task = bed.add_task()
    old_main = bed.main_sha()
    bed.develop(task, slot("b", "b", 5), "b")
    lock = bed.repo_path / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("held by someone else\n")

    busy = bed.gate(task)

    assert busy.tool_error == "lock-busy", busy.reasons
    assert busy.fields["merge_status"] == "INFRA"
    assert bed.main_sha() == old_main
    assert decide(busy).kind is TransitionKind.DEFER

    lock.unlink()
    merged = bed.gate(task)
    assert merged.fields["merge_status"] == "MERGED", merged.reasons
    # The first run's re-test passed and recorded the tree: the retry does not re-run it.
    assert merged.fields["retest"] == "skipped"
    assert len(bed.retest_logs(task)) == 1
    counters = bed.counters()
    assert (counters["lock_busy"], counters["merged"], counters["retests_skipped"]) == (1, 1, 1)


# --------------------------------------------------------------------------- main moved


def test_main_moved_under_us_goes_round_again(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    real = merge_gate.retest_branch
    moved: list[str] = []

    def retest_then_someone_merges(*args: Any, **kwargs: Any) -> merge_gate.RetestResult:
        result = real(*args, **kwargs)
        if not moved:  # once: between our re-test and our CAS, main moves
            files = slot("c", "c", 7)
            moved.append(commit_files(bed.repo_path, files, "someone else: c"))
        return result

    monkeypatch.setattr(merge_gate, "retest_branch", retest_then_someone_merges)

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["rounds"] == "2"
    merged = verdict.fields["merged_sha"]
    assert bed.main_sha() == merged
    assert run_git(bed.repo_path, "rev-parse", f"{merged}^").strip() == moved[0]
    calc = read_at(bed.repo_path, "main", "calc.py")
    assert "def a():" in calc
    assert "def c():" in calc
    assert any("main moved under us" in r for r in verdict.reasons)
    # The second round's tree is new: it was re-tested too.
    assert len(bed.retest_logs(task)) == 2


def test_main_that_keeps_moving_gives_up_as_lock_busy(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = bed.add_task()
    old_head = bed.develop(task, slot("a", "a", 2), "a")
    real = merge_gate.retest_branch
    count = iter(range(100))

    def always_moving(*args: Any, **kwargs: Any) -> merge_gate.RetestResult:
        result = real(*args, **kwargs)
        n = next(count)
        commit_files(bed.repo_path, {f"other{n}.txt": f"{n}\n"}, f"someone else {n}")
        return result

    monkeypatch.setattr(merge_gate, "retest_branch", always_moving)
    verdict = bed.gate(task)
    assert verdict.tool_error == "lock-busy"
    assert verdict.fields["rounds"] == str(merge_gate.MAX_ROUNDS)
    assert (
        run_git(bed.repo_path, "merge-base", "--is-ancestor", old_head, "main", check=False) == ""
    )
    assert f"Orch-Task: {task.key}" not in run_git(bed.repo_path, "log", "--format=%B", "main")


# --------------------------------------------------------------------------- skips


def test_noop_rebase_of_a_validated_tree_skips_the_retest(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    recorded, why = bed.run_testing_stage(task)
    assert recorded, why

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["retest"] == "skipped"
    assert bed.retest_logs(task) == []
    reason = bed.report(task)["retest_reason"][0]
    assert "no-op" in reason
    assert "test-runner" in reason
    assert bed.counters()["retests_skipped"] == 1


def test_skip_switched_off_always_retests(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo
) -> None:
    bed = MergeBed(tmp_path, engine, make_repo, merge_retest_skip_when_current_enabled=False)
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.run_testing_stage(task)[0]

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED"
    assert verdict.fields["retest"] == "ran"
    assert "switched off" in bed.report(task)["retest_reason"][0]


def test_no_database_means_doubt_and_a_retest(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.run_testing_stage(task)[0]
    verdict = bed.gate(task, engine=None)
    assert verdict.fields["retest"] == "ran"
    assert verdict.fields["merge_status"] == "MERGED"


def test_equivalent_rebase_skips_when_main_made_the_same_change(bed: MergeBed) -> None:
    task = bed.add_task()
    both = {**slot("a", "a", 2), "extra.py": "X = 1\n"}
    bed.develop(task, both, "a and extra")
    assert bed.run_testing_stage(task)[0]
    # Someone puts part of the same change on main: the rebase is not a no-op (new base,
    # new commit), but the tree it produces is exactly the one the testing stage passed.
    commit_files(bed.repo_path, {"extra.py": "X = 1\n"}, "someone else: extra")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["retest"] == "skipped"
    assert bed.retest_logs(task) == []
    assert "equivalent rebase" in bed.report(task)["retest_reason"][0]


def test_equivalent_rebase_skips_when_main_moved_and_came_back(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.run_testing_stage(task)[0]
    commit_files(bed.repo_path, {"tmp.txt": "oops\n"}, "someone else: oops")
    commit_files(bed.repo_path, {"tmp.txt": None}, "someone else: revert oops")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert verdict.fields["retest"] == "skipped"


def test_a_changed_tree_is_retested(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    assert bed.run_testing_stage(task)[0]
    commit_files(bed.repo_path, slot("b", "b", 3), "someone else: b")
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED"
    assert verdict.fields["retest"] == "ran"
    assert "has not passed" in bed.report(task)["retest_reason"][0]


def test_only_a_pass_of_the_deterministic_test_runner_records_the_tree(bed: MergeBed) -> None:
    # Testing declares the record as its after-pass step, and the step trusts the
    # test-runner alone: an LLM tester, the runner's LLM fallback, or the same agent at
    # another stage record nothing (the merge gate would skip its re-test on their word).
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    testing = bed.context(task, stage=Stage.TESTING)

    def rows() -> int:
        with bed.engine.connect() as conn:
            return len(conn.execute(merges.validated_trees.select()).fetchall())

    untrusted = [
        (testing, "claude", "claude"),
        (testing, "test-runner", "claude"),
        (bed.context(task, stage=Stage.DEVELOPMENT), "test-runner", None),
    ]
    for ctx, agent, llm in untrusted:
        notes = registry.run_after_pass(ctx, agent=agent, llm_backend=llm, passed_tests=None)
        assert (notes, rows()) == ([], 0), (ctx.stage, agent, llm)
    notes = registry.run_after_pass(
        testing, agent="test-runner", llm_backend=None, passed_tests=["t::a"]
    )
    assert len(notes) == 1
    assert notes[0].startswith("record_validated_tree: tree "), notes
    assert "recorded as validated (1 passed test IDs)" in notes[0]
    assert rows() == 1


def test_validated_tree_is_not_recorded_from_a_dirty_worktree(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    wt = bed.worktree(task)
    (wt / "scratch.py").write_text("import os\n")
    recorded, why = validated.record_validated_tree(bed.engine, bed.repo, wt, bed.repo.test_cmd)
    assert not recorded
    assert "not clean" in why
    (wt / "scratch.py").unlink()
    recorded, why = validated.record_validated_tree(bed.engine, bed.repo, wt, bed.repo.test_cmd)
    assert recorded, why
    tree = run_git(wt, "rev-parse", "HEAD^{tree}").strip()
    with bed.engine.connect() as conn:
        row = merges.find_validated_tree(
            conn, repo_id=bed.repo.id, tree=tree, cmd_key=merges.cmd_key(bed.repo.test_cmd or [])
        )
        other = merges.find_validated_tree(
            conn, repo_id=bed.repo.id, tree=tree, cmd_key=merges.cmd_key(["make", "test"])
        )
    assert row is not None
    assert row.source == "test-runner"
    assert other is None  # another test command proves nothing about this one


# --------------------------------------------------------------------------- markers


def test_a_merge_that_drops_a_regression_marker_is_red(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo
) -> None:
    markers = [
        {"task": "DEMO-0", "symbol": "def keep_me", "path": "calc.py"},
        {"task": "DEMO-00", "symbol": "GONE_LONG_AGO", "path": "old.py"},
    ]
    bed = MergeBed(tmp_path, engine, make_repo, options={"regression_markers": markers})
    task = bed.add_task()
    old_main = bed.main_sha()
    bed.develop(task, {"calc.py": CALC.replace("def keep_me", "def renamed")}, "rename")

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "RED"
    assert verdict.tool_error is None
    text = "\n".join(verdict.reasons)
    assert "regression marker DEMO-0: 'def keep_me' in calc.py" in text
    assert "GONE_LONG_AGO" in text  # noted: already missing on main, not this merge's doing
    assert bed.main_sha() == old_main
    assert bed.retest_logs(task) == []  # no suite run for a merge refused on its face
    assert decide(verdict).kind is TransitionKind.ROLLBACK

    other = bed.add_task()
    bed.develop(other, slot("a", "a", 2), "a")
    assert bed.gate(other).fields["merge_status"] == "MERGED"


def test_malformed_markers_are_infra_not_the_codes_fault(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo
) -> None:
    bed = MergeBed(tmp_path, engine, make_repo, options={"regression_markers": [{"task": "X"}]})
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    verdict = bed.gate(task)
    assert verdict.tool_error == "crashed"
    assert any("regression_markers[0]" in r for r in verdict.reasons)


# --------------------------------------------------------------------------- crash


def test_crash_between_merge_and_bookkeeping_never_merges_twice(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    real = gm.advance_main

    def moved_then_crash(*args: Any, **kwargs: Any) -> gm.CasResult:
        real(*args, **kwargs)
        raise RuntimeError("power cut right after the CAS")

    monkeypatch.setattr(gm, "advance_main", moved_then_crash)
    crashed = bed.gate(task)
    assert crashed.tool_error == "crashed"
    assert crashed.fields["merge_status"] == "INFRA"
    main_after_crash = bed.main_sha()
    log_after_crash = bed.main_log()

    monkeypatch.setattr(gm, "advance_main", real)
    # Someone else merges meanwhile: main is now past our commit.
    commit_files(bed.repo_path, slot("b", "b", 4), "someone else: b")
    again = bed.gate(task)

    assert again.fields["merge_status"] == "MERGED", again.reasons
    assert again.fields["merged_sha"] == main_after_crash
    assert again.fields["retest"] == "none"
    assert any("not merged again" in r for r in again.reasons)
    assert bed.main_log()[1:] == log_after_crash  # only the other commit was added
    trailers = run_git(bed.repo_path, "log", "--format=%B", "main").count(f"Orch-Task: {task.key}")
    assert trailers == 1
    assert [r.status for r in bed.results(task)] == ["INFRA", "MERGED"]


def test_an_internal_error_is_a_crashed_tool_error_with_a_report(
    bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")

    def boom(*_a: Any, **_k: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(gm, "rebase_onto", boom)
    verdict = bed.gate(task)
    assert verdict.tool_error == "crashed"
    assert any("disk on fire" in r for r in verdict.reasons)
    assert bed.report(task)["merge_status"] == ["INFRA"]


def test_a_stale_rebase_left_by_a_crash_is_cleared(bed: MergeBed) -> None:
    task = bed.add_task()
    wt = bed.worktree(task)
    bed.develop(task, slot("a", "a", 2), "a")
    commit_files(bed.repo_path, slot("a", "a", 3), "someone else: a is 3")
    assert bed.worktree(task) == wt  # each use records the user's main in the workspace
    # A rebase stopped on a conflict and never aborted (the worker died mid-gate).
    run_git(wt, "rebase", "main", check=False)
    assert "UU" in status_porcelain(wt) or "AA" in status_porcelain(wt)
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "CONFLICT", verdict.reasons
    assert status_porcelain(wt) == ""


# --------------------------------------------------------------------------- the checkout


def test_a_dirty_main_checkout_is_left_alone(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    (bed.repo_path / "README.local").write_text("untracked, the user's\n")
    readme_edit = PROJECT["calc.py"] + "\n# the user's edit in progress\n"
    (bed.repo_path / "calc.py").write_text(readme_edit)

    verdict = bed.gate(task)

    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    assert bed.main_sha() == verdict.fields["merged_sha"]
    assert (bed.repo_path / "calc.py").read_text() == readme_edit  # untouched
    assert any("local changes" in r and "left alone" in r for r in verdict.reasons)


# --------------------------------------------------------------------------- the remote


def test_merge_with_a_remote_pushes_main_without_force(remote_bed: MergeBed) -> None:
    bed = remote_bed
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    verdict = bed.gate(task)
    assert verdict.fields["merge_status"] == "MERGED", verdict.reasons
    merged = verdict.fields["merged_sha"]
    assert bed.remote_sha() == merged
    assert bed.main_sha() == merged
    assert "def a():" in (bed.repo_path / "calc.py").read_text()


def test_a_worktree_starts_from_the_remotes_main(remote_bed: MergeBed) -> None:
    bed = remote_bed
    assert bed.remote_path is not None
    other = bed.tmp / "other"
    run_git(bed.tmp, "clone", "-q", str(bed.remote_path), str(other))
    pushed = commit_files(other, slot("d", "d", 9), "pushed from elsewhere")
    run_git(other, "push", "-q", "origin", "main")
    assert bed.main_sha() != pushed

    task = bed.add_task()
    wt = bed.worktree(task)

    assert run_git(wt, "rev-parse", "HEAD").strip() == pushed
    assert bed.main_sha() == pushed  # local main fast-forwarded, its checkout too
    assert "def d():" in (bed.repo_path / "calc.py").read_text()


def test_a_push_rejected_because_the_remote_moved_is_lock_busy(
    remote_bed: MergeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    bed = remote_bed
    assert bed.remote_path is not None
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    local_before = bed.main_sha()
    other = bed.tmp / "other"
    run_git(bed.tmp, "clone", "-q", str(bed.remote_path), str(other))
    real = merge_gate.retest_branch
    pushed: list[str] = []

    def retest_while_another_host_merges(*args: Any, **kwargs: Any) -> merge_gate.RetestResult:
        result = real(*args, **kwargs)
        if not pushed:
            pushed.append(commit_files(other, slot("c", "c", 8), "another host: c"))
            run_git(other, "push", "-q", "origin", "main")
        return result

    monkeypatch.setattr(merge_gate, "retest_branch", retest_while_another_host_merges)

    rejected = bed.gate(task)

    assert rejected.tool_error == "lock-busy", rejected.reasons
    assert any("push rejected" in r for r in rejected.reasons)
    assert bed.remote_sha() == pushed[0]  # the other host's merge stands
    assert bed.main_sha() == local_before  # and local main is not ahead of the remote
    assert decide(rejected).kind is TransitionKind.DEFER

    again = bed.gate(task)
    assert again.fields["merge_status"] == "MERGED", again.reasons
    assert bed.remote_sha() == again.fields["merged_sha"] == bed.main_sha()
    calc = read_at(bed.repo_path, "main", "calc.py")
    assert "def a():" in calc
    assert "def c():" in calc


def test_a_push_refused_by_a_remote_hook_is_lock_busy(remote_bed: MergeBed) -> None:
    bed = remote_bed
    assert bed.remote_path is not None
    hook = bed.remote_path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    before = (bed.main_sha(), bed.remote_sha())

    verdict = bed.gate(task)

    assert verdict.tool_error == "lock-busy", verdict.reasons
    assert (bed.main_sha(), bed.remote_sha()) == before


# --------------------------------------------------------------------------- never force

_FORBIDDEN = {"--force", "-f", "--force-with-lease", "--force-if-includes", "--mirror", "--hard"}


def _verb(argv: Sequence[str]) -> str:
    """The git subcommand of ``argv`` (past ``git`` and any ``-c key=value``)."""
    args = list(argv[1:])
    while args and args[0] == "-c":
        args = args[2:]
    return args[0] if args else ""


def _forcing(argv: Sequence[str]) -> str | None:
    args = list(argv)
    for arg in args:
        if arg in _FORBIDDEN or arg.startswith("--force"):
            return arg
    if "push" in args and any(a.startswith("+") or a.startswith(":") for a in args):
        return "a +refspec or a deleting refspec in a push"
    if "reset" in args and "--hard" in args:
        return "reset --hard"
    return None


@pytest.mark.parametrize("with_remote", [True, False], ids=["remote", "local"])
def test_no_git_call_of_the_gate_can_force(
    tmp_path: Path,
    engine: sa.Engine,
    make_repo: MakeRepo,
    monkeypatch: pytest.MonkeyPatch,
    with_remote: bool,
) -> None:
    bed = MergeBed(tmp_path, engine, make_repo, remote=with_remote)
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    other = tmp_path / "other"
    if with_remote:
        run_git(tmp_path, "clone", "-q", str(bed.remote_path), str(other))
    real_retest = merge_gate.retest_branch
    moved: list[bool] = []

    def main_moves_once(*args: Any, **kwargs: Any) -> merge_gate.RetestResult:
        result = real_retest(*args, **kwargs)
        if not moved:
            moved.append(True)
            if with_remote:  # another host merges: our push will be rejected
                commit_files(other, slot("c", "c", 8), "another host: c")
                run_git(other, "push", "-q", "origin", "main")
            else:  # someone commits on main: our CAS will find it moved
                commit_files(bed.repo_path, slot("c", "c", 8), "someone: c")
        return result

    monkeypatch.setattr(merge_gate, "retest_branch", main_moves_once)

    through_helper: list[tuple[str, ...]] = []
    spawned: list[tuple[str, ...]] = []
    real_git = gitcmd.git

    def recording_git(args: Sequence[str], cwd: Path, **kwargs: Any) -> gitcmd.GitResult:
        through_helper.append(("git", *args))
        return real_git(args, cwd, **kwargs)

    class SpyingPopen(subprocess.Popen):  # type: ignore[type-arg]
        """Every process started (subprocess.run starts its own through Popen too)."""

        def __init__(self, argv: Any, *args: Any, **kwargs: Any) -> None:
            env = kwargs.get("env") or {}
            git_call = isinstance(argv, list | tuple) and argv and argv[0] == "git"
            if git_call and HELPER_MARK not in env:
                # Every call carries the safe config (no hooks, no fsmonitor) first.
                safe = len(gitcmd.SAFE_CONFIG)
                assert tuple(argv[1 : 1 + safe]) == gitcmd.SAFE_CONFIG, argv
                spawned.append(("git", *argv[1 + safe :]))
            super().__init__(argv, *args, **kwargs)

    monkeypatch.setattr(gitcmd, "git", recording_git)
    monkeypatch.setattr(subprocess, "Popen", SpyingPopen)

    first = bed.gate(task)
    second = bed.gate(task) if with_remote else first

    assert second.fields["merge_status"] == "MERGED", (first.reasons, second.reasons)
    if with_remote:
        assert first.tool_error == "lock-busy"
    else:
        assert first.fields["rounds"] == "2"
    verbs = {_verb(argv) for argv in through_helper}
    assert {"rebase", "commit-tree", "update-ref", "read-tree"} <= verbs
    if with_remote:
        assert {"fetch", "push"} <= verbs
    assert [(a, why) for a in through_helper if (why := _forcing(a))] == []
    # Nothing bypassed the helper: every git process the gate started went through it.
    assert spawned, "the spy saw no git process"
    assert [a for a in spawned if a not in set(through_helper)] == []


def _argv_shape(node: ast.expr) -> list[str]:
    """A literal argv list as text, each non-literal part shown as ``{}``."""
    if not isinstance(node, ast.List | ast.Tuple):
        return ["{}"]
    shape: list[str] = []
    for elt in node.elts:
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
            shape.append(elt.value)
        elif isinstance(elt, ast.JoinedStr):
            shape.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in elt.values)
            )
        else:
            shape.append("{}")
    return shape


def _git_call_flags(path: Path) -> tuple[int, list[str]]:
    """(git calls seen, forcing arguments found) in a module's git calls' literal argv."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = 0
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in ("git", "run_git"):
            continue
        calls += 1
        literals = _argv_shape(node.args[0])
        why = _forcing(literals)
        if why is not None:
            found.append(f"{path.name}:{node.lineno}: {why}")
    return calls, found


def _stray_force_strings(path: Path) -> list[str]:
    """Forcing flags written anywhere but in merge.py's list of refused arguments.

    Catches an argv built in a variable, which the per-call check cannot read.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("_FORCE_ARGS", "_FORCE_PREFIXES")
            for t in node.targets
        ):
            allowed |= {id(n) for n in ast.walk(node)}
    return [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in allowed
        and _forcing([node.value]) is not None
    ]


def test_no_force_flag_in_the_source_of_gitops_and_the_merge_gate() -> None:
    files = [*sorted((SRC / "gitops").glob("*.py")), SRC / "gates" / "merge_gate.py"]
    total = 0
    problems: list[str] = []
    for path in files:
        calls, found = _git_call_flags(path)
        total += calls
        problems += found + _stray_force_strings(path)
    assert problems == []
    assert total >= 30  # the check really looked at the git calls


def test_the_static_check_catches_a_force_push(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(cwd):\n"
        "    gitcmd.git(['push', '--force', 'origin', 'main'], cwd)\n"
        "    run_git(['push', 'origin', '+main:main'], cwd)\n"
        "    git(['reset', '--hard', 'x'], cwd)\n"
    )
    calls, found = _git_call_flags(bad)
    assert calls == 3
    assert len(found) == 3
    assert len(_stray_force_strings(bad)) == 2  # "--force" and "--hard" as strings


def test_the_runtime_guard_refuses_force_arguments(tmp_path: Path) -> None:
    for args in (
        ["push", "--force", "origin", "main"],
        ["push", "origin", "+abc:refs/heads/main"],
        ["push", "--force-with-lease", "origin", "main"],
        ["reset", "--hard", "HEAD~1"],
    ):
        assert gm.force_problem(args) is not None, args
        res = gm.run_git(args, tmp_path)
        assert not res
        assert "never forces" in res.stderr
    assert gm.force_problem(["commit-tree", "abc", "-p", "def", "-F", "-"]) is None


# --------------------------------------------------------------------------- worktrees


def test_prune_orphan_worktrees_keeps_live_tasks_and_foreign_files(bed: MergeBed) -> None:
    tasks = [bed.add_task(f"t{i}") for i in range(3)]
    paths = [bed.worktree(t) for t in tasks]
    (paths[0] / "uncommitted.txt").write_text("work in progress\n")  # dirty: still removed
    folder = bed.settings.worktrees_dir / "demo"
    (folder / "notes").mkdir()
    (folder / "README").write_text("not a worktree\n")

    removed = worktrees.prune_orphan_worktrees(
        bed.repo_path, bed.settings.worktrees_dir, "demo", {tasks[1].key}
    )

    assert removed == [tasks[0].key, tasks[2].key]
    assert not paths[0].exists()
    assert not paths[2].exists()
    assert paths[1].is_dir()
    assert (folder / "notes").is_dir()
    assert (folder / "README").is_file()
    # Workspaces are repositories of their own: the user's clone lists none of them.
    assert run_git(bed.repo_path, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert (paths[1] / ".git").is_dir()
    # The branches stay for the record; a re-created worktree picks its branch up again.
    assert run_git(bed.repo_path, "branch", "--list", f"orch/{tasks[0].key}").strip()
    assert bed.worktree(tasks[0]).is_dir()
    assert (
        worktrees.prune_orphan_worktrees(
            bed.repo_path, bed.settings.worktrees_dir, "demo", {t.key for t in tasks}
        )
        == []
    )


def test_remove_worktree_removes_a_dirty_worktree(bed: MergeBed) -> None:
    task = bed.add_task()
    wt = bed.worktree(task)
    (wt / "calc.py").write_text("changed\n")
    worktrees.remove_worktree(bed.repo_path, bed.settings.worktrees_dir, "demo", task.key)
    assert not wt.exists()
    assert str(wt) not in run_git(bed.repo_path, "worktree", "list", "--porcelain")


def test_an_unreachable_remote_still_gives_a_worktree_from_local_main(
    tmp_path: Path, engine: sa.Engine, make_repo: MakeRepo
) -> None:
    bed = MergeBed(tmp_path, engine, make_repo)
    made = worktrees.ensure_worktree(
        bed.repo_path,
        "main",
        bed.settings.worktrees_dir,
        "demo",
        "DEMO-9",
        remote=str(tmp_path / "no-such-remote.git"),
    )
    assert made.path is not None, made.error
    assert run_git(made.path, "rev-parse", "HEAD").strip() == bed.main_sha()
    assert any("fetch of" in n and "failed" in n for n in made.notes)


# --------------------------------------------------------------------------- counters


def test_merge_counters_come_from_the_database(bed: MergeBed) -> None:
    task = bed.add_task()
    with bed.engine.begin() as conn:
        for status, cls, retest in [
            ("MERGED", None, "ran"),
            ("MERGED", None, "skipped"),
            ("MERGED", None, "none"),
            ("CONFLICT", "conflict", "none"),
            ("RED", "red", "ran"),
            ("INFRA", "timeout", "ran"),
            ("INFRA", "lock-busy", "skipped"),
            ("INFRA", "lock-busy", "ran"),
            ("INFRA", "other", "none"),
        ]:
            merges.insert_merge_result(
                conn,
                task_id=task.id,
                status=status,
                classification=cls,
                retest=retest,
                rounds=1,
                reasons=["r"],
                now=1.0,
            )
        for kind, reasons in [
            ("infra-budget-exhausted", ["check_branch_mergeable: merge gate: INFRA (timeout)"]),
            ("infra-budget-exhausted", ["deploy-staging: tool error timeout", "staging-runner"]),
            ("developer-budget-exhausted", ["check_branch_mergeable: merge gate: RED"]),
        ]:
            alert_rows.insert_alert(
                conn,
                kind=kind,
                severity="critical",
                message="m",
                reasons=reasons,
                now=2.0,
                task_id=task.id,
            )
    assert bed.counters() == {
        "merged": 3,
        "conflicts": 1,
        "red": 1,
        "timeouts": 1,
        "lock_busy": 2,
        "infra": 4,
        "retests_skipped": 2,
        "retests_run": 4,
        # Re-queues, from DEFER transitions: none here (tests/integration/test_counters.py).
        "infra_retries": 0,
        "alerts": 1,
    }


def test_validated_tree_records_are_idempotent(bed: MergeBed) -> None:
    with bed.engine.begin() as conn:
        first = merges.record_validated_tree(
            conn, repo_id=bed.repo.id, tree="t" * 40, cmd_key="k", source="test-runner", now=1
        )
        again = merges.record_validated_tree(
            conn, repo_id=bed.repo.id, tree="t" * 40, cmd_key="k", source="merge-retest", now=2
        )
        row = merges.find_validated_tree(conn, repo_id=bed.repo.id, tree="t" * 40, cmd_key="k")
    assert (first, again) == (True, False)
    assert row is not None
    assert (row.source, row.at) == ("test-runner", 1.0)
    with pytest.raises(sa.exc.IntegrityError), bed.engine.begin() as conn:
        merges.record_validated_tree(
            conn, repo_id=bed.repo.id, tree="u" * 40, cmd_key="k", source="guess", now=1
        )


# --------------------------------------------------------------------------- end to end


def test_tasks_on_the_same_files_merge_one_after_another_and_main_stays_green(
    remote_bed: MergeBed, tmp_path: Path
) -> None:
    bed = remote_bed
    initial = bed.main_sha()
    t1, t2, t3, t4, t5 = (bed.add_task(f"task {i}") for i in range(1, 6))
    for t in (t1, t2, t3, t4, t5):
        bed.worktree(t)  # every branch starts from the same main
    bed.develop(t1, slot("a", "a", 2), "a")
    bed.develop(t2, slot("b", "b", 3), "b")
    bed.develop(t3, slot("a", "e", 6), "e, in the slot t1 also takes")
    bed.develop(t4, slot("d", "d", 4), "d")
    bed.develop(
        t5,
        {
            "extra.py": "X = 1\n",
            "test_extra.py": "import extra\n\n\ndef test_x():\n    assert extra.X == 1\n",
        },
        "extra",
    )
    # t4's first try is red: the test expects 5.
    wt4 = bed.worktree(t4)
    (wt4 / "test_calc.py").write_text(
        (wt4 / "test_calc.py").read_text().replace("calc.d() == 4", "calc.d() == 5")
    )
    commit_files(wt4, {}, "t4: a wrong expectation")

    statuses: dict[str, list[str]] = {}

    def merge(task: Any) -> str:
        verdict = bed.gate(task)
        statuses.setdefault(task.key, []).append(verdict.fields["merge_status"])
        return verdict.fields["merge_status"]

    assert bed.run_testing_stage(t1)[0]
    assert merge(t1) == "MERGED"
    assert bed.run_testing_stage(t2)[0]
    assert merge(t2) == "MERGED"
    assert merge(t3) == "CONFLICT"
    # The developer resolves: rebase onto main, keep main's side, put e in a free slot.
    wt3 = bed.worktree(t3)
    run_git(wt3, "rebase", "main", check=False)
    run_git(wt3, "checkout", "--ours", "--", "calc.py", "test_calc.py")
    resolved = fill_slot(
        (wt3 / "calc.py").read_text(), (wt3 / "test_calc.py").read_text(), "c", "e", 6
    )
    for rel, text in resolved.items():
        (wt3 / rel).write_text(text)
    run_git(wt3, "add", "-A")
    run_git(wt3, "-c", "core.editor=true", "rebase", "--continue")
    assert bed.run_testing_stage(t3)[0]
    assert merge(t3) == "MERGED"
    assert merge(t4) == "RED"
    (wt4 / "test_calc.py").write_text(
        (wt4 / "test_calc.py").read_text().replace("calc.d() == 5", "calc.d() == 4")
    )
    commit_files(wt4, {}, "t4: the right expectation")
    assert merge(t4) == "MERGED"
    assert merge(t5) == "MERGED"

    assert statuses == {
        t1.key: ["MERGED"],
        t2.key: ["MERGED"],
        t3.key: ["CONFLICT", "MERGED"],
        t4.key: ["RED", "MERGED"],
        t5.key: ["MERGED"],
    }
    # No task lost: each is exactly one commit on main, in the order they merged.
    main = bed.main_log()
    assert bed.remote_sha() == main[0]
    assert main[-1] == initial
    assert len(main) == 6
    keys = [gm.task_of_commit(bed.repo_path, sha) for sha in reversed(main[:-1])]
    assert keys == [t1.key, t2.key, t3.key, t4.key, t5.key]
    calc = read_at(bed.repo_path, "main", "calc.py")
    for name in ("a", "b", "d", "e"):
        assert f"def {name}():" in calc
    assert read_at(bed.repo_path, "main", "extra.py") == "X = 1\n"
    # Main stayed green: every commit on it passes the suite.
    for i, sha in enumerate(main):
        ok, output = suite_passes_at(bed.repo_path, sha, tmp_path / "checks" / f"{i}")
        assert ok, f"{sha} on main does not pass its tests:\n{output}"
    counters = bed.counters()
    assert (counters["merged"], counters["conflicts"], counters["red"]) == (5, 1, 1)
    # Skipped: t1 (no-op rebase of the tested tree) and t3 (resolved on main, then tested).
    assert (counters["retests_skipped"], counters["retests_run"]) == (2, 4)


def test_uncommitted_edits_to_tracked_files_are_not_merged_or_tested(bed: MergeBed) -> None:
    task = bed.add_task()
    bed.develop(task, slot("a", "a", 2), "a")
    wt = bed.worktree(task)
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "\nBROKEN = (\n")
    old_main = bed.main_sha()

    verdict = bed.gate(task)

    assert verdict.tool_error == "crashed"
    assert any("uncommitted changes to tracked files" in r for r in verdict.reasons)
    assert bed.main_sha() == old_main
    assert "BROKEN" in (wt / "calc.py").read_text()  # not ours to discard
