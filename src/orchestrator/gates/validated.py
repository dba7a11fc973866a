"""Validated trees: the record that a tree passed a test command, written and read.

The merge gate re-tests a candidate unless its exact tree already passed the same test
command (``skip_reason``). Two runs write the record: the merge gate's own re-test
(``remember``), and the testing stage's deterministic test-runner, whose PASS the pipeline
table declares an after-pass step of testing (``record_validated_tree``, run through
``after_testing``; an LLM tester's word never counts). Only a clean worktree counts: an
untracked file could have changed the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from orchestrator.gates.context import GateContext
from orchestrator.gitops import merge as gm
from orchestrator.runners.suite import DEFAULT_COMMAND
from orchestrator.store import merges
from orchestrator.store.rows import RepoRow


def skip_reason(ctx: GateContext, tree: str, cmd_key: str, rebase_status: str) -> tuple[bool, str]:
    """(skip?, why): skip only when this tree provably passed this test command."""
    if not ctx.settings.merge_retest_skip_when_current_enabled:
        return False, "skip switched off (ORCH_MERGE_RETEST_SKIP_WHEN_CURRENT_ENABLED=false)"
    if ctx.engine is None:
        return False, "no database to look up validated trees: re-test"
    try:
        with ctx.engine.connect() as conn:
            row = merges.find_validated_tree(conn, repo_id=ctx.repo.id, tree=tree, cmd_key=cmd_key)
    except sa.exc.SQLAlchemyError as exc:
        return False, f"validated trees unreadable ({type(exc).__name__}): re-test"
    if row is None:
        return False, f"tree {tree[:12]} has not passed this test command yet: re-test"
    how = "the rebase was a no-op" if rebase_status == "noop" else "an equivalent rebase"
    return True, f"tree {tree[:12]} already passed this test command ({row.source}); {how}"


def remember(
    engine: sa.Engine,
    repo_id: int,
    tree: str,
    cmd_key: str,
    source: str,
    notes: list[str],
    *,
    passed_tests: Sequence[str] | None = None,
) -> None:
    """Record that ``tree`` passed ``cmd_key``'s suite (``source``: who ran it); a database
    error becomes a note in ``notes``."""
    try:
        with engine.begin() as conn:
            merges.record_validated_tree(
                conn,
                repo_id=repo_id,
                tree=tree,
                cmd_key=cmd_key,
                source=source,
                now=time.time(),
                passed_tests=passed_tests,
            )
    except sa.exc.SQLAlchemyError as exc:
        notes.append(f"could not record the validated tree: {type(exc).__name__}: {exc}")


def record_validated_tree(
    engine: sa.Engine,
    repo: RepoRow,
    worktree: Path,
    test_cmd: Sequence[str] | None,
    *,
    passed_tests: Sequence[str] | None = None,
) -> tuple[bool, str]:
    """After the test-runner passed: remember HEAD's tree as validated for ``test_cmd``.

    Only a clean worktree counts (an untracked file could have changed the outcome), and
    ``test_cmd`` must be the argv the test-runner ran before its evidence flags (None: its
    default). ``passed_tests``: the IDs of the tests that run passed (its result's).
    Never raises: (recorded?, why).
    """
    try:
        clean, detail = gm.is_clean(worktree)
        if not clean:
            return False, f"not recorded: worktree not clean ({detail})"
        head = gm.rev_parse(worktree, "HEAD")
        tree = gm.tree_of(worktree, head) if head else None
        if tree is None:
            return False, f"not recorded: cannot read HEAD's tree in {worktree}"
        argv = list(test_cmd) if test_cmd else list(DEFAULT_COMMAND)
        key = merges.cmd_key(argv)
        passed = sorted(passed_tests) if passed_tests is not None else None
        with engine.begin() as conn:
            merges.record_validated_tree(
                conn,
                repo_id=repo.id,
                tree=tree,
                cmd_key=key,
                source="test-runner",
                now=time.time(),
                passed_tests=passed,
            )
    except Exception as exc:
        return False, f"not recorded: {type(exc).__name__}: {exc}"
    ids = "no test IDs" if passed is None else f"{len(passed)} passed test IDs"
    return True, f"tree {tree[:12]} recorded as validated ({ids})"


def after_testing(ctx: GateContext, passed_tests: Sequence[str] | None) -> str:
    """The testing stage's after-pass step: record the tree its test-runner passed."""
    if ctx.engine is None or ctx.worktree is None:
        return "not recorded: no database or no worktree"
    _recorded, note = record_validated_tree(
        ctx.engine, ctx.repo, ctx.worktree, ctx.repo.test_cmd, passed_tests=passed_tests
    )
    return note
