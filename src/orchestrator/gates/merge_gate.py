"""The merge gate: the last check of deploy-staging, and the only way main ever moves.

``check_branch_mergeable`` keeps the policy and leaves git to ``gitops.land``: it checks the
repo's test command and regression markers, has ``land`` rebase the task branch onto
current main and make it one commit (main must hold only trees that passed the suite),
judges each candidate (no regression marker dropped; re-tested unless that exact tree
already passed the same test command), and ``land`` then advances main by
compare-and-swap (and pushes it, never forced, when the repo has a remote). Main moved
meanwhile: rebase and go round again, at most ``MAX_ROUNDS`` times.

Every expected condition is a value: a conflict or a red re-test is a FAIL verdict (the
engine rolls back to development); a timeout, a busy lock or a rejected push is a verdict
with ``tool_error`` set (the domain defers on the same stage within the infra budget, then
blocks and alerts). The check never raises. It turns the ``Landing`` into
``16-merge-report.md``, one ``merge_results`` row per run and the verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.agent_env import SUITE_ENV, scrubbed_env
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.verdicts import Verdict, VerdictStatus
from orchestrator.gates import pull_land, validated
from orchestrator.gates.context import GateContext
from orchestrator.gates.markers import Marker, check_markers, parse_markers
from orchestrator.gitops import merge as gm
from orchestrator.gitops.land import (
    Candidate,
    Judgement,
    Landing,
    LandRequest,
    Rewound,
    land,
)
from orchestrator.runners import baseline as bl
from orchestrator.runners import protected, protected_changes
from orchestrator.runners.base import (
    RunContext,
    argv_json,
    argv_problem,
    one_line,
    output_block,
    reasons_block,
    suite_request,
)
from orchestrator.runners.suite import DEFAULT_COMMAND, JUnitCounts, run_suite
from orchestrator.self_deploy import ExitMapping
from orchestrator.store import merges, reader
from orchestrator.store.rows import RepoRow

log = logging.getLogger(__name__)

# The alert of a main that was rewound or rewritten under the orchestrator.
MAIN_REWOUND = "main-rewound"
# Rounds of rebase + re-test + CAS before giving up on a main that keeps moving.
MAX_ROUNDS = 3

# WAIT and BLOCKED only when the repo lands by pull request (``gates.pull_land``).
MergeStatus = Literal["MERGED", "CONFLICT", "RED", "INFRA", "WAIT", "BLOCKED"]
RetestClass = Literal["timeout", "red", "lock-busy", "other"]
Retest = Literal["ran", "skipped", "none"]
# Tool errors the domain understands, by failure class.
_TOOL_ERROR: dict[str, str] = {
    "timeout": OutcomeKind.TIMEOUT.value,
    "lock-busy": OutcomeKind.LOCK_BUSY.value,
    "other": OutcomeKind.CRASHED.value,
}


# --------------------------------------------------------------------------- re-test


@dataclass(frozen=True)
class RetestResult:
    """What the re-test did: the mapped outcome, the JUnit counts, where its log is."""

    passed: bool
    mapping: ExitMapping
    counts: JUnitCounts | None
    argv: list[str]
    log_path: Path
    duration_s: float
    reasons: list[str]
    # The IDs of the tests that passed (JUnit evidence), for the tree's record.
    passed_tests: list[str] | None = None


def _retest_env(repo: RepoRow) -> dict[str, str]:
    # What suites see (the allowlist, never the agent's keys); no bytecode: the re-test
    # must leave the worktree as it found it.
    return scrubbed_env(repo, SUITE_ENV, agent_keys=False)


def retest_branch(
    ctx: GateContext,
    worktree: Path,
    command: Sequence[str],
    *,
    log_path: Path,
    baseline: bl.Baseline | None = None,
) -> RetestResult:
    """Run the repo's test command in ``worktree`` through proc_group, bounded by
    ``merge_retest_timeout_s``. Its log goes to ``log_path`` (under ``runs/``); the
    test-runner's ``13-test-report.md`` is left as it is. ``baseline``: the tests that
    passed on main, which must pass again, as at testing."""
    rctx = RunContext(
        task_key=ctx.task.key,
        repo_name=ctx.repo.name,
        worktree=worktree,
        artifact_dir=ctx.task_dir,
        log_path=log_path,
        env=_retest_env(ctx.repo),
        settings=ctx.settings,
        cancel=ctx.cancel,
        on_start=ctx.on_start,
        marker=ctx.marker,
        repo_path=Path(ctx.repo.path),
        repo_options=ctx.repo.options,
    )
    run = run_suite(suite_request(rctx, command, timeout_s=ctx.settings.merge_retest_timeout_s))
    passed, reasons = run.passed, list(run.reasons)
    if baseline is not None and run.kind is OutcomeKind.COMPLETED:
        held = bl.judge(baseline, run.outcomes)
        reasons.extend(held.reasons)
        passed = passed and held.ok
    return RetestResult(
        passed,
        run.mapping,
        run.counts,
        run.argv,
        run.process.log_path,
        run.process.duration_s,
        reasons,
        run.passed_tests,
    )


def classify_retest_failure(result: RetestResult) -> RetestClass:
    """Why a re-test did not pass: ``timeout`` (ours), ``lock-busy``, ``red`` (the suite
    ran and failed: the code's fault) or ``other`` (it did not really run)."""
    kind = result.mapping.outcome
    if kind is OutcomeKind.TIMEOUT:
        return "timeout"
    if kind is OutcomeKind.LOCK_BUSY:
        return "lock-busy"
    if kind is OutcomeKind.COMPLETED:
        return "red"
    return "other"


# --------------------------------------------------------------------------- the gate


@dataclass
class _Run:
    """What one run of the gate found; becomes the report, the DB row and the verdict."""

    status: MergeStatus = "INFRA"
    classification: str | None = None
    merged_sha: str | None = None
    base_sha: str | None = None
    candidate: str | None = None
    tree: str | None = None
    retest: Retest = "none"
    retest_reason: str = "no re-test was needed"
    retest_log: Path | None = None
    rounds: int = 0
    command: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # Main does not descend from the main this gate last made: a human must look.
    rewound: bool = False
    # WAIT: the gates run again after this many seconds; BLOCKED: the alert a human gets.
    wait_s: float | None = None
    alert: str | None = None

    def infra(self, kind: str, *why: str) -> _Run:
        self.status = "INFRA"
        self.classification = kind
        self.reasons.extend(why)
        return self

    def landed(self, landing: Landing) -> None:
        """Take what the landing did and saw."""
        self.status, self.classification = landing.status, landing.classification
        self.merged_sha, self.base_sha = landing.merged_sha, landing.base_sha
        self.candidate, self.tree, self.rounds = landing.candidate, landing.tree, landing.rounds
        self.reasons.extend(landing.reasons)
        self.wait_s, self.alert = landing.wait_s, landing.alert
        if landing.already == "already-merged":
            self.retest_reason = "already merged: nothing was re-tested"
        elif landing.already == "empty":
            self.retest_reason = "nothing to merge: nothing was re-tested"

    @property
    def tool_error(self) -> str | None:
        if self.status != "INFRA":
            return None
        return _TOOL_ERROR.get(self.classification or "other", OutcomeKind.CRASHED.value)


def check_branch_mergeable(ctx: GateContext) -> Verdict:
    """The merge gate (see the module docstring); never raises."""
    run = _Run()
    try:
        _merge(ctx, run)
    except Exception as exc:
        log.exception("merge gate crashed", extra={"task": ctx.task.key, "action": "merge"})
        run.infra("other", f"merge gate internal error: {type(exc).__name__}: {exc}")
    summary = _summary(run)
    run.reasons.insert(0, summary)
    _write_report(ctx, run)
    if run.status != "WAIT":  # a wait is no merge result; the history shows it
        _record_result(ctx, run)
    fields = {
        "merge_status": run.status,
        "merged_sha": run.merged_sha or "none",
        "retest": run.retest,
        "rounds": str(run.rounds),
        "classification": run.classification or "none",
    }
    status = VerdictStatus.PASS if run.status == "MERGED" else VerdictStatus.FAIL
    if run.rewound:
        return Verdict(status, list(run.reasons), fields, needs_human=MAIN_REWOUND)
    if run.status == "WAIT":
        return Verdict(status, list(run.reasons), fields, wait_s=run.wait_s or 0.0)
    if run.status == "BLOCKED":
        return Verdict(status, list(run.reasons), fields, needs_human=run.alert or "task-blocked")
    if run.status == "MERGED" and run.merged_sha is not None:
        _remember_main(ctx, run.merged_sha, run.reasons)
    return Verdict(status, list(run.reasons), fields, run.tool_error)


def _remember_main(ctx: GateContext, sha: str, notes: list[str]) -> None:
    """Record the main this gate made (or found merged): the next run checks that main
    still descends from it."""
    if ctx.engine is None:
        return
    try:
        with ctx.engine.begin() as conn:
            merges.record_main_seen(conn, repo_id=ctx.repo.id, sha=sha)
    except sa.exc.SQLAlchemyError as exc:
        notes.append(f"could not record main {sha[:12]}: {type(exc).__name__}: {exc}")


def _rewound_reason(repo: RepoRow, rewound: Rewound) -> str:
    """Why main is no base to build on, and what a human does about it."""
    main, base, seen = repo.main_branch, rewound.main_sha, rewound.seen
    why = "does not descend from" if rewound.proven else "cannot be shown to descend from"
    return (
        f"{main} ({base[:12]}) {why} {seen[:12]}, the last {main} the merge gate made: it "
        f"was rewound or rewritten outside the orchestrator. Not building on it; when the "
        f"new {main} is right, `orch repo set {repo.name} --trust-main`, then retry"
    )


def _summary(run: _Run) -> str:
    if run.status == "MERGED":
        sha = (run.merged_sha or "?")[:12]
        return f"merge gate: MERGED {sha} (re-test {run.retest}; rounds {run.rounds})"
    if run.status == "INFRA":
        return (
            f"merge gate: INFRA ({run.classification}); the code is not blamed, main was not moved"
        )
    return f"merge gate: {run.status}; main was not moved"


def _merge(ctx: GateContext, run: _Run) -> None:
    """The gate's own checks, then the landing (gitops.land), judging each candidate."""
    repo, key = ctx.repo, ctx.task.key
    worktree = ctx.workspace
    if not (worktree / ".git").exists():
        run.infra("other", f"no worktree at {worktree}")
        return
    bad = argv_problem(repo.test_cmd)
    if bad is not None:
        run.infra("other", f"the repo's test command: {bad}")
        return
    run.command = list(repo.test_cmd) if repo.test_cmd else list(DEFAULT_COMMAND)
    cmd_key = merges.cmd_key(run.command)
    markers, malformed = parse_markers(repo.options)
    if malformed:
        run.infra("other", *malformed)
        return

    # Whether a tree's re-test is skipped, asked before the landing for the tree HEAD
    # holds (round 1's candidate's on a no-op rebase) and kept for round 1's judge: a tree
    # once recorded as validated stays so. A re-test ahead: the landing's own status lists
    # the untracked files too, and the judge needs no status of its own.
    skips: dict[str, tuple[bool, str]] = {}

    def retests(tree: str | None) -> bool:
        if tree is None:
            return False
        skips[tree] = validated.skip_reason(ctx, tree, cmd_key, "noop")
        return not skips[tree][0]

    def judge(candidate: Candidate) -> Judgement:
        known = skips.pop(candidate.tree, None) if candidate.round_no == 1 else None
        return _judge(ctx, run, worktree, markers, cmd_key, candidate, known)

    # A repo that lands by pull request: the step that lands the candidate there, or why
    # the landing stops before it starts; (None, None) for a repo that pushes main.
    publish, stopped = (
        pull_land.prepare(ctx) if pull_land.lands_by_pull_request(ctx) else (None, None)
    )
    if stopped is not None:
        run.status, run.classification = stopped.status, stopped.classification
        run.wait_s, run.alert = stopped.wait_s, stopped.alert
        run.reasons.extend(stopped.reasons)
        return

    request = LandRequest(
        repo_path=Path(repo.path),
        main=repo.main_branch,
        remote=repo.remote,
        worktree=worktree,
        key=key,
        title=ctx.task.title,
        author=ctx.task.author,
        main_seen=repo.main_seen,
        max_rounds=MAX_ROUNDS,
        publish=publish,
        retests=retests,
    )
    landing = land(request, judge)
    run.landed(landing)
    if landing.rewound is not None:
        run.rewound = True
        run.reasons.append(_rewound_reason(repo, landing.rewound))


def _judge(
    ctx: GateContext,
    run: _Run,
    worktree: Path,
    markers: Sequence[Marker],
    cmd_key: str,
    candidate: Candidate,
    known: tuple[bool, str] | None = None,
) -> Judgement:
    """May ``candidate`` land: no regression marker dropped, and its tree passed the suite
    (re-tested now, or recorded as validated). ``known``: ``validated.skip_reason`` for
    its tree on a no-op rebase, asked already."""
    dropped, notes, problems = check_markers(worktree, candidate.base, candidate.sha, markers)
    if problems:
        return Judgement("INFRA", "other", (*notes, *problems))
    if dropped:
        return Judgement("RED", "red", (*notes, *dropped))
    retested = _retest_or_skip(ctx, run, worktree, candidate, cmd_key, known)
    return dataclasses.replace(retested, reasons=(*notes, *retested.reasons))


def _retest_or_skip(
    ctx: GateContext,
    run: _Run,
    worktree: Path,
    candidate: Candidate,
    cmd_key: str,
    known: tuple[bool, str] | None = None,
) -> Judgement:
    """Skip or run the re-test: land the candidate, or stop (red or infra)."""
    round_no, tree = candidate.round_no, candidate.tree
    noop = candidate.rebase == "noop"
    if known is not None and noop:
        skip, why = known
    else:
        skip, why = validated.skip_reason(ctx, tree, cmd_key, candidate.rebase)
    if skip:
        if run.retest != "ran":
            run.retest = "skipped"
        run.retest_reason = why
        return Judgement(reasons=(f"round {round_no}: re-test skipped: {why}",))
    # Untracked files count: one could have changed the outcome. The landing's status
    # when nothing has run in the worktree since (``Candidate.seen``), else git's answer.
    seen = candidate.seen
    clean, clean_detail = seen.clean() if seen is not None else gm.is_clean(worktree)
    baseline, refused = _before_retest(ctx, run, worktree, candidate)
    if refused is not None:
        return Judgement("INFRA", "other", (f"round {round_no}: {refused}",))
    stamp = int(time.time() * 1000)
    log_path = ctx.task_dir / "runs" / f"merge-retest-{stamp}-r{round_no}.log"
    result = retest_branch(ctx, worktree, run.command, log_path=log_path, baseline=baseline)
    run.retest = "ran"
    run.retest_reason = why
    run.retest_log = result.log_path
    counts = result.counts.as_dict() if result.counts else {}
    tally = f" ({counts['passed']} passed, {counts['failed']} failed)" if counts else ""
    if not result.passed:
        cls = classify_retest_failure(result)
        text = f"re-test {'failed' if cls == 'red' else 'did not run to the end'}{tally}"
        details = (f"round {round_no}: {text}", *result.reasons, f"log: {result.log_path}")
        return Judgement("RED" if cls == "red" else "INFRA", cls, details)
    reasons = [f"round {round_no}: re-test passed{tally} ({why})"]
    if clean and ctx.engine is not None:
        validated.remember(
            ctx.engine,
            ctx.repo.id,
            tree,
            cmd_key,
            "merge-retest",
            reasons,
            passed_tests=result.passed_tests,
        )
    elif not clean:
        reasons.append(f"tree not recorded as validated: worktree not clean ({clean_detail})")
    return Judgement(reasons=tuple(reasons))


def _before_retest(
    ctx: GateContext, run: _Run, worktree: Path, candidate: Candidate
) -> tuple[bl.Baseline | None, str | None]:
    """(the tests that passed on main, why the re-test must not run).

    A file in the worktree that is not in the candidate's tree and would configure the
    suite (an ignored ``conftest.py``, one a staging script left) is refused: the re-test
    would judge another suite than the one that lands. The baseline is main's (``base``);
    tests whose definitions a human-approved protected change removed are not required.
    """
    base, head = candidate.base, candidate.sha
    stray = protected.check_paths(worktree, head, head, ctx.repo.options, workspace_files=True)
    if stray.problem is not None:
        return None, f"cannot check the worktree's files before the re-test: {stray.problem}"
    if stray.changes:
        return None, (
            f"not re-tested: the worktree holds files that are not in the tree and would "
            f"configure the suite: {protected_changes.name_changes(stray.changes)}"
        )
    if ctx.engine is None:
        return None, None
    found = protected.check_paths(worktree, base, head, ctx.repo.options, workspace_files=False)
    if found.problem is not None:
        # Unknown, not none: read as none, a test whose removal a human approved would be
        # required anyway, and its absence blamed on the code (RED).
        return (
            None,
            f"cannot tell the branch's protected changes before the re-test: {found.problem}",
        )
    approved = protected.approval_of(ctx.task_dir, found.fingerprint) if found.changes else None
    try:
        with reader(ctx.engine).connect() as conn:
            baseline = bl.for_tree(
                conn, ctx.repo.id, worktree, base, run.command, approved or (), head=head
            )
    except sa.exc.SQLAlchemyError as exc:
        return None, f"cannot read the tests that passed on main: {type(exc).__name__}: {exc}"
    return baseline, None


# --------------------------------------------------------------------------- report, DB


def _write_report(ctx: GateContext, run: _Run) -> None:
    keys: dict[str, object] = {
        "merge_status": run.status,
        "merged_sha": run.merged_sha or "none",
        "base_sha": run.base_sha or "none",
        "candidate_sha": run.candidate or "none",
        "tree": run.tree or "none",
        "retest": run.retest,
        "retest_reason": one_line(run.retest_reason),
        "classification": run.classification or "none",
        "tool_error": run.tool_error or "none",
        "rounds": run.rounds,
        "test_command": argv_json(run.command or None),
        "retest_log": one_line(run.retest_log) if run.retest_log else "none",
    }
    sections = [reasons_block(run.reasons)]
    if run.retest_log is not None:
        sections.append(output_block(run.retest_log))
    path = ctx.task_dir / A.MERGE_REPORT
    text = A.render_artifact(A.MERGE_REPORT, keys, "\n\n".join(sections))
    try:
        taskdir.write_atomic(path, text)
    except Exception as exc:  # a full disk must not turn a merge into a crash of the gate
        run.reasons.append(f"cannot write {path}: {type(exc).__name__}: {exc}")
        return
    ctx.written[A.MERGE_REPORT] = text  # the job's record: what this pipeline wrote


def _record_result(ctx: GateContext, run: _Run) -> None:
    if ctx.engine is None:
        run.reasons.append("no database: this merge result is not recorded")
        return
    try:
        with ctx.engine.begin() as conn:
            merges.insert_merge_result(
                conn,
                task_id=ctx.task.id,
                job_id=ctx.job_id,
                status=run.status,
                classification=run.classification,
                retest=run.retest,
                merged_sha=run.merged_sha,
                rounds=run.rounds,
                reasons=run.reasons,
                now=time.time(),
            )
    except sa.exc.SQLAlchemyError as exc:
        run.reasons.append(f"could not record the merge result: {type(exc).__name__}: {exc}")


__all__ = [
    "MAX_ROUNDS",
    "RetestResult",
    "check_branch_mergeable",
    "classify_retest_failure",
    "retest_branch",
]
