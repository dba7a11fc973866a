"""The dashboard: server-rendered pages (Jinja2, autoescaped) that refresh themselves.

htmx (vendored under ``static/``) polls small fragments; without JavaScript a
``<meta http-equiv="refresh">`` in ``<noscript>`` reloads the page, so it reads fine either
way. The dashboard only reads: every change goes through the API's mutations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jinja2
import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from orchestrator import money, taskdir
from orchestrator.api import files, reads
from orchestrator.api import task_models as TM
from orchestrator.api.state import Api
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import PIPELINE
from orchestrator.store import board, queries

# A page of the board: this many cards per column (``?limit=``), from ``?offset=`` on.
CARDS_PER_COLUMN = 20
MAX_CARDS_PER_COLUMN = 200
ALERTS_SHOWN = 10
POLL_S = 2
NOSCRIPT_REFRESH_S = 5
LOG_LINES = 120
# The tail the task page polls every 2 s holds a job's output, which is the agent's: a line
# of 2 MB (of `"`, five bytes each once escaped) made every poll ~10 MB of HTML. The page
# reads the log's last 64 KiB at most, each line cut at 2,000 characters; the whole log is
# a link away (`/tasks/<KEY>/jobs/<id>/log`).
LOG_TAIL_BYTES = 64 * 1024
LOG_LINE_CHARS = 2_000

CardLimit = Annotated[int, Query(ge=1, le=MAX_CARDS_PER_COLUMN, description="Cards per column.")]
CardOffset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Cards skipped per column.")]

_HEADERS = {
    # Only our own files: no inline script, no third party, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 04s``, ``2h 05m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def clock(ts: float | None) -> str:
    """An epoch as local ``YYYY-MM-DD HH:MM:SS``."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def web_url(url: str | None) -> str | None:
    """``url`` when it is an http(s) address, else None: a link the forge (or whoever
    filed the task) gave is never a ``javascript:`` or ``data:`` link on our page.

    A commit status's address is whatever the code that posted it said (an agent's
    workflow can post one): one ``urlsplit`` refuses (``http://[::1``, a host NFKC folds
    into a slash) is no link either, not an error that takes the task page down.
    """
    if url is None:
        return None
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return url if scheme.lower() in ("http", "https") else None


TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        # Task titles, bodies, reasons, artifacts and logs are written by agents and users:
        # every value is escaped, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["clock"] = clock
    env.filters["web_url"] = web_url
    # Money and tokens read as in the CLI: one formatter (``money``), small budgets legible.
    env.filters["usd"] = money.usd
    env.filters["tokens"] = money.tokens
    env.globals["tokens_in_out"] = money.tokens_in_out
    env.filters["usd_of"] = money.usd_of
    env.tests["budget_reached"] = money.budget_reached
    return env


@dataclass(frozen=True)
class Card:
    """One task on the board."""

    key: str
    title: str
    repo: str
    stage: str
    state: str
    agent: str
    attempt: int
    job_state: str
    elapsed: str
    last_reason: str


@dataclass(frozen=True)
class Column:
    """A stage (or the finished tasks) and its cards."""

    name: str
    count: int
    cards: list[Card]


def _cards(rows: board.Rows, names: dict[int, str], now: float) -> list[Card]:
    cards = []
    for t in rows:
        if t.job_state == "running" and t.job_started_at is not None:
            elapsed = f"running {duration(now - t.job_started_at)}"
        else:
            elapsed = f"{t.state} {duration(now - t.updated_at)}"
        job = t.job_state is not None
        cards.append(
            Card(
                key=t.key,
                title=t.title,
                repo=names.get(t.repo_id, "?"),
                stage=t.stage,
                state=t.state,
                agent=t.job_agent if job else "-",
                attempt=t.job_attempt if job else 0,
                job_state=t.job_state if job else "-",
                elapsed=elapsed,
                last_reason=(t.reasons or [""])[-1],
            )
        )
    return cards


@dataclass(frozen=True)
class BoardPage:
    """Which cards the board shows: ``limit`` per column, from the ``offset``-th on."""

    limit: int = CARDS_PER_COLUMN
    offset: int = 0

    def query(self, offset: int | None = None) -> str:
        """The page's query string (``?limit=..&offset=..``); "" for the first default page."""
        at = self.offset if offset is None else max(0, offset)
        if at == 0 and self.limit == CARDS_PER_COLUMN:
            return ""
        return f"?limit={self.limit}&offset={at}"

    @property
    def prev(self) -> str | None:
        """The previous page's query, or None on the first page."""
        return None if self.offset == 0 else self.query(self.offset - self.limit)

    def next(self, columns: Sequence[Column]) -> str | None:
        """The next page's query, or None when no column has more cards."""
        more = any(c.count > self.offset + self.limit for c in columns)
        return self.query(self.offset + self.limit) if more else None


def board_columns(conn: sa.Connection, now: float, page: BoardPage = BoardPage()) -> list[Column]:
    """A column per stage in use (live tasks), then the finished ones; one page of each,
    every card with its task's newest job."""
    repos = board.card_repos(conn)
    counts = board.counts(conn)
    in_use = repos.stages | set(counts.live_by_stage)
    columns = []
    for stage in (s.value for s in PIPELINE):
        if in_use and stage not in in_use:
            continue
        count = counts.live_by_stage.get(stage, 0)
        rows = board.live_cards_at(conn, stage, page.limit, page.offset) if count else []
        columns.append(Column(stage, count, _cards(rows, repos.names, now)))
    done = board.finished_cards(conn, page.limit, page.offset) if counts.finished else []
    columns.append(Column("finished", counts.finished, _cards(done, repos.names, now)))
    return columns


@dataclass(frozen=True)
class ArtifactView:
    """An artifact as the task page shows it: its verdict keys, then its text."""

    name: str
    keys: list[tuple[str, str]]
    text: str
    # Why the gate does not read it (too large, not text, not a regular file), if so.
    problem: str | None = None


def artifact_views(
    api: Api, key: str, names: list[str], foreign: Sequence[str] = ()
) -> list[ArtifactView]:
    """Each artifact's keys and text, read through the same checks as the API.

    The keys shown are the ones the gate reads: none, and the gate's reason instead, for an
    artifact the gate refuses, so the page never shows a PASS the gate did not see. Files
    no job of this pipeline recorded (``foreign``) are named, with neither keys nor text.
    """
    folder = taskdir.task_dir(api.settings.tasks_dir, key)
    out = [ArtifactView(name, [], "", taskdir.NOT_OURS) for name in foreign]
    for name in names:
        got = taskdir.load_artifact(folder, name)
        if got.problem is None:
            if got.text is not None:  # else gone since the folder was listed
                keys = [(k, ", ".join(v)) for k, v in A.parse_keys(got.text).items()]
                out.append(ArtifactView(name, keys, got.text))
            continue
        # Refused: read once more only to show it as the raw view does (cut, bytes replaced).
        path = files.artifact_path(api.settings.tasks_dir, key, name)
        text = files.read_artifact(path) if path is not None else None
        out.append(ArtifactView(name, [], text or "", got.problem))
    return out


def dashboard_router(api: Api) -> APIRouter:
    """``/`` and ``/ui/...``: the board, the task page, and the fragments they poll."""
    env = _environment()
    router = APIRouter(include_in_schema=False)

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            poll_s=POLL_S, refresh_s=NOSCRIPT_REFRESH_S, now=time.time(), **ctx
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def board_ctx(at: BoardPage) -> dict[str, Any]:
        now = time.time()
        st = api.settings
        with api.reader.connect() as conn:
            columns = board_columns(conn, now, at)
            # One read of the jobs the totals have not folded, for the counters and the spend;
            # one of `orch pause`'s switch, for the switches and the scheduler's state.
            totals = api.totals.snapshot(conn, now)
            switches = reads.kill_switches(conn, st)
            return {
                "columns": columns,
                "page": at,
                "next_page": at.next(columns),
                "queue": reads.queue(conn, st, now=now, limit=20, totals=totals),
                "spend": reads.llm_spend(conn, st, now, totals),
                "alerts": reads.list_alerts(conn, ALERTS_SHOWN),
                "open_alerts": reads.open_alert_count(conn),
                "switches": switches,
                "scheduler": reads.scheduler_state(
                    conn, st, scheduler=api.scheduler, now=now, switches=switches
                ),
            }

    @router.get("/", response_class=HTMLResponse)
    def board(limit: CardLimit = CARDS_PER_COLUMN, offset: CardOffset = 0) -> HTMLResponse:
        return page("board.html", **board_ctx(BoardPage(limit, offset)))

    @router.get("/ui/board", response_class=HTMLResponse)
    def board_fragment(limit: CardLimit = CARDS_PER_COLUMN, offset: CardOffset = 0) -> HTMLResponse:
        return page("_board.html", **board_ctx(BoardPage(limit, offset)))

    def task_ctx(key: str, job_id: int | None, *, log: bool = True) -> dict[str, Any] | None:
        if not taskdir.valid_key(key):
            return None
        with api.reader.connect() as conn:
            task = queries.get_task(conn, key)
            if task is None:
                return None
            detail = reads.task_detail(conn, api.settings, task)
        log_job = _log_job(detail.jobs, job_id) if log else None
        log_text = None
        if log_job is not None:
            path = files.job_log(api.settings.tasks_dir, key, log_job)
            if path is not None:
                log_text, _size = files.tail(path, LOG_LINES, max_bytes=LOG_TAIL_BYTES)
                log_text = _cut_lines(log_text, LOG_LINE_CHARS)
        # Without a job asked for, the tail follows the task to its newest job.
        return {"task": detail, "log_job": log_job, "log_text": log_text, "pinned": job_id}

    def not_found(key: str) -> HTMLResponse:
        return page("missing.html", status=404, key=key)

    @router.get("/ui/tasks/{key}", response_class=HTMLResponse)
    def task_page(key: str, job: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
        ctx = task_ctx(key, job)
        if ctx is None:
            return not_found(key)
        ctx["artifacts"] = artifact_views(
            api, key, ctx["task"].artifacts, ctx["task"].not_written_by_pipeline
        )
        return page("task.html", **ctx)

    @router.get("/ui/tasks/{key}/summary", response_class=HTMLResponse)
    def task_summary(key: str) -> HTMLResponse:
        ctx = task_ctx(key, None, log=False)
        if ctx is None:
            return not_found(key)
        return page("_task_summary.html", **ctx)

    @router.get("/ui/tasks/{key}/artifacts", response_class=HTMLResponse)
    def task_artifacts(key: str) -> HTMLResponse:
        ctx = task_ctx(key, None, log=False)
        if ctx is None:
            return not_found(key)
        ctx["artifacts"] = artifact_views(
            api, key, ctx["task"].artifacts, ctx["task"].not_written_by_pipeline
        )
        return page("_task_artifacts.html", **ctx)

    @router.get("/ui/tasks/{key}/log", response_class=HTMLResponse)
    def task_log(key: str, job: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
        ctx = task_ctx(key, job)
        if ctx is None:
            return not_found(key)
        return page("_task_log.html", **ctx)

    return router


def _cut_lines(text: str, limit: int) -> str:
    """Each line of ``text`` at most ``limit`` characters; a cut one says what it lost."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if len(body) > limit:
            note = f" [{len(body) - limit} more characters of this line not shown]"
            line = body[:limit] + note + line[len(body) :]
        out.append(line)
    return "".join(out)


def _log_job(jobs_: list[TM.JobOut], job_id: int | None) -> TM.JobOut | None:
    """The job whose log the task page tails: the one asked for, else the newest that ran."""
    if job_id is not None:
        return next((j for j in jobs_ if j.id == job_id), None)
    ran = [j for j in jobs_ if j.started_at is not None]
    return ran[-1] if ran else None
