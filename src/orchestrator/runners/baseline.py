"""Tests that passed on main still run and pass: the baseline of a task branch.

Every tree that passes the suite under the orchestrator is recorded with the IDs of the
tests that passed on it (``validated_trees.passed_tests``; an ID is JUnit's
``classname::name``). On a task branch, every test that passed on the tree of the main it
starts from must be collected, run and pass again: a test that is missing (deleted,
deselected, not collected), skipped, xfailed, failed or in error is named, and the verdict
is FAIL. New tests count as any test does. With no such record (main's tree never passed
under the orchestrator, or its IDs were not read), the reasons say so and only the suite's
own result counts.

A test whose definition a human-approved protected change removed (the test module
deleted, or ``def <name>`` gone from it) is not required: the human accepted exactly
that. A test that is still defined is required, approved change or not.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.gitops import merge as gm
from orchestrator.gitops.changes import read_blob
from orchestrator.runners.protected_changes import ProtectedChange
from orchestrator.store import PoolSizes, make_engine, merges, reader

PASSED = "passed"
FAILED = "failed"
ERROR = "error"
SKIPPED = "skipped"
XFAILED = "xfailed"
MISSING = "missing"
# When one test ID has several testcase elements (a failure and a teardown error), the
# worst one is its outcome.
_RANK = {PASSED: 0, SKIPPED: 1, XFAILED: 2, FAILED: 3, ERROR: 4}
_MAX_JUNIT_BYTES = 50_000_000
# How many tests a reason names before "and N more".
_NAMED = 20


def case_id(classname: str, name: str) -> str:
    """A test's ID as recorded: JUnit's ``classname::name``."""
    return f"{classname}::{name}"


def read_outcomes(path: Path) -> dict[str, str] | None:
    """{test ID: outcome} from pytest's JUnit XML, or None when there is no readable file."""
    try:
        if path.stat().st_size > _MAX_JUNIT_BYTES:
            return None
        # Written by the suite under test, like every piece of evidence a suite gives;
        # ElementTree resolves no external entities and expat bounds entity expansion.
        root = ET.parse(path).getroot()  # noqa: S314
    except (ET.ParseError, OSError, LookupError, ValueError):
        return None
    found: dict[str, str] = {}
    for case in root.iter("testcase"):
        key = case_id(case.get("classname") or "", case.get("name") or "")
        kinds = {child.tag: child for child in case}
        if "failure" in kinds:
            outcome = FAILED
        elif "error" in kinds:
            outcome = ERROR
        elif "skipped" in kinds:
            xfail = (kinds["skipped"].get("type") or "") == "pytest.xfail"
            outcome = XFAILED if xfail else SKIPPED
        else:
            outcome = PASSED
        if key not in found or _RANK[outcome] > _RANK[found[key]]:
            found[key] = outcome
    return found


def passed_ids(outcomes: Mapping[str, str]) -> list[str]:
    """The IDs that passed, sorted: what a validated tree records."""
    return sorted(k for k, v in outcomes.items() if v == PASSED)


def _name(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_NAMED])
    more = len(ids) - _NAMED
    return f"{shown} and {more} more" if more > 0 else shown


# --------------------------------------------------------------------------- the baseline


@dataclass(frozen=True)
class Baseline:
    """The tests a branch must pass again. ``required`` None: there is no baseline, and
    ``note`` says why."""

    tree: str | None
    required: frozenset[str] | None
    note: str = ""
    # Required on main, but their definitions were removed by an approved change.
    exempt: tuple[str, ...] = ()

    @classmethod
    def none(cls, tree: str | None, note: str) -> Baseline:
        """No baseline, with the reason."""
        return cls(tree, None, note)


@dataclass(frozen=True)
class BaselineCheck:
    """The baseline's verdict on one run: ok, and the reasons a human reads."""

    ok: bool
    reasons: list[str]
    # The baseline tests that did not pass, with their outcome here.
    not_passed: dict[str, str]


def judge(baseline: Baseline, outcomes: Mapping[str, str] | None) -> BaselineCheck:
    """Whether every test of ``baseline`` passed in ``outcomes`` (None: no evidence)."""
    tree = (baseline.tree or "?")[:12]
    if baseline.required is None:
        return BaselineCheck(
            True, [f"baseline: none: {baseline.note}; only the suite's result counts"], {}
        )
    notes = []
    if baseline.exempt:
        notes.append(
            f"baseline: not required, a human-approved protected change removed their "
            f"definitions: {_name(baseline.exempt)}"
        )
    required = sorted(baseline.required - set(baseline.exempt))
    if not required:
        return BaselineCheck(True, [*notes, f"baseline: no test passed on main's tree {tree}"], {})
    if outcomes is None:
        missing = dict.fromkeys(required, MISSING)
        why = (
            f"baseline: none of the {len(required)} test(s) that passed on main's tree {tree} "
            f"was shown to pass (no JUnit evidence): {_name(required)}"
        )
        return BaselineCheck(False, [*notes, why], missing)
    not_passed = {t: outcomes.get(t, MISSING) for t in required if outcomes.get(t) != PASSED}
    if not not_passed:
        return BaselineCheck(
            True,
            [
                *notes,
                f"baseline: all {len(required)} test(s) that passed on main's tree {tree} passed",
            ],
            {},
        )
    named = [f"{t} ({outcome})" for t, outcome in sorted(not_passed.items())]
    why = (
        f"baseline: {len(not_passed)} of the {len(required)} test(s) that passed on main's "
        f"tree {tree} did not pass here (missing: not collected, deselected or deleted): "
        f"{_name(named)}"
    )
    return BaselineCheck(False, [*notes, why], not_passed)


def removed_by_approval(
    ids: Iterable[str],
    approved: Sequence[ProtectedChange],
    branch_text: Callable[[str], str | None],
) -> list[str]:
    """The IDs whose definitions an approved change removed: their module (a ``.py``
    path, from the ID's classname) was deleted, or no longer says ``def <name>``."""
    out: list[str] = []
    modules: dict[str, tuple[str, str | None]] = {}
    for change in approved:
        if change.kind not in ("modified", "deleted") or not change.path.endswith(".py"):
            continue
        module = change.path[: -len(".py")].replace("/", ".")
        text = None if change.kind == "deleted" else branch_text(change.path)
        modules[module] = (change.kind, text)
    if not modules:
        return out
    for tid in ids:
        classname, _, name = tid.partition("::")
        func = name.split("[", 1)[0]
        for module, (kind, text) in modules.items():
            if classname != module and not classname.startswith(module + "."):
                continue
            if kind == "deleted" or (
                text is not None and not re.search(rf"\bdef\s+{re.escape(func)}\b", text)
            ):
                out.append(tid)
            break
    return sorted(out)


def lookup(
    conn: sa.Connection, repo_id: int, tree: str, argv: Sequence[str]
) -> tuple[frozenset[str] | None, str]:
    """(IDs, where from) of the tests that passed on ``tree`` with this test command, or
    (None, why there are none)."""
    row = merges.find_validated_tree(conn, repo_id=repo_id, tree=tree, cmd_key=merges.cmd_key(argv))
    if row is None:
        return None, (
            f"main's tree {tree[:12]} has not passed this test command under the orchestrator"
        )
    if row.passed_tests is None:
        return None, f"main's tree {tree[:12]} passed ({row.source}), but no test IDs were recorded"
    return frozenset(row.passed_tests), f"recorded by the {row.source}"


def for_tree(
    conn: sa.Connection,
    repo_id: int,
    worktree: Path,
    base: str,
    argv: Sequence[str],
    approved: Sequence[ProtectedChange] = (),
    head: str = "HEAD",
) -> Baseline:
    """The baseline of a branch ``head`` that starts from main's commit ``base``."""
    tree = gm.tree_of(worktree, base)
    if tree is None:
        return Baseline.none(None, f"cannot read the tree of {base[:12]}")
    ids, note = lookup(conn, repo_id, tree, argv)
    if ids is None:
        return Baseline.none(tree, note)

    def branch_text(path: str) -> str | None:
        blob = gm.rev_parse(worktree, f"{head}:{path}")
        if blob is None:
            return None
        return read_blob(worktree, blob)

    exempt = removed_by_approval(ids, approved, branch_text) if approved else []
    return Baseline(tree, ids, note, tuple(exempt))


def read_for_branch(
    settings: Settings,
    repo_id: int,
    worktree: Path,
    base: str,
    argv: Sequence[str],
    approved: Sequence[ProtectedChange] = (),
) -> Baseline:
    """``for_tree`` on the configured database, for the testing stage (which is given no
    engine): one connection, closed again. Raises SQLAlchemyError when it cannot be read."""
    engine = make_engine(settings.effective_database_url, pool=PoolSizes(1, 0, 30.0))
    try:
        with reader(engine).connect() as conn:
            return for_tree(conn, repo_id, worktree, base, argv, approved)
    finally:
        engine.dispose()
