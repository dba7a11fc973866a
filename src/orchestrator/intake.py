"""Intake: forge issues that carry a repo's intake label become tasks; closed, or the label
taken off, their tasks are cancelled.

One decision (``decide_issue``: an issue as the forge shows it, the repo's label, the state
of the task filed from it, if any) serves both ways an issue arrives: a poll of the forge
every ``ORCH_FORGE_POLL_S`` (``poll_intake``, run by ``IntakePoller`` beside the scheduler)
and a webhook delivery (``webhooks.py``). Tasks are filed and cancelled through
``task_ops`` with the actor ``forge``, as a human's are; the unique (repo, issue) index
makes a poll and a webhook that see one issue file it once.

A task is filed once per issue: one whose task was cancelled (its label taken off, or by a
human) is not filed again when it is labeled again; ``orch task add`` files it by hand.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import sqlalchemy as sa

from orchestrator import task_ops
from orchestrator.config import Settings
from orchestrator.domain.stages import LIVE_STATES
from orchestrator.errors import ConfigError, UsageError
from orchestrator.forge import connect
from orchestrator.forge.base import Forge, ForgeFault, ForgeFaultKind, ForgeIssue
from orchestrator.forge.connect import ForgeFactory
from orchestrator.forge.settings import ForgeSettings, forge_settings
from orchestrator.repo_ops import CONTROL_RE
from orchestrator.store import queries
from orchestrator.store.rows import RepoRow, TaskRow

log = logging.getLogger(__name__)

ACTOR = "forge"
MAX_TITLE_CHARS = 200
# How long stopping waits for a round under way.
STOP_WAIT_S = 10.0
# Faults after which this round asks the forge nothing more: it is down, it says wait, or
# it refuses the token. Another kind (a 404 of one issue) concerns that issue only.
_ROUND_ENDING_FAULTS = frozenset(
    {ForgeFaultKind.OUTAGE, ForgeFaultKind.RATE_LIMITED, ForgeFaultKind.CREDENTIALS}
)


class IssueAction(StrEnum):
    """What intake does about one issue."""

    FILE = "file"
    CANCEL = "cancel"
    NOTHING = "nothing"


@dataclass(frozen=True)
class IssueDecision:
    """What to do about an issue, and why."""

    action: IssueAction
    reasons: tuple[str, ...]


def carries(issue: ForgeIssue, label: str) -> bool:
    """Whether the issue carries ``label`` (GitHub's label names ignore case)."""
    wanted = label.casefold()
    return any(name.casefold() == wanted for name in issue.labels)


def decide_issue(issue: ForgeIssue, label: str, task: TaskRow | None) -> IssueDecision:
    """File, cancel or leave: from the issue as the forge shows it now, the repo's intake
    label, and the task filed from the issue before (None: none)."""
    wanted = issue.state == "open" and carries(issue, label)
    if wanted and task is None:
        return IssueDecision(
            IssueAction.FILE, (f"issue #{issue.number} is open and labeled {label!r}",)
        )
    if wanted and task is not None:
        return IssueDecision(
            IssueAction.NOTHING, (f"issue #{issue.number} was filed as {task.key} already",)
        )
    if task is None:
        why = "closed" if issue.state != "open" else f"not labeled {label!r}"
        return IssueDecision(IssueAction.NOTHING, (f"issue #{issue.number} is {why}",))
    # A live task is still to be done, and an issue closed or unlabeled cancels it; a done
    # or cancelled task is left as it is.
    if task.state not in LIVE_STATES:
        return IssueDecision(
            IssueAction.NOTHING,
            (f"issue #{issue.number}: its task {task.key} is {task.state} already",),
        )
    why = (
        f"issue #{issue.number} was closed"
        if issue.state != "open"
        else f"label {label!r} was taken off issue #{issue.number}"
    )
    return IssueDecision(IssueAction.CANCEL, (why,))


def task_title(issue: ForgeIssue) -> str:
    """The issue's title as a task title: one line, no control characters, at most 200."""
    text = " ".join(CONTROL_RE.sub(" ", issue.title).split())
    if not text:
        text = f"issue #{issue.number}"
    if len(text) > MAX_TITLE_CHARS:
        text = text[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return text


def task_body(issue: ForgeIssue) -> str:
    """The issue's body, and a last line that links back to it."""
    body = issue.body.replace("\0", "").rstrip()
    link = f"From {issue.url}" if _web_url(issue.url) else f"From issue #{issue.number}"
    by = _requester(issue)
    footer = f"{link}" + (f", opened by {by}." if by else ".")
    return f"{body}\n\n{footer}" if body else footer


def _web_url(url: str) -> str | None:
    ok = url.startswith(("https://", "http://")) and not CONTROL_RE.search(url)
    return url if ok and len(url) <= task_ops.MAX_URL_CHARS else None


def _requester(issue: ForgeIssue) -> str | None:
    name = CONTROL_RE.sub("", issue.author).strip()[: task_ops.MAX_REQUESTER_CHARS]
    return name or None


def origin_of(issue: ForgeIssue) -> task_ops.Origin:
    """Who asked (the issue's author) and the issue, as a task keeps them."""
    return task_ops.Origin(requester=_requester(issue), issue=issue.number, url=_web_url(issue.url))


@dataclass(frozen=True)
class IssueResult:
    """What intake did about one issue."""

    issue: int
    action: IssueAction
    task: str | None
    reasons: tuple[str, ...]


def apply_issue(
    engine: sa.Engine, settings: Settings, repo: RepoRow, issue: ForgeIssue, label: str
) -> IssueResult:
    """Decide about ``issue`` of ``repo`` and do it: file its task, cancel it, or nothing."""
    with engine.connect() as conn:
        task = queries.get_task_by_issue(conn, repo.id, issue.number)
    decision = decide_issue(issue, label, task)
    if decision.action is IssueAction.FILE:
        new = task_ops.add_task(
            engine,
            settings,
            repo.name,
            task_title(issue),
            task_body(issue),
            origin=origin_of(issue),
            actor=ACTOR,
        )
        if not new.created:
            # Filed by another poll or delivery between our look and our insert.
            why = f"issue #{issue.number} was filed as {new.task.key} already"
            return IssueResult(issue.number, IssueAction.NOTHING, new.task.key, (why,))
        log.info(
            "filed %s from issue #%d",
            new.task.key,
            issue.number,
            extra={"task": new.task.key, "action": "intake"},
        )
        return IssueResult(issue.number, IssueAction.FILE, new.task.key, decision.reasons)
    if decision.action is IssueAction.CANCEL and task is not None:
        try:
            task_ops.cancel_task(engine, task.key, actor=ACTOR, reason=decision.reasons[0])
        except UsageError as exc:
            # It ended (done, or cancelled by a human) since we read it: nothing to cancel.
            return IssueResult(issue.number, IssueAction.NOTHING, task.key, (str(exc),))
        log.info(
            "cancelled %s: %s",
            task.key,
            decision.reasons[0],
            extra={"task": task.key, "action": "intake"},
        )
        return IssueResult(issue.number, IssueAction.CANCEL, task.key, decision.reasons)
    return IssueResult(
        issue.number, IssueAction.NOTHING, task.key if task else None, decision.reasons
    )


@dataclass
class IntakeReport:
    """One repo's round of intake: the tasks filed and cancelled, and what went wrong."""

    repo: str
    filed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, result: IssueResult) -> None:
        """Count one issue's result."""
        if result.task is not None and result.action is IssueAction.FILE:
            self.filed.append(result.task)
        elif result.task is not None and result.action is IssueAction.CANCEL:
            self.cancelled.append(result.task)


def poll_repo(
    engine: sa.Engine, settings: Settings, repo: RepoRow, forge: Forge, fs: ForgeSettings
) -> IntakeReport:
    """One round for one repo: its labeled open issues are filed, and each live task whose
    issue is not among them is looked up and cancelled if it was closed or unlabeled."""
    report = IntakeReport(repo.name)
    label = fs.intake_label
    try:
        labeled = forge.labeled_issues(label)
    except ForgeFault as fault:
        report.problems.append(str(fault))
        return report
    for issue in labeled:
        _apply_one(engine, settings, repo, issue, label, report)
    listed = {issue.number for issue in labeled}
    with engine.connect() as conn:
        live = queries.list_issue_tasks(conn, repo.id, states=LIVE_STATES)
    for task in live:
        if task.forge_issue is None or task.forge_issue in listed:
            continue
        # Not in the list: closed or unlabeled, or a list that was cut short. Asked one by
        # one, so only an issue the forge itself shows closed or unlabeled is cancelled.
        try:
            issue = forge.issue(task.forge_issue)
        except ForgeFault as fault:
            report.problems.append(f"issue #{task.forge_issue}: {fault}")
            if fault.kind in _ROUND_ENDING_FAULTS:
                break
            continue
        _apply_one(engine, settings, repo, issue, label, report)
    return report


def _apply_one(
    engine: sa.Engine,
    settings: Settings,
    repo: RepoRow,
    issue: ForgeIssue,
    label: str,
    report: IntakeReport,
) -> None:
    try:
        report.add(apply_issue(engine, settings, repo, issue, label))
    except UsageError as exc:
        # An issue the task checks refuse stays an issue; the others are still taken.
        report.problems.append(f"issue #{issue.number}: {exc}")


def poll_intake(
    engine: sa.Engine,
    settings: Settings,
    *,
    forge_for: ForgeFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[IntakeReport]:
    """One round of intake over every repo with a forge; each repo's trouble (no token, the
    forge down) is reported and logged, and the other repos are still polled.

    ``forge_for``: how a repo's forge is built (default ``forge.connect.forge_for``, looked
    up at each call); ``environ``: where tokens are read (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    build = forge_for if forge_for is not None else connect.forge_for
    with engine.connect() as conn:
        repos = queries.list_repos(conn)
    reports: list[IntakeReport] = []
    for repo in repos:
        fs = forge_settings(repo.options)
        if fs is None:
            continue
        try:
            forge = build(repo, env)
        except ConfigError as exc:
            report = IntakeReport(repo.name, problems=[str(exc)])
        else:
            if forge is None:
                continue
            report = poll_repo(engine, settings, repo, forge, fs)
        for problem in report.problems:
            log.warning("intake of %s: %s", repo.name, problem, extra={"action": "intake"})
        reports.append(report)
    return reports


def repo_for_forge(conn: sa.Connection, forge_repo: str) -> RepoRow | None:
    """The registered repo that is forge repository ``OWNER/NAME`` (any case), or None."""
    for repo in queries.list_repos(conn):
        fs = forge_settings(repo.options)
        if fs is not None and fs.repo.lower() == forge_repo.lower():
            return repo
    return None


class IntakePoller:
    """Runs ``poll_intake`` every ``forge_poll_s`` on a thread of its own, until stopped.

    ``orch serve`` and ``orch run`` start one beside their scheduler; ``on_filed`` (the
    worker's wake-up) is called after a round that filed a task.
    """

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        *,
        forge_for: ForgeFactory | None = None,
        on_filed: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.forge_for = forge_for
        self.on_filed = on_filed
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def poll_once(self) -> list[IntakeReport]:
        """One round; a failure is logged, never raised: the next round tries again."""
        try:
            reports = poll_intake(self.engine, self.settings, forge_for=self.forge_for)
        except Exception:
            log.exception("an intake round failed", extra={"action": "intake"})
            return []
        if self.on_filed is not None and any(r.filed for r in reports):
            self.on_filed()
        return reports

    def run(self) -> None:
        """Rounds until ``stop``; the first one at once."""
        while not self.stopping.is_set():
            self.poll_once()
            self.stopping.wait(self.settings.forge_poll_s)

    def start(self) -> bool:
        """Start polling on a daemon thread; False (and no thread) when ``forge_poll_s`` is
        0, polling being off."""
        if self.settings.forge_poll_s <= 0:
            return False
        self.thread = threading.Thread(target=self.run, name="intake", daemon=True)
        self.thread.start()
        return True

    def stop(self) -> None:
        """Stop after the round under way, waiting for it at most ``STOP_WAIT_S``."""
        self.stopping.set()
        if self.thread is not None:
            # A round blocked on a slow forge must not hold the process's exit up: the
            # thread is a daemon, and each filing or cancel is one transaction, so a round
            # cut short leaves nothing half-written.
            self.thread.join(STOP_WAIT_S)
