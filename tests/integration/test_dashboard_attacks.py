"""The dashboard against an agent that writes markup, on a real app and database.

An agent controls much of what the dashboard shows: the artifacts it writes, the reasons
that quote its tools, its log, the checks and statuses its branch reports to a forge, and
(through a forge issue) a task's title and body. Each test here plays that agent: the
text must reach the page as text, never as an element, an attribute, a link of its own or
a request htmx would send, and no text may take the page down. The page never holds the
API token, so even script in the page could not change anything.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.integration.api_client import api_client

from orchestrator import repo_ops, task_ops, taskdir
from orchestrator.api.token import login_code
from orchestrator.config import Settings, load_settings
from orchestrator.store import alert_rows, pulls, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HERE = "tests/integration/test_dashboard_attacks.py"
TOKEN = "dashboard-attack-token-0123456789"
BASE_URL = "http://127.0.0.1"

DEFENDED = [
    {
        "attack": "a commit status posted on the agent's branch (its workflow can) whose "
        "`target_url` Python's `urlsplit` refuses: `http://[::1`, `https://[x]/`, a host "
        "with a fullwidth solidus that NFKC folds into `/`",
        "before": "the dashboard's task page and its summary poll answered 500 while the "
        "pull request was recorded: the user saw nothing of the task there",
        "now": "an address `urlsplit` refuses is no link, as a `javascript:` one is not: the "
        "check is named with its state, and the page renders",
        "test": HERE,
    },
]


@dataclass
class Bed:
    """A home, a repo, a task and a client of the app, as the user's browser talks to it."""

    settings: Settings
    engine: sa.Engine
    client: TestClient

    def task_id(self, key: str) -> int:
        with self.engine.connect() as conn:
            task = queries.get_task(conn, key)
        assert task is not None
        return task.id

    def first_job(self, key: str) -> JobRow:
        with self.engine.connect() as conn:
            return queries.list_jobs(conn, task_id=self.task_id(key))[0]


@pytest.fixture
def bed(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: Callable[..., Path]
) -> Iterator[Bed]:
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url, api_token=TOKEN)
    repo_ops.add_repo(
        engine,
        "demo",
        make_repo(),
        repo_ops.RepoInput(stages=["development", "testing", "deploy-staging"]),
    )
    # A browser sends no token: the dashboard is read as the user reads it, with the session
    # cookie its link gave.
    client = api_client(settings, engine, browser=True, base_url=BASE_URL)
    yield Bed(settings, engine, client)
    client.close()


def record_pull(
    engine: sa.Engine, task_id: int, checks: tuple[pulls.PullCheck, ...], url: str
) -> None:
    """The task's pull request as a landing reads it: its checks, one review."""
    seen = pulls.PullSeen(
        number=7,
        url=url,
        head_sha="a" * 40,
        state="open",
        checks=checks,
        reviews=(pulls.PullReview(11, "reviewer", "APPROVED", "a" * 40),),
    )
    with engine.begin() as conn:
        pulls.record_pull(conn, task_id, seen, now=time.time())


def test_a_link_python_cannot_parse_does_not_take_the_task_page_down(bed: Bed) -> None:
    """A commit status's ``target_url`` is whatever the code that posted it said: an agent's
    workflow on its branch can post ``http://[::1`` (or a host NFKC folds into a slash).
    The task page showed it as a link through ``urlsplit``, which raises on those: every
    view of the task (page, summary poll) answered 500, so the user saw nothing of it."""
    key = task_ops.add_task(
        bed.engine,
        bed.settings,
        "demo",
        "a task",
        origin=task_ops.Origin(requester="someone", issue=3, url="https://[not-an-address]/"),
    ).task.key
    unparsable = ("http://[::1", "https://ci.example\uff0fevil", "https://[x]/")
    checks = tuple(
        pulls.PullCheck(f"check-{n}", "failure", "1 test failed", True, url)
        for n, url in enumerate(unparsable)
    )
    record_pull(bed.engine, bed.task_id(key), checks, url="http://[::1/pull/7")
    for path in (f"/ui/tasks/{key}", f"/ui/tasks/{key}/summary"):
        r = bed.client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        page = Page.of(r.text)
        # Each check is still named, with its state; none of the addresses is a link.
        for n in range(len(unparsable)):
            assert f"check-{n}" in page.text
        assert not [h for h in page.hrefs if not h.startswith("/")], page.hrefs
        assert "issue #3" not in page.text
        assert "pull request #7" in page.text


# Markup an agent writes, each trying another way into the page: an element, a way out of
# an attribute or a <pre>/<title>, htmx attributes that would send a mutation, a link, a
# style, a fake verdict badge, template syntax, and the terminal's own escapes.
PAYLOADS = (
    "<script>fetch('/pause',{method:'POST'})</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(2)>',
    "' onmouseover='alert(3)",
    '<div hx-post="/tasks/DEMO-1/approve" hx-trigger="load">approve</div>',
    '<a href="javascript:alert(4)">details</a>',
    '<span class="badge done" data-forged="1">PASS</span>',
    "<style>body{display:none}</style>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    "</pre></title></textarea><iframe srcdoc=x></iframe>",
    "{{ 7*7 }} {% if 1 %}jinja{% endif %}",
)
TERMINAL = "\x1b[2K\rPASS \x1b]8;;javascript:alert(5)\x07link\x1b]8;;\x07 \x00nul \x08\x08back"

# What the pages' own markup is: any other element or attribute came from someone's text.
# fmt: off
TAGS = frozenset({
    "html", "head", "meta", "title", "link", "script", "noscript", "body", "header", "a",
    "nav", "main", "div", "p", "span", "section", "h1", "h2", "h3", "article", "table",
    "caption", "tr", "th", "td", "ul", "li", "details", "summary", "pre", "b", "code",
})
ATTRS = frozenset({
    "lang", "charset", "name", "content", "href", "rel", "src", "defer", "class", "id",
    "title", "open", "http-equiv", "hx-get", "hx-trigger", "hx-swap", "data-stage",
    "data-state", "data-task", "data-agent", "data-verdict", "data-count", "data-kind",
    "data-occurrences",
})
# fmt: on
HX_GET = re.compile(
    r"/ui/(board(\?limit=\d+&offset=\d+)?|tasks/[A-Z][A-Z0-9]*-\d+/(summary|artifacts|log)"
    r"(\?job=\d+)?)"
)


def hostile_task(engine: sa.Engine, settings: Settings) -> str:
    """A task of repo ``demo`` whose every agent-written text is ``PAYLOADS``: title and
    body (a forge issue), reasons, history, an artifact and its keys, a forged report, its
    first job's log, an alert, and its pull request's checks. Blocked, its job running."""
    text = " | ".join(PAYLOADS)
    new = task_ops.add_task(
        engine,
        settings,
        "demo",
        PAYLOADS[0] + PAYLOADS[9],
        text,
        author='x" onmouseover="alert(6) <a@b.example>',
        origin=task_ops.Origin(requester=PAYLOADS[2], issue=3, url="https://forge.example/3"),
    )
    key, task_id, folder = new.task.key, new.task.id, new.folder
    with engine.connect() as conn:
        job = queries.list_jobs(conn, task_id=task_id)[0]
    report = f"---\nverdict: {PAYLOADS[6]}\n---\n\n{text}\n{PAYLOADS[1]}: {PAYLOADS[4]}\n"
    (folder / "13-test-report.md").write_text(report)
    (folder / "16-merge-report.md").write_text(f"merge_status: MERGED\n{text}\n")
    log = taskdir.run_log_path(folder, job.id, job.stage, job.agent)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"{text}\n{TERMINAL}\n")
    now = time.time()
    with engine.begin() as conn:
        jobq.record_artifacts(conn, job.id, {"13-test-report.md": taskdir.digest(report)})
        queries.update_job(conn, job.id, state="running", started_at=now, lease_owner="w")
        queries.update_task(conn, task_id, now=now, state="blocked", reasons=list(PAYLOADS))
        queries.insert_transition(
            conn, task_id=task_id, kind="block", from_stage="development",
            to_stage="development", from_state="active", to_state="blocked",
            reasons=list(PAYLOADS), actor=PAYLOADS[3], now=now,
        )  # fmt: skip
        alert_rows.insert_alert(
            conn, kind="job-crashed", severity="warning", message=text, reasons=[text],
            now=now, task_id=task_id,
        )  # fmt: skip
    checks = (
        pulls.PullCheck(PAYLOADS[6], "failure", text, True, "javascript:alert(7)"),
        pulls.PullCheck("ci", "success", PAYLOADS[4], False, "https://ci.example/1"),
    )
    record_pull(engine, task_id, checks, url="javascript:alert(8)")
    return key


def test_agent_text_reaches_every_page_as_text_only(bed: Bed) -> None:
    """Every page and fragment the browser loads, with the hostile task on it: only the
    templates' own elements and attributes, htmx only polling our own fragments, no link
    but ours and http(s) ones, and every payload readable as the text it is."""
    key = hostile_task(bed.engine, bed.settings)
    pages = [
        "/",
        "/ui/board",
        f"/ui/tasks/{key}",
        f"/ui/tasks/{key}/summary",
        f"/ui/tasks/{key}/artifacts",
        f"/ui/tasks/{key}/log",
        f"/ui/tasks/{key}?job={bed.first_job(key).id}",
        "/ui/tasks/" + PAYLOADS[1].replace("/", "%2F"),
    ]
    for path in pages:
        r = bed.client.get(path)
        assert r.status_code in (200, 404), (path, r.status_code)
        page = Page.of(r.text)
        for tag, attrs in page.elements:
            assert tag in TAGS, (path, tag, attrs)
            assert set(attrs) <= ATTRS, (path, tag, attrs)
            if tag == "script":
                assert attrs == {"src": "/static/htmx.min.js", "defer": ""}, (path, attrs)
            if "hx-get" in attrs:
                assert HX_GET.fullmatch(attrs["hx-get"]), (path, attrs)
                assert re.fullmatch(r"every \d+s", attrs["hx-trigger"]), (path, attrs)
            if tag == "meta" and "http-equiv" in attrs:
                assert attrs == {"http-equiv": "refresh", "content": "5"}, (path, attrs)
            if tag == "meta" and attrs.get("name") == "htmx-config":
                # htmx evaluates no attribute's code and runs no <script> it swaps in.
                config = json.loads(attrs["content"])
                assert (config["allowEval"], config["allowScriptTags"]) == (False, False)
            if tag == "link":
                assert attrs["href"] in ("/static/style.css", "data:,"), (path, attrs)
        for href in page.hrefs:
            ours = href == "#alerts" or (href.startswith("/") and not href.startswith("//"))
            assert ours or href.startswith(("https://forge.example/", "https://ci.example/")), (
                path,
                href,
            )
        # The CSP forbids inline script, styles and framing even if markup got in.
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp, csp
        assert "frame-ancestors 'none'" in csp, csp
        assert TOKEN not in r.text, path
    # The payloads were on the pages, as text: each one is read back whole.
    seen = {path: Page.of(bed.client.get(path).text).text for path in ("/", f"/ui/tasks/{key}")}
    task_page = " ".join(seen[f"/ui/tasks/{key}"].split())
    for payload in PAYLOADS:
        assert " ".join(payload.split()) in task_page, payload
    assert PAYLOADS[0] + PAYLOADS[9] in seen["/"]  # the card's title
    assert PAYLOADS[-1] in seen["/"]  # the blocked reason, in the card and the queue
    assert "merge_status" not in task_page  # the forged report: named, never shown
    # The terminal's escapes are characters in a <pre>: the CR starts a line, nothing is
    # overwritten, the OSC 8 "link" is no link.
    log = Page.of(bed.client.get(f"/ui/tasks/{key}/log").text)
    assert "PASS " in log.text
    assert "javascript:alert(5)" in log.text
    assert [t for t, _ in log.elements if t == "a"] == []


def test_no_page_a_browser_reads_holds_the_token(bed: Bed) -> None:
    """Script in the page, had it got in, would find no token to send: the dashboard, the
    API's reads, its schema and its docs never contain it, nor the session or its link."""
    key = hostile_task(bed.engine, bed.settings)
    job = bed.first_job(key).id
    for path in (
        "/", "/ui/board", f"/ui/tasks/{key}", f"/ui/tasks/{key}/log", "/status", "/queue",
        f"/tasks/{key}", f"/tasks/{key}/jobs/{job}/log", "/alerts", "/docs", "/openapi.json",
        "/metrics", "/repos",
    ):  # fmt: skip
        r = bed.client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert TOKEN not in r.text, path
        # Nor the dashboard's code, which the link gives a browser.
        assert login_code(TOKEN) not in r.text, path
    # The raw views of agent text are no HTML a browser would run.
    raw = bed.client.get(f"/tasks/{key}/artifacts/13-test-report.md")
    assert raw.headers["content-type"].startswith("text/markdown")
    assert raw.headers["x-content-type-options"] == "nosniff"
    log = bed.client.get(f"/tasks/{key}/jobs/{job}/log")
    assert log.headers["content-type"].startswith("text/plain")
    assert log.headers["x-content-type-options"] == "nosniff"


class Page(HTMLParser):
    """A page as a browser's parser reads it: its elements with their attributes, its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.chunks: list[str] = []

    @classmethod
    def of(cls, html: str) -> Page:
        page = cls()
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def hrefs(self) -> list[str]:
        return [a["href"] for tag, a in self.elements if tag == "a" and "href" in a]


def test_a_log_of_huge_lines_is_a_light_poll(bed: Bed) -> None:
    """A job prints 2 MB lines of `"` (each escapes to `&#34;`, 5 bytes): the log's tail the
    task page polls every 2 s stays small, each line cut with a note that says so (before:
    ~10 MB of HTML on every poll, and the tab crawled)."""
    new = task_ops.add_task(bed.engine, bed.settings, "demo", "huge", "")
    with bed.engine.connect() as conn:
        job = queries.list_jobs(conn, task_id=new.task.id)[0]
    log = taskdir.run_log_path(new.folder, job.id, job.stage, job.agent)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"start\n" + (b'"' * 2_000_000 + b"\n") * 3 + b"the last line\n")
    with bed.engine.begin() as conn:
        queries.update_job(conn, job.id, state="running", started_at=time.time(), lease_owner="w")
    page = bed.client.get(f"/ui/tasks/{new.task.key}/log")
    assert page.status_code == 200
    assert len(page.content) < 200_000, len(page.content)
    text = Page.of(page.text).text
    assert "the last line" in text
    assert "more characters of this line not shown" in text
