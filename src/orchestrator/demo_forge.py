"""`orch demo --forge`: the demo's four tasks through a fake GitHub: issues in, pull requests
out.

The same home, repo, agents and health server as `orch demo` (``demo.build``), with the repo
landing by pull request (``land: pr``) on a ``FakeGitHub`` started in the demo's folder: its
remote ``origin`` is the fake's repository, ``main`` there is protected and requires the
check ``ci`` (no approvals: the reviews' path is shown by the integration tests), and the
token is in the process's environment under ``TOKEN_ENV``. The tasks come in as issues
labeled ``orch``, filed by one round of intake; a CI bot (``demo_ci``) judges every pull
request head. "Add divide"'s first patch leaves a TODO that the tests pass and the CI's lint
refuses: its pull request goes red, the task goes back to development with the check's log,
and its second patch merges. The demo checks its own outcome, the forge's side included.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from orchestrator import demo, intake, repo_ops, taskdir
from orchestrator.config import Settings
from orchestrator.demo_ci import CHECK_NAME, CI_SCRIPT, CiBot, CiRun
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.settings import DEFAULT_INTAKE_LABEL, ForgeInput
from orchestrator.gitops import worktrees
from orchestrator.store import queries
from orchestrator.store.rows import TransitionRow

FORGE_REPO = "demo/calc"
# The NAME of the variable the demo's forge settings read the fake's token from; set in
# this process only, for as long as the demo runs.
TOKEN_ENV = "DEMO_GITHUB_TOKEN"  # noqa: S105
# How often intake and a waiting pull request read the forge; the CI bot looks as often.
FORGE_POLL_S = 0.5
CI_POLL_S = 0.2

_DIVIDE = demo.TASKS[2]
TODO_LINE = "    # TODO: say what dividing by zero does\n"
# The tasks of `orch demo`, but "Add divide" leaves a TODO its tests do not mind and the
# CI's lint does; its second patch turns the TODO into a docstring. (A "fix" edit replaces
# the first match after the multiply marker: div comes after it.)
CI_FAILING = "Add divide"
FORGE_TASKS = [
    demo.TASKS[0],
    demo.TASKS[1],
    dataclasses.replace(
        _DIVIDE,
        edits=[
            {
                **_DIVIDE.edits[0],
                "calc/__init__.py": f"divide|def div(a, b):\n{TODO_LINE}    return a / b\n",
            },
            {
                "calc/__init__.py": f"fix|{TODO_LINE}|"
                '    """a / b; dividing by zero raises ZeroDivisionError."""\n'
            },
        ],
        expect_rollbacks=1,
    ),
    demo.TASKS[3],
]


@dataclass
class PullReport:
    """A task's issue and pull request on the forge, and what the CI said of its heads."""

    key: str
    issue: int
    issue_state: str
    pull: int | None
    merged: bool
    ci: list[str] = field(default_factory=list)


@dataclass
class ForgeDemoResult(demo.DemoResult):
    """`orch demo`'s result, and the forge's side of it."""

    forge_url: str = ""
    forge_repo: str = FORGE_REPO
    forge_main: str = ""
    pulls: list[PullReport] = field(default_factory=list)
    ci_runs: list[CiRun] = field(default_factory=list)


@contextmanager
def _token_in_env(token: str) -> Iterator[None]:
    """The fake's token where the forge settings say to read it (intake, the merge gate)."""
    before = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = before


def connect_forge(engine: sa.Engine, repo: Path, fake: FakeGitHub) -> None:
    """The fake's repository made from the demo's; the demo repo lands there by pull request."""
    fake.create_repo(FORGE_REPO, source=repo)
    demo.run_git(["remote", "add", "origin", fake.clone_url(FORGE_REPO)], repo)
    fake.protect_branch(FORGE_REPO, "main", checks=[CHECK_NAME], approvals=0)
    repo_ops.set_repo(
        engine,
        "demo",
        repo_ops.RepoInput(
            remote="origin",
            forge=ForgeInput(
                forge="github",
                repo=FORGE_REPO,
                api_url=fake.url,
                token_env=TOKEN_ENV,
                land="pr",
            ),
        ),
    )


def file_issues(
    settings: Settings, engine: sa.Engine, repo: Path, fake: FakeGitHub
) -> tuple[list[str], list[int]]:
    """Open one labeled issue per task, let intake file them, and attach each task's patches.

    Intake files a task with its first job queued at once; the worker is not running yet,
    so every patch is in the task's folder before any development job can start.
    """
    issues = [
        fake.open_issue(
            FORGE_REPO,
            spec.title,
            body=f"{spec.title} to calc.",
            labels=[DEFAULT_INTAKE_LABEL],
            author="ada",
        )
        for spec in FORGE_TASKS
    ]
    reports = intake.poll_intake(engine, settings)
    problems = [p for r in reports for p in r.problems]
    if problems:
        msg = f"intake did not file the demo's issues: {'; '.join(problems)}"
        raise RuntimeError(msg)
    keys = []
    with engine.connect() as conn:
        row = queries.get_repo(conn, "demo")
        if row is None:
            msg = "the demo repo is not registered"
            raise RuntimeError(msg)
        for number in issues:
            task = queries.get_task_by_issue(conn, row.id, number)
            if task is None:
                msg = f"intake filed no task for issue #{number}"
                raise RuntimeError(msg)
            keys.append(task.key)
    for key, spec in zip(keys, FORGE_TASKS, strict=True):
        folder = taskdir.task_dir(settings.tasks_dir, key)
        for patch in demo.make_patches(repo, spec):
            taskdir.add_patch(folder, patch)
    return keys, issues


def run_forge_demo(
    root: Path | None = None,
    *,
    on_tick: Callable[[list[dict[str, object]]], None] | None = None,
    deadline_s: float = 300.0,
) -> ForgeDemoResult:
    """Build everything with a fake GitHub, run the tasks to the end, and check the outcome."""
    root = root or Path(tempfile.mkdtemp(prefix="orch-demo-"))
    started = time.time()
    settings, engine, repo, server = demo.build(
        root, files={"ci.py": CI_SCRIPT}, forge_poll_s=FORGE_POLL_S
    )
    fake = FakeGitHub(root / "forge").start()
    bot = CiBot(fake, FORGE_REPO, root / "ci", poll_s=CI_POLL_S)
    try:
        with _token_in_env(fake.token):
            connect_forge(engine, repo, fake)
            keys, issues = file_issues(settings, engine, repo, fake)
            bot.start()
            try:
                demo.work(settings, engine, started, on_tick=on_tick, deadline_s=deadline_s)
            finally:
                bot.stop()
        base = demo.check(settings, engine, repo, keys, started, FORGE_TASKS)
        return check_forge(base, engine, fake, bot, keys, issues)
    finally:
        fake.close()
        server.close()
        engine.dispose()


def _pull_of(fake: FakeGitHub, key: str) -> int | None:
    branch = worktrees.branch_name(key)
    found = [n for n, p in list(fake.repo(FORGE_REPO).pulls.items()) if p.head_ref == branch]
    return found[-1] if found else None


def check_forge(
    base: demo.DemoResult,
    engine: sa.Engine,
    fake: FakeGitHub,
    bot: CiBot,
    keys: list[str],
    issues: list[int],
) -> ForgeDemoResult:
    """``demo.check``'s result, and the forge's side: each task linked to its issue, its pull
    request merged with ``ci`` green on its last head, exactly one red ``ci`` (the failing
    task's first head) and that task's rollback from deploy-staging carrying the log."""
    result = ForgeDemoResult(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(demo.DemoResult)},
        forge_url=fake.url,
        forge_main=fake.branch_sha(FORGE_REPO, "main") or "",
        ci_runs=list(bot.runs),
    )
    result.problems.extend(f"the CI bot failed: {e}" for e in bot.errors)
    by_key = {r.key: r for r in result.tasks}
    with engine.connect() as conn:
        for key, number, spec in zip(keys, issues, FORGE_TASKS, strict=True):
            task = queries.get_task(conn, key)
            if task is None:
                result.problems.append(f"{key} is not in the database")
                continue
            problems = by_key[key].problems
            pull = _pull_of(fake, key)
            merged = pull is not None and fake.pull(FORGE_REPO, pull).merged
            ci = [r.conclusion for r in bot.runs if r.pull == pull]
            report = PullReport(key, number, fake.issue(FORGE_REPO, number).state, pull, merged, ci)
            result.pulls.append(report)
            if task.forge_issue != number:
                problems.append(f"not linked to issue #{number} (forge_issue {task.forge_issue})")
            if pull is None:
                problems.append("no pull request was opened")
            elif not merged:
                problems.append(f"pull request #{pull} is not merged")
            problems.extend(_ci_problems(fake, pull, ci, bot.runs, spec.title == CI_FAILING))
            if spec.title == CI_FAILING:
                problems.extend(_rollback_problems(queries.list_transitions(conn, task.id)))
    local_main = demo.run_git(["rev-parse", "main"], result.repo).strip()
    if result.forge_main != local_main:
        result.problems.append(
            f"main here ({local_main[:12]}) is not the forge's ({result.forge_main[:12]})"
        )
    calc = demo.run_git(["show", "main:calc/__init__.py"], result.repo)
    if "TODO" in calc:
        result.problems.append("main's calc/__init__.py still holds the TODO the CI refuses")
    return result


def _ci_problems(
    fake: FakeGitHub, pull: int | None, ci: list[str], runs: list[CiRun], should_fail: bool
) -> list[str]:
    """What ``ci`` said of a pull request's heads, oldest first: every head is judged again
    when a rebase onto a newer main moves it, so one attempt may have several heads. The
    failing task's first head fails and its heads pass after its fix; any other task's all
    pass; the merged head is green."""
    if pull is None:
        return []
    problems = []
    if should_fail:
        if not ci or ci[0] != "failure":
            problems.append(f"ci said {ci} on its heads: the first should have failed")
        elif "success" in ci and "failure" in ci[ci.index("success") :]:
            problems.append(f"ci said {ci} on its heads: it failed again after it passed")
    elif "failure" in ci:
        problems.append(f"ci said {ci} on its heads: none should have failed")
    head = fake.pull(FORGE_REPO, pull).head_sha
    if not any(r.sha == head and r.conclusion == "success" for r in runs):
        problems.append(f"its last head {head[:12]} has no green ci")
    return problems


def _rollback_problems(history: list[TransitionRow]) -> list[str]:
    """The failing task went back from deploy-staging to development with the check's log."""
    back = [
        h
        for h in history
        if h.kind == "rollback" and (h.from_stage, h.to_stage) == ("deploy-staging", "development")
    ]
    if len(back) != 1:
        return [f"{len(back)} rollbacks from deploy-staging to development, expected 1"]
    said = " ".join(back[0].reasons)
    if f"check {CHECK_NAME} failed" not in said or "TODO" not in said:
        return [f"its rollback does not carry the failing check's log: {back[0].reasons[:3]}"]
    return []
