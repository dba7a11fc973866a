"""The API is closed by default: one test per attack, on a real `orch serve` on 127.0.0.1.

- CSRF: a page on another origin (another port of 127.0.0.1) sends a body-less ``fetch``
  POST, as a browser sends it (``Origin``, ``Sec-Fetch-Site``), to pause the scheduler and
  cancel a task.
- DNS rebinding: a page whose name an attacker points at 127.0.0.1 reads tasks and logs;
  its requests carry its own name as ``Host``.
- The big body: hundreds of MB sent without a token, which the server must refuse before
  reading them (its peak memory, ``VmHWM`` of the server process, does not grow).

And what a user relies on: the token file (made by `orch init` or the first `orch serve`,
mode 0600, never printed), ``ORCH_API_TOKEN`` winning over it, the body cap with a token,
and ``--insecure-no-token`` (loopback only, a warning on every start, the other checks on).

The requests go through the stdlib's ``http.client`` and raw sockets, and the tests use
nothing of the package but ``ops``, ``config`` and ``store``, so they run against an older
checkout too (``PYTHONPATH=<old>/src``), where every one of them fails.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.api_client import basic

from orchestrator import demo, repo_ops, task_ops
from orchestrator.config import load_settings
from orchestrator.store import control, make_engine

pytestmark = pytest.mark.timeout(300)

SECRET = "the launch codes are 0000"
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(home: Path, db_url: str, **extra: str) -> dict[str, str]:
    """Ours without any ORCH_* (but the sandbox's read-only list), a home and a database."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
    }
    env.update(ORCH_HOME=str(home), ORCH_DATABASE_URL=db_url, **extra)
    return env


def orch_started(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`orch ARGS` started; ``finished`` waits for it. Commands that do not depend on each
    other can run side by side (each takes ~1 s of CPU, the machine has more than one)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """What ``subprocess.run(..., timeout=120)`` returns (or raises) for ``proc``."""
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def orch(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return finished(orch_started(*args, env=env, cwd=cwd))


class Reply:
    """One HTTP answer."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Served:
    """`orch serve --no-scheduler` as a user starts it, on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.tmp = tmp
        self._session: dict[str, str] | None = None
        self.log_path = tmp / f"serve-{self.port}.log"
        self.log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "orchestrator", "serve", "--no-scheduler", *args]
        argv += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def up(self) -> Served:
        """Once it answers /health; a start that fails fails the test."""
        deadline = time.monotonic() + 90
        while not self._up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"orch serve did not come up: {self.output()}")
            # Looked for often: a refused connection costs next to nothing, and most tests
            # here wait for a start or two.
            time.sleep(0.02)
        return self

    def link(self) -> str:
        """The dashboard's link, as `orch dashboard` prints it for this server."""
        shown = orch("dashboard", "--port", str(self.port), env=self.env, cwd=self.tmp)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.strip()

    def session(self) -> dict[str, str]:
        """The headers of a browser that opened the dashboard's link, as a user does: the
        link `orch dashboard` prints, whose user and code the browser answers the server's
        Basic challenge with."""
        if self._session is None:
            found = re.fullmatch(r"http://(\w+:\w+)@127\.0\.0\.1:\d+/", self.link())
            assert found is not None, self.link()
            r = self.request("GET", "/")
            assert r.status == 401, r.text
            assert 'Basic realm="orch dashboard"' in r.headers["www-authenticate"]
            self._session = {"Authorization": basic(found.group(1))}
        return self._session

    def _up(self) -> bool:
        try:
            return self.request("GET", "/health").status == 200
        except OSError:
            return False

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        """One request; a ``Host`` in ``headers`` is sent instead of the real one."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            headers: dict[str, str] = {}
            for name, value in resp.getheaders():
                # A header given twice (two challenges) reads as one, as RFC 9110 joins them.
                had = headers.get(name.lower())
                headers[name.lower()] = value if had is None else f"{had}, {value}"
            return Reply(resp.status, headers, resp.read())
        finally:
            conn.close()

    def peak_rss_kib(self) -> int:
        """The server's peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()

    def kill(self) -> None:
        """The end of a server whose stop no test checks: no clean stop to wait for."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=60)
        finally:
            self.log.close()


class Bed:
    """A home with a registered repo and one task (DEMO-1) whose body is a secret."""

    def __init__(self, tmp: Path, db_url: str, engine: sa.Engine, repo: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.db_url = db_url
        self.engine = engine
        self.settings = load_settings(home=self.home, database_url=db_url)
        repo_ops.add_repo(
            engine,
            "demo",
            repo,
            repo_ops.RepoInput(stages=["development", "testing", "deploy-staging"]),
        )
        self.key = self.add_task()
        self.servers: list[Served] = []

    def add_task(self) -> str:
        """Another task like DEMO-1, whose body is the secret; its key."""
        return task_ops.add_task(self.engine, self.settings, "demo", "a task", SECRET).task.key

    def serve(self, *args: str, **env: str) -> Served:
        """A server with ``args`` and ``env``, up."""
        return self.start(*args, **env).up()

    def start(self, *args: str, **env: str) -> Served:
        """A server started, not yet up: its ``up()`` waits (while the test does more)."""
        server = Served(self.tmp, server_env(self.home, self.db_url, **env), *args)
        self.servers.append(server)
        return server

    def token(self) -> str:
        """The token as a user finds it: in the home's api-token file."""
        return (self.home / "api-token").read_text().strip()

    def paused(self) -> bool:
        with self.engine.connect() as conn:
            return control.is_paused(conn)

    def state(self) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    sa.text("SELECT state FROM tasks WHERE key = :k"), {"k": self.key}
                ).scalar_one()
            )


@pytest.fixture
def bed(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: Callable[..., Path]
) -> Iterator[Bed]:
    b = Bed(tmp_path, migrated_db_url, engine, make_repo())
    yield b
    # The tests that check a clean stop call stop() themselves.
    for server in b.servers:
        server.kill()


# One `orch serve` with the default settings, for the tests whose requests must change
# nothing: it starts once (~1 s) instead of once per test. Each test gets a task of its own
# on it, and finds the scheduler not paused (else its set-up fails, saying a test before it
# paused it: the pause switch is the one state the tests share).


@pytest.fixture(scope="module")
def shared_bed(
    tmp_path_factory: pytest.TempPathFactory,
    module_migrated_db_url: str,
    module_make_repo: Callable[..., Path],
) -> Iterator[Bed]:
    engine = make_engine(module_migrated_db_url)
    tmp = tmp_path_factory.mktemp("shared-bed")
    b = Bed(tmp, module_migrated_db_url, engine, module_make_repo())
    try:
        yield b
    finally:
        for server in b.servers:
            server.kill()
        engine.dispose()


@pytest.fixture(scope="module")
def shared_server(shared_bed: Bed) -> Served:
    return shared_bed.serve()


@pytest.fixture
def quiet(shared_bed: Bed, shared_server: Served) -> tuple[Bed, Served]:
    """The shared server, and the shared bed with a task of this test's own."""
    assert not shared_bed.paused(), "a test on the shared server before this one paused it"
    bed = copy.copy(shared_bed)
    bed.key = bed.add_task()
    return bed, shared_server


def error_of(reply: Reply) -> str:
    body = reply.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


# ---- CSRF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_csrf_a_page_of_another_origin_changes_nothing(
    quiet: tuple[Bed, Served], site: str
) -> None:
    bed, server = quiet
    # What a browser sends for `fetch(url, {method: "POST", mode: "no-cors"})` from a page on
    # another port: 127.0.0.1 on another port is the same site but another origin.
    page = f"http://127.0.0.1:{free_port()}"
    browser = {"Origin": page, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors"}
    for path in ("/pause", f"/tasks/{bed.key}/cancel"):
        r = server.request("POST", path, headers=browser)
        assert r.status == 403, (path, r.status, r.text)
        assert "may not change anything" in error_of(r)
    assert not bed.paused()
    assert bed.state() == "active"
    # The token does not make another origin's request one of ours: a page cannot attach
    # it, and were it leaked, the browser's own headers still say where the request is from.
    with_token = {**browser, "Authorization": f"Bearer {bed.token()}"}
    assert server.request("POST", "/pause", headers=with_token).status == 403
    assert not bed.paused()


def test_mutations_need_the_token_and_the_servers_own_origin(bed: Bed) -> None:
    server = bed.serve()
    # No browser headers, no token (curl, a script, another local user): refused too.
    r = server.request("POST", "/pause")
    assert r.status == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert f"the token is in {bed.home / 'api-token'}" in error_of(r)
    assert server.request("POST", "/pause", headers={"Authorization": "Bearer nope"}).status == 401
    assert not bed.paused()
    # The dashboard's own origin, with the token: taken. So is a client without Origin.
    auth = {"Authorization": f"Bearer {bed.token()}"}
    own = {**auth, "Origin": server.origin, "Sec-Fetch-Site": "same-origin"}
    assert server.request("POST", "/pause", headers=own).json() == {"paused": True}
    assert bed.paused()
    r = server.request("POST", f"/tasks/{bed.key}/cancel", headers=auth)
    assert r.status == 200, r.text
    assert bed.state() == "cancelled"
    # An Origin of the right host on another port, or "null" (a sandboxed frame): refused.
    for origin in (f"http://127.0.0.1:{free_port()}", "null", f"http://localhost:{server.port}"):
        r = server.request("POST", "/resume", headers={**auth, "Origin": origin})
        assert r.status == 403, (origin, r.text)
    # Reads need the token too (before, every GET was open to any local process), or the
    # session the dashboard's link gives a browser; that session changes nothing.
    for path in (f"/tasks/{bed.key}", "/", "/metrics", f"/tasks/{bed.key}/artifacts/00-task.md"):
        assert server.request("GET", path).status == 401, path
        assert server.request("GET", path, headers=auth).status == 200, path
        assert server.request("GET", path, headers=server.session()).status == 200, path
    r = server.request("POST", "/resume", headers={**server.session(), "Origin": server.origin})
    assert r.status == 401, r.text
    assert server.request("GET", "/health").status == 200


# ---- DNS rebinding ------------------------------------------------------------------------


def test_dns_rebinding_a_foreign_host_is_not_answered(bed: Bed) -> None:
    server = bed.serve(ORCH_API_ALLOWED_HOSTS="orch.internal")
    reads = (
        "/tasks",
        f"/tasks/{bed.key}",
        f"/tasks/{bed.key}/artifacts/00-task.md",
        "/status",
        "/",
        f"/ui/tasks/{bed.key}",
        "/metrics",
    )
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example"):
        for path in reads:
            r = server.request("GET", path, headers={"Host": host})
            assert r.status == 421, (host, path, r.status, r.text[:200])
            assert SECRET not in r.text
            assert "ORCH_API_ALLOWED_HOSTS" in error_of(r)
            # The page reads this answer: it names none of the hosts that are allowed.
            assert "orch.internal" not in r.text
        r = server.request(
            "POST", "/pause", headers={"Host": host, "Authorization": f"Bearer {bed.token()}"}
        )
        assert r.status == 421, (host, r.text)
    assert not bed.paused()
    # The names this server is reached by, with any port, and the one allowed by name.
    for host in (
        f"127.0.0.1:{server.port}",
        f"localhost:{server.port}",
        f"[::1]:{server.port}",
        "localhost",
        f"orch.internal:{server.port}",
        "ORCH.INTERNAL",
    ):
        auth = {"Host": host, "Authorization": f"Bearer {bed.token()}"}
        r = server.request("GET", f"/tasks/{bed.key}", headers=auth)
        assert r.status == 200, (host, r.text)
        assert SECRET in r.json()["body"]


# ---- the big body -------------------------------------------------------------------------


def send_until_answered(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[str, int]:
    """Send ``head``, then ``chunks`` until the server answers or stops taking them.

    Returns the status line (empty when none came) and the body bytes sent.
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer came: no point sending more
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server closed the connection
            sent += len(chunk)
        got = b""
        try:
            while b"\r\n" not in got:
                part = sock.recv(65536)
                if not part:
                    break
                got += part
        except OSError:
            pass
    return got.split(b"\r\n", 1)[0].decode(errors="replace"), sent


def plain_body(size: int, piece: bytes) -> Iterator[bytes]:
    for _ in range(size // len(piece)):
        yield piece


def chunked_body(size: int, piece: bytes) -> Iterator[bytes]:
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    for _ in range(size // len(piece)):
        yield frame
    yield b"0\r\n\r\n"


@pytest.fixture(params=["file", "env"])
def big_body_target(request: pytest.FixtureRequest) -> tuple[Bed, Served]:
    """A server with the token of the home's file (the default: the shared server), or with
    one the operator set."""
    if request.param == "file":
        quiet: tuple[Bed, Served] = request.getfixturevalue("quiet")
        return quiet
    bed: Bed = request.getfixturevalue("bed")
    return bed, bed.serve(ORCH_API_TOKEN="an-operator-chosen-token")


def test_a_big_body_without_a_token_is_never_read(big_body_target: tuple[Bed, Served]) -> None:
    bed, server = big_body_target
    size = 256 * MiB
    piece = b"x" * MiB
    # Warm up: what a first request and a first answer to a POST load is not the body's.
    server.request("GET", "/tasks")
    server.request("POST", "/tasks", body=b"{}")
    for framing, body in (
        (f"Content-Length: {size}", plain_body(size, piece)),
        ("Transfer-Encoding: chunked", chunked_body(size, piece)),
    ):
        before = server.peak_rss_kib()
        head = (
            f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n"
        ).encode()
        status, sent = send_until_answered(server.port, head, body)
        grown_mib = (server.peak_rss_kib() - before) / 1024
        # Read, the body would be in memory at least once (256 MiB); refused first, it
        # costs nothing, and the client could not even send it all.
        assert grown_mib < 32, (
            f"{framing}: the server's peak memory grew by {grown_mib:.0f} MiB ({status})"
        )
        assert status.startswith("HTTP/1.1 401"), (framing, status, sent)
        assert sent < size, framing
    assert bed.state() == "active"


def test_the_body_cap_holds_with_the_token(bed: Bed) -> None:
    cap = 64 * 1024
    token = "an-operator-chosen-token"
    server = bed.serve(ORCH_API_MAX_BODY_BYTES=str(cap), ORCH_API_TOKEN=token)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    task = {"repo": "demo", "title": "small", "body": "fits"}
    r = server.request("POST", "/tasks", headers=auth, body=json.dumps(task).encode())
    assert r.status == 201, r.text
    # Declared too long: refused at once, before a byte is read.
    big = json.dumps({**task, "body": "y" * cap}).encode()
    r = server.request("POST", "/tasks", headers=auth, body=big)
    assert r.status == 413, r.text
    assert "ORCH_API_MAX_BODY_BYTES" in error_of(r)
    # Not declared (chunked): read up to the cap, then cut off.
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: {auth['Authorization']}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    status, _sent = send_until_answered(server.port, head, chunked_body(64 * MiB, b"z" * 4096))
    assert status.startswith("HTTP/1.1 413"), status
    with bed.engine.connect() as conn:
        titles = conn.execute(sa.text("SELECT title FROM tasks ORDER BY id")).scalars().all()
    assert titles == ["a task", "small"]


# ---- the token ----------------------------------------------------------------------------


def test_init_makes_a_private_token_that_serve_uses_and_never_prints(bed: Bed) -> None:
    env = server_env(bed.home, bed.db_url)
    init = orch("init", env=env, cwd=bed.tmp)
    assert init.returncode == 0, init.stderr
    path = bed.home / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = bed.token()
    assert len(token) >= 32
    assert str(path) in init.stdout
    assert token not in init.stdout + init.stderr
    # Idempotent: a second init keeps the token a client may already hold. The server
    # starts beside it: the token file is there, which neither of them is to change.
    again = orch_started("init", env=env, cwd=bed.tmp)
    server = bed.start()
    assert finished(again).returncode == 0
    assert bed.token() == token
    server.up()
    r = server.request("POST", "/pause", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, r.text
    assert server.stop() == 0
    assert str(path) in server.output()
    assert token not in server.output()


def test_serve_makes_the_token_when_missing_and_the_env_token_wins(bed: Bed) -> None:
    path = bed.home / "api-token"
    server = bed.serve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The second server (below) starts while this one is checked: the token file is made.
    second = bed.start(ORCH_API_TOKEN="an-operator-chosen-token")
    auth = {"Authorization": f"Bearer {bed.token()}"}
    assert server.request("POST", "/pause", headers=auth).status == 200
    assert server.stop() == 0
    assert bed.token() not in server.output()
    # ORCH_API_TOKEN wins: the file's token no longer opens anything.
    server = second.up()
    assert server.request("POST", "/resume", headers=auth).status == 401
    mine = {"Authorization": "Bearer an-operator-chosen-token"}
    assert server.request("POST", "/resume", headers=mine).status == 200
    assert "an-operator-chosen-token" not in server.output()


def serve_on_a_terminal(bed: Bed) -> tuple[subprocess.Popen[bytes], str]:
    """`orch serve` started from a terminal (its stderr a pseudo-terminal): the process, and
    what it wrote there until it said where the dashboard is."""
    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "orchestrator", "serve", "--no-scheduler", "--port", "0"]
    env = server_env(bed.home, bed.db_url)
    proc = subprocess.Popen(argv, env=env, cwd=bed.tmp, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        while b"the dashboard:" not in seen or not seen.endswith(b"\n"):
            assert proc.poll() is None, seen
            assert time.monotonic() < deadline, seen
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 65536)
    finally:
        os.close(master)
    return proc, seen.decode(errors="replace")


def test_the_dashboards_link_goes_to_a_terminal_never_to_a_log(bed: Bed) -> None:
    """The link reads all the dashboard shows for as long as the token lasts. Where `orch
    serve`'s stderr is kept (journald, which gives a user's own processes' lines to a
    journal file that user reads, on the system a sandboxed job sees read-only; nohup.out;
    a service's log file), whoever reads it later has the link: only a terminal gets it."""
    server = bed.serve()
    link = server.link()
    found = re.fullmatch(r"http://\w+:(\w{32,})@127\.0\.0\.1:\d+/", link)
    assert found is not None, link
    code = found.group(1)
    logged = server.output()
    assert code not in logged
    assert "`orch dashboard` prints it" in logged
    # From a terminal, the user gets the link at once, as before.
    proc, shown = serve_on_a_terminal(bed)
    try:
        assert code in shown, shown
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_token_file_others_can_read_is_refused(bed: Bed) -> None:
    path = bed.home / "api-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x" * 43 + "\n")
    path.chmod(0o644)
    try:
        proc = orch("serve", "--port", "0", env=server_env(bed.home, bed.db_url), cwd=bed.tmp)
    except subprocess.TimeoutExpired:
        pytest.fail("orch serve took the token others can read and kept serving")
    assert proc.returncode == 1, proc.stderr
    assert "can be read by others" in proc.stderr
    assert "x" * 43 not in proc.stderr


# ---- --insecure-no-token ------------------------------------------------------------------


def test_insecure_no_token_is_loopback_only_warned_and_keeps_the_other_checks(bed: Bed) -> None:
    env = server_env(bed.home, bed.db_url)
    # The two refusals and the server's start depend on nothing of each other: side by side.
    refusals = [
        orch_started(
            "serve", "--insecure-no-token", "--host", host, "--port", "0", env=env, cwd=bed.tmp
        )
        for host in ("0.0.0.0", "192.0.2.1")
    ]
    try:
        server = bed.serve("--insecure-no-token")
    finally:
        done = [finished(proc) for proc in refusals]
    for proc in done:
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert "loopback only" in proc.stderr
    assert "--insecure-no-token" in server.output()
    assert "WARNING" in server.output()
    assert server.request("POST", "/pause").json() == {"paused": True}
    browser = {"Origin": f"http://127.0.0.1:{free_port()}", "Sec-Fetch-Site": "same-site"}
    assert server.request("POST", "/resume", headers=browser).status == 403
    assert server.request("GET", "/tasks", headers={"Host": "evil.example"}).status == 421
    assert bed.paused()
    # A warning on every start, not only the first.
    assert server.stop() == 0
    again = bed.serve("--insecure-no-token")
    assert "--insecure-no-token" in again.output()


# ---- secrets a read may show ----------------------------------------------------------------
#
# An agent (or the suite it wrote, run by the test-runner) can reach 127.0.0.1 while `orch
# serve` runs. Reads need the token or the dashboard's session, which a job has neither of;
# and what the dashboard shows the user holds no credential of theirs either.

CREDENTIAL = "FAKE-credential-0123456789"


def reads_of(server: Served, *paths: str) -> dict[str, str]:
    """Each path's body as the dashboard reads it (its session), every read answered 200;
    and each refused to code on the machine that has neither the token nor the session."""
    out = {}
    session = server.session()
    for path in paths:
        r = server.request("GET", path)
        assert r.status == 401, (path, r.status, r.text)
        assert CREDENTIAL not in r.text
        r = server.request("GET", path, headers=session)
        assert r.status == 200, (path, r.status, r.text)
        out[path] = r.text
    return out


def test_a_deploy_log_read_without_the_token_shows_no_credential_the_deploy_got(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine
) -> None:
    # The user hands their deploy a credential under a name the masking rule cannot tell
    # is one (``--agent-env``: agents and the deploy get those variables). The deploy's log
    # is a read: another task's agent, or its suite, asks for it.
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo = demo.make_repo(tmp_path)
    got = tmp_path / "what-the-deploy-got"
    deploy = "import os, sys; open(sys.argv[1], 'w').write(os.environ['DEPLOY_AUTH'])"
    py = sys.executable
    repo_ops.add_repo(
        engine,
        "demo",
        repo,
        repo_ops.RepoInput(
            stages=["development", "testing", "deploy-staging", "deploy"],
            agents=["development=patch"],
            staging_cmd=f"{py} staging.py",
            deploy_cmd=f"{py} -c {shlex.quote(deploy)} {got}",
            agent_env=["DEPLOY_AUTH"],
        ),
    )
    patch = demo.make_patches(repo, demo.TASKS[0])[0]
    key = task_ops.add_task(engine, settings, "demo", "subtract", "sub()", patch).task.key
    env = server_env(settings.home, migrated_db_url, DEPLOY_AUTH=CREDENTIAL)
    ran = orch("run", "--until-idle", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    # The deploy ran, with the credential.
    assert got.read_text() == CREDENTIAL
    with engine.connect() as conn:
        job = conn.execute(
            sa.text("SELECT id FROM jobs WHERE agent = 'deploy-finalizer' AND log_path IS NOT NULL")
        ).scalar_one()
    server = Served(tmp_path, env, "--no-scheduler").up()
    try:
        bodies = reads_of(
            server,
            f"/tasks/{key}/jobs/{job}/log?lines=10000",
            f"/ui/tasks/{key}/log?job={job}",
            f"/ui/tasks/{key}?job={job}",
            f"/tasks/{key}/artifacts/17-deploy-log.md",
            f"/tasks/{key}",
        )
    finally:
        server.kill()
    for path, body in bodies.items():
        assert CREDENTIAL not in body, path
    # The log still says the deploy had the variable, masked.
    assert "DEPLOY_AUTH=****" in bodies[f"/tasks/{key}/jobs/{job}/log?lines=10000"]


SPY = """\
import base64, json, os, subprocess, sys, urllib.error, urllib.parse, urllib.request

port, victim, src = sys.argv[1], sys.argv[2], sys.argv[3]
seen = []

def get(path, headers):
    request = urllib.request.Request("http://127.0.0.1:" + port + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return [r.status, r.read().decode(errors="replace")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode(errors="replace")]

for path in ("/tasks/" + victim, "/tasks", "/tasks/" + victim + "/artifacts/00-task.md",
             "/status", "/", "/ui/tasks/" + victim, "/metrics", "/login"):
    seen.append([path, *get(path, {})])
# The dashboard's link, as `orch dashboard` prints it in here, sent as a browser sends it.
shown = subprocess.run([sys.executable, "-m", "orchestrator", "dashboard", "--port", port],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src})
link = urllib.parse.urlsplit(shown.stdout.strip())
basic = base64.b64encode(f"{link.username}:{link.password}".encode()).decode()
seen.append(["orch dashboard: " + shown.stdout.strip() + shown.stderr[-300:],
             *get("/tasks/" + victim, {"Authorization": "Basic " + basic})])
print("SPY " + json.dumps(seen))
out = os.path.join(os.environ["ORCH_ARTIFACT_DIR"], "10-dev-report.md")
open(out, "w").write("---\\ndev_status: DONE\\n---\\nlooked around\\n")
"""


def test_a_job_reads_nothing_of_the_api_without_the_token(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: Callable[..., Path]
) -> None:
    """The attacker is a task's own agent: in the sandbox, with the network shared (the
    default: an agent must reach its model), it reaches `orch serve` on 127.0.0.1 as any
    local program does, and asks for another task's text, the board and every read it
    knows. Before, every GET answered 200: another task's body, artifacts and job logs.
    It runs `orch dashboard` too (the orchestrator's source readable in the sandbox): with
    the orchestrator's home hidden, what it prints is the link of a token of its own."""
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo = make_repo()
    repo_ops.add_repo(
        engine,
        "demo",
        repo,
        repo_ops.RepoInput(stages=["development", "testing", "deploy-staging"]),
    )
    victim = task_ops.add_task(engine, settings, "demo", "a task", SECRET).task.key
    python, src = sys.executable, Path(repo_ops.__file__).resolve().parents[1]
    readable = ",".join(filter(None, (os.environ.get("ORCH_SANDBOX_RO"), str(src))))
    env = server_env(settings.home, migrated_db_url, ORCH_SANDBOX_RO=readable)
    server = Served(tmp_path, env).up()
    try:
        (repo / "spy.py").write_text(SPY, encoding="utf-8")
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
        subprocess.run([*git, "add", "spy.py"], check=True, capture_output=True)
        subprocess.run([*git, "commit", "-qm", "spy"], check=True, capture_output=True)
        repo_ops.set_repo(
            engine,
            "demo",
            repo_ops.RepoInput(
                agents=[f"development=command:{python} spy.py {server.port} {victim} {src}"]
            ),
        )
        spy = task_ops.add_task(engine, settings, "demo", "look around", "x").task.key
        runs = settings.home / "tasks" / spy / "runs"

        def spied() -> re.Match[str] | None:
            text = "".join(p.read_text() for p in sorted(runs.glob("*.log")))
            return re.search(r"^SPY (.*)$", text, re.MULTILINE)

        # The scheduler runs until the spy's job has run; what comes after is not this test's.
        scheduler = orch_started("run", env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 90
            while spied() is None and scheduler.poll() is None:
                assert time.monotonic() < deadline, "the spy did not run"
                time.sleep(0.05)
        finally:
            scheduler.terminate()
            finished(scheduler)
    finally:
        server.kill()
    found = spied()
    assert found is not None, "the spy did not run"
    seen = json.loads(found.group(1))
    assert len(seen) == 9
    # `orch dashboard` ran and printed a link, whose code reads nothing here.
    assert re.match(r"orch dashboard: http://orch:\w+@127\.0\.0\.1:\d+/", seen[-1][0]), seen[-1]
    for path, status, body in seen:
        assert SECRET not in body, path
        assert status == 401, (path, status, body)
        assert "orch dashboard" in body


def test_a_remote_with_a_token_in_its_url_is_not_read_back(bed: Bed) -> None:
    # `orch repo set --remote https://x-access-token:<token>@host/o/r.git`: git takes a URL
    # as a remote, and the token in it is how many push to a forge.
    remote = f"https://x-access-token:{CREDENTIAL}@127.0.0.1:9/acme/demo.git"
    repo_ops.set_repo(bed.engine, "demo", repo_ops.RepoInput(remote=remote))
    server = bed.serve()
    bodies = reads_of(server, "/repos", "/repos/demo", "/status", "/openapi.json")
    for path, body in bodies.items():
        assert CREDENTIAL not in body, path
    # The remote is still shown: where it is, without who it is.
    shown = json.loads(bodies["/repos/demo"])["remote"]
    assert shown == "https://***@127.0.0.1:9/acme/demo.git"


def test_a_database_password_given_as_a_query_parameter_is_masked_in_status(
    tmp_path: Path, migrated_db_url: str
) -> None:
    # libpq (and so SQLAlchemy's psycopg) takes the password as a query parameter too:
    # `postgresql://app@db/orch?password=...`. On PostgreSQL the test moves the real
    # password there; SQLite ignores the parameter.
    url = sa.make_url(migrated_db_url)
    password = url.password or CREDENTIAL
    in_query = url.set(password=None).update_query_dict({"password": password})
    db_url = in_query.render_as_string(hide_password=False)
    home = tmp_path / "home"
    server = Served(tmp_path, server_env(home, db_url), "--no-scheduler").up()
    try:
        bodies = reads_of(server, "/status", "/metrics")
        bodies["/health"] = server.request("GET", "/health").text
    finally:
        server.kill()
    for path, body in bodies.items():
        assert password not in body, path
    status = json.loads(bodies["/status"])
    for shown in (status["settings"]["database_url"], status["settings"]["effective_database_url"]):
        assert "password=***" in shown, shown
        assert password not in shown, shown


# Rows of docs/security.md's attack table (rendered by test_security_doc.py).
HERE = "tests/integration/test_api_security.py"
DEFENDED = [
    {
        "attack": "a page on another port of 127.0.0.1 sends a body-less `fetch` POST to "
        "`/pause` and `/tasks/<KEY>/cancel` (no token was set: the old default)",
        "before": "200: the scheduler paused and the task was cancelled",
        "now": "403 (the `Origin` is not the server's own; `Sec-Fetch-Site: cross-site`), "
        "with or without the token; every mutation needs the token, made by `orch init` or "
        "the first `orch serve` (`<ORCH_HOME>/api-token`, mode 0600)",
        "test": HERE,
    },
    {
        "attack": "a task's agent, in the sandbox with the network shared (the default: it "
        "must reach its model), asks `orch serve` on 127.0.0.1 for another task's text, "
        "artifacts, task page, the board, `/status` and `/metrics`",
        "before": "200 for every read: another task's body, artifacts and job logs",
        "now": "401 for every request but `/health` without the token, which the sandbox "
        "hides; a browser reads with the code the dashboard's link gives (`orch "
        "dashboard`), which changes nothing",
        "test": HERE,
    },
    {
        "attack": "a job reads `orch serve`'s stderr where it is kept (journald's journal "
        "file of the user's own processes, on the read-only system the sandbox shows; "
        "`nohup.out`; a service's log) for the dashboard's link, then reads every task",
        "before": "the link (`/login?code=...`) was written there on every start: a session "
        "that reads everything for as long as the token lasts",
        "now": "the link goes to a terminal only; elsewhere `orch serve` says `orch "
        "dashboard` prints it",
        "test": HERE,
    },
    {
        "attack": "a job listens on another port of 127.0.0.1 and the user's browser, which "
        "has opened the dashboard, is sent there (a link in a task, a check or a log; any "
        "page that navigates on, even of another site); the job reads the API with "
        "whatever the browser sent it",
        "before": "the browser sent it the dashboard's session cookie (a browser sends "
        "127.0.0.1's cookies to all its ports; `SameSite=Lax` lets a navigation from "
        "another site take it too): 200 for every read, another task's body included",
        "now": "no cookie: the dashboard's code is HTTP Basic's password, which the browser "
        "keeps for the dashboard's origin alone; the job got nothing that reads (401)",
        "test": "tests/acceptance/test_dashboard_browser.py",
    },
    {
        "attack": "DNS rebinding: requests with `Host: evil.example` read `/tasks` and logs",
        "before": "200 with every task",
        "now": "421 for any Host but 127.0.0.1, localhost, ::1, the bound address and "
        "`ORCH_API_ALLOWED_HOSTS`, reads included",
        "test": HERE,
    },
    {
        "attack": "a 256 MiB body to a mutation, without the token",
        "before": "read whole before the 401/422: the server's peak memory grew by 513 MiB",
        "now": "401 before a byte of the body is read (peak memory 88.7 → 89.1 MB); bodies "
        "over `ORCH_API_MAX_BODY_BYTES` are 413, by length or while a chunked body streams",
        "test": HERE,
    },
    {
        "attack": "code run on 127.0.0.1 reads another task's deploy log without the token "
        "(`GET /tasks/<KEY>/jobs/<id>/log`, the task page): the deploy got the user's "
        "credential under a `--agent-env` name the masking rule does not know (`DEPLOY_AUTH`)",
        "before": "the log's header showed `DEPLOY_AUTH=<the credential>` (so did a "
        "`command:` agent's log)",
        "now": "`DEPLOY_AUTH=****`: every job given the repo's `--agent-env` variables masks "
        "them in its log, as LLM jobs did",
        "test": HERE,
    },
    {
        "attack": "a read without the token of a repo whose `--remote` is a URL with a token "
        "in it (`https://x-access-token:<token>@host/o/r.git`)",
        "before": "`GET /repos` showed the URL whole, and so did the fetch's and the push's "
        "reasons in the task's history",
        "now": "`https://***@host/o/r.git` in `/repos`, `orch repo show` and every reason",
        "test": HERE,
    },
    {
        "attack": "`GET /status` without the token, the database URL holding its password as "
        "a query parameter (`postgresql://app@db/orch?password=...`, which libpq takes)",
        "before": "the URL whole in `settings.database_url` and `effective_database_url`",
        "now": "`?password=***`: a query parameter with a secret's name is masked as the "
        "URL's password is",
        "test": HERE,
    },
]
