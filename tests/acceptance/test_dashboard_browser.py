"""The dashboard in a real browser: Playwright driving Debian's Chromium, headless.

A task moves while the board is open: its card changes column by itself (htmx polling),
then the task page shows its history, an artifact and the log. The fake agents are held and
released by the test, so it decides when the task moves. No `playwright install`: the
browser is the distribution's /usr/bin/chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
from api_server import FakeRepo, Server, base_env, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from tests.integration.test_dashboard_attacks import hostile_task

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# How long the page may take to show a change: several of its 2 s polls.
SEEN_MS = 30_000
# The page's poll interval (api/dashboard.py POLL_S), in the page's milliseconds.
POLL_MS = 2_000

pytestmark = pytest.mark.timeout(300)


# One Chromium for the module (each launch is ~0.5 s); each test opens its own context,
# so no cookie, storage or page of one test reaches the other.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def fake(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> Iterator[FakeRepo]:
    repo = FakeRepo(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}), plan={})
    yield repo
    repo.close()


def test_a_card_moves_and_the_task_page_reads_an_artifact(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo, browser: Browser
) -> None:
    fake.set_plan({"*:development:*": {"hold": True}, "*:testing:*": {"hold": True}})
    server = Server(tmp_path, base_env(fake.home, migrated_db_url))
    try:
        page = browser.new_page()
        # The page's own timers under Playwright's clock: time flows as usual, and once the
        # server has changed, `poll_now` jumps the page a poll interval ahead so htmx's own
        # `every 2s` poll fires at once instead of up to 2 s later (four such waits were
        # most of this test's time). The page still refreshes itself; nothing is reloaded.
        page.clock.install()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(server.dashboard_link())
        expect(page).to_have_url(f"{server.url}/")
        expect(page.locator("section.column[data-stage=development] h2")).to_contain_text(
            "development"
        )
        # Filed after the page loaded: the board shows it without a reload.
        key = server.client.post(
            "/tasks", json={"repo": "demo", "title": "Move across the board"}
        ).json()["key"]
        wait_for(lambda: fake.started(key, "development"), 60, "development starts")
        poll_now(page)
        dev_card = page.locator(f"section.column[data-stage=development] article#card-{key}")
        expect(dev_card).to_be_visible(timeout=SEEN_MS)
        expect(dev_card).to_contain_text("Move across the board")
        expect(dev_card).to_contain_text("running")

        fake.release(key, "development")
        wait_for(lambda: fake.started(key, "testing"), 60, "testing starts")
        poll_now(page)
        test_card = page.locator(f"section.column[data-stage=testing] article#card-{key}")
        expect(test_card).to_be_visible(timeout=SEEN_MS)
        expect(dev_card).to_have_count(0, timeout=SEEN_MS)

        # The task page: history with reasons, the development report, the log.
        test_card.locator(f"a[href='/ui/tasks/{key}']").click()
        expect(page).to_have_url(f"{server.url}/ui/tasks/{key}")
        expect(page.locator("#task-stage")).to_have_text("testing")
        expect(page.locator("#history")).to_contain_text("advance")
        expect(page.locator("#history")).to_contain_text("task created at stage development")
        report = page.locator('details[id="artifact-10-dev-report.md"]')
        expect(report).to_contain_text("dev_status")
        expect(report).to_contain_text("DONE")
        expect(page.locator("#log")).to_contain_text("testing")

        # It keeps refreshing itself: testing ends, the stage shown moves on.
        fake.release(key, "testing")
        wait_for(lambda: fake.started(key, "deploy-staging"), 60, "deploy-staging starts")
        poll_now(page)
        expect(page.locator("#task-stage")).not_to_have_text("testing", timeout=SEEN_MS * 2)
        # The log tail follows the task to its next job.
        expect(page.locator("#log h2")).to_contain_text("deploy-staging", timeout=SEEN_MS * 2)
        assert errors == [], errors
        page.close()
    finally:
        assert server.stop() == 0, server.output()


def poll_now(page: Page, ms: int = POLL_MS) -> None:
    """The page's next htmx poll, now: its clock a poll interval ahead (the timers due
    fire once, and time goes on flowing). The server has changed before this is called;
    should the answer still miss, the page's next poll of its own picks it up."""
    page.clock.fast_forward(ms)


def test_the_board_reads_without_javascript(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo, browser: Browser
) -> None:
    server = Server(tmp_path, base_env(fake.home, migrated_db_url), scheduler=False)
    try:
        key = server.client.post(
            "/tasks", json={"repo": "demo", "title": "<b>not bold</b>"}
        ).json()["key"]
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(server.dashboard_link())
        expect(page).to_have_url(f"{server.url}/")
        item = page.locator(f"section.column[data-stage=development] article#card-{key}")
        expect(item).to_contain_text("<b>not bold</b>")
        assert page.locator("article b").count() == 0
        page.goto(f"{server.url}/ui/tasks/{key}")
        expect(page.locator('details[id="artifact-00-task.md"]')).to_contain_text(f"task: {key}")
        context.close()
    finally:
        assert server.stop() == 0, server.output()


def test_an_agents_markup_runs_nothing_in_the_browser(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo, browser: Browser
) -> None:
    """The hostile task of tests/integration/test_dashboard_attacks.py, in Chromium: its
    script, handlers, htmx attributes, links, styles and refresh in every text the board
    and the task page show, through several polls of each fragment and a hover over the
    agent's text. No dialog, no CSP refusal (nothing inline even reached the page), no
    request but the page's own GETs, the task still blocked and the scheduler not paused."""
    server = Server(tmp_path, base_env(fake.home, migrated_db_url), scheduler=False)
    try:
        key = hostile_task(fake.engine, fake.settings)
        page = browser.new_page()
        page.clock.install()
        seen: list[str] = []
        page.on("dialog", lambda d: (seen.append(f"dialog {d.message}"), d.dismiss()))
        page.on("pageerror", lambda exc: seen.append(f"error {exc}"))
        page.on(
            "console", lambda m: seen.append(f"console {m.text}") if m.type == "error" else None
        )
        own = f"{server.url}/"

        def ours(url: str) -> bool:
            # The server's origin; the link's user and code (Basic's) are no other place.
            split = urlsplit(url)
            return f"{split.scheme}://{split.hostname}:{split.port}/" == own

        requests: list[tuple[str, str]] = []
        page.on("request", lambda r: requests.append((r.method, r.url)))
        # Nothing leaves this machine, whatever got into the page.
        page.route(lambda url: not ours(url), lambda route: route.abort())

        def nothing_ran() -> None:
            foreign = [(m, u) for m, u in requests if m != "GET" or not ours(u)]
            assert (seen, foreign) == ([], []), (seen, foreign)

        page.goto(server.dashboard_link())
        expect(page).to_have_url(f"{server.url}/")
        nothing_ran()
        card = page.locator(f"article#card-{key}")
        expect(card.locator(".title")).to_contain_text("<script>fetch('/pause'")
        with page.expect_response(lambda r: ours(r.url) and urlsplit(r.url).path == "/ui/board"):
            poll_now(page)
        card.locator(".reason").hover()
        nothing_ran()

        page.goto(f"{server.url}/ui/tasks/{key}")
        nothing_ran()
        expect(page.locator("h1 .title")).to_contain_text("</title></textarea><iframe")
        expect(page.locator("#task-requester")).to_have_text('"><svg onload=alert(2)>')
        expect(page.locator("#log pre")).to_contain_text("PASS")
        keys = page.locator('details[id="artifact-13-test-report.md"] table.keys')
        expect(keys).to_contain_text('<span class="badge done" data-forged="1">PASS</span>')
        for fragment in ("summary", "log", "artifacts"):
            with page.expect_response(lambda r, f=fragment: r.url.endswith(f"/{f}")):
                poll_now(page, 3 * POLL_MS)
        for spot in ("#task-author", "#task-requester", "h1 .title", "#log pre", "#history"):
            page.locator(spot).first.hover()
        # The payloads' links are text: the check named by markup links nowhere, and the
        # pull request's javascript: address is no link at all.
        assert page.locator("a[href^='javascript:' i]").count() == 0
        assert page.locator("iframe, svg, img, style, form, [onerror], [hx-post]").count() == 0
        nothing_ran()
        page.close()

        assert server.client.get(f"/tasks/{key}").json()["state"] == "blocked"
        assert server.client.get("/status").json()["kill_switches"]["paused"] is False
    finally:
        assert server.stop() == 0, server.output()


class _Listener(http.server.BaseHTTPRequestHandler):
    """A page on another port of 127.0.0.1: a job's (the network shared, it may listen
    there), which writes down the headers of every request the browser sends it."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"<p>a page of a job</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_another_port_of_127_0_0_1_gets_nothing_that_reads(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo, browser: Browser
) -> None:
    """A browser sends the cookies of 127.0.0.1 to each of its ports: a job that listens on
    one, and whose page the user opens (a link in a task, a check, a log; or any page that
    sends the browser there), got the dashboard's session with the request, and read every
    task with it. What lets this browser read must stay with the dashboard's origin."""
    server = Server(tmp_path, base_env(fake.home, migrated_db_url), scheduler=False)
    job = http.server.HTTPServer(("127.0.0.1", 0), _Listener)
    threading.Thread(target=job.serve_forever, name="job-page", daemon=True).start()
    try:
        key = server.client.post("/tasks", json={"repo": "demo", "title": "secret"}).json()["key"]
        page = browser.new_page()
        page.goto(server.dashboard_link())
        expect(page.locator(f"article#card-{key}")).to_contain_text("secret")
        _Listener.seen.clear()
        page.goto(f"http://127.0.0.1:{job.server_address[1]}/")
        expect(page.locator("p")).to_have_text("a page of a job")
        assert _Listener.seen, "the job's page got no request"
        # Whatever the browser sent the job, the job sends on to the API: it reads nothing.
        for sent in _Listener.seen:
            kept = {k: v for k, v in sent.items() if k in ("cookie", "authorization")}
            r = httpx.get(f"{server.url}/tasks/{key}", headers=kept)
            assert r.status_code == 401, (kept, r.text[:200])
        # The browser still reads on the dashboard's own origin, the link not opened again.
        page.goto(f"{server.url}/ui/tasks/{key}")
        expect(page.locator("h1 .title")).to_contain_text("secret")
        page.close()
    finally:
        job.shutdown()
        job.server_close()
        assert server.stop() == 0, server.output()
