"""How the fake GitHub answers HTTP: a threaded server on 127.0.0.1 whose requests are
either git's smart HTTP (``/{owner}/{repo}.git/...``, Basic auth, ``git http-backend``) or
the REST API (a token in ``Authorization``, faults first, then a route of
``fake_github_api``). Every request is recorded as a ``FakeRequest``."""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from orchestrator.forge import fake_github_api as api
from orchestrator.forge.fake_git_http import split_git_path
from orchestrator.forge.fake_github_json import error_body
from orchestrator.forge.fake_github_model import Json

if TYPE_CHECKING:
    from orchestrator.forge.fake_github import FakeGitHub

__all__ = ["FakeRequest", "FakeServer", "Fault", "FaultInjection"]

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID."
)
_RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
_REASONS = {
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class FakeRequest:
    """A request the fake received: ``kind`` is "api" or "git"; ``status`` its answer;
    ``body`` an API request's JSON body. Never its headers: they hold the token."""

    kind: str
    method: str
    path: str
    query: str
    status: int
    body: Json | None = None


@dataclass(frozen=True)
class Fault:
    """An answer the fake gives instead of the real one (``FakeGitHub.fail_next``...)."""

    status: int
    body: Json
    headers: tuple[tuple[str, str], ...] = ()


class FaultInjection:
    """The faults a test asks of the fake, served before anything else (as GitHub's edge
    answers a 503 or a rate limit before it looks at the token), and the token it takes.
    Faults apply to API requests only; git's smart HTTP is never failed on purpose."""

    def __init__(self, token: str, login: str) -> None:
        self.login = login
        self._token = token
        self._lock = threading.RLock()
        self._faults: deque[Fault] = deque()
        self._stalls: deque[float] = deque()

    @property
    def token(self) -> str:
        """The token the fake accepts now."""
        return self._token

    def set_token(self, token: str) -> None:
        """Accept only ``token`` from now on: the one a client holds becomes bad."""
        self._token = token

    def fail_next(
        self, n: int = 1, status: int = 503, *, retry_after_s: int | None = None, message: str = ""
    ) -> None:
        """Answer the next ``n`` API requests with ``status`` (and ``retry-after``)."""
        headers = (("retry-after", str(retry_after_s)),) if retry_after_s is not None else ()
        body = error_body(status, message or _REASONS.get(status, "Error"))
        self._faults.extend(Fault(status, body, headers) for _ in range(n))

    def secondary_rate_limit(self, n: int = 1, *, retry_after_s: int = 60) -> None:
        """The next ``n`` API requests hit GitHub's secondary rate limit (403, retry-after)."""
        body = error_body(403, SECONDARY_RATE_LIMIT_MESSAGE, _RATE_DOCS)
        headers = (("retry-after", str(retry_after_s)),)
        self._faults.extend(Fault(403, body, headers) for _ in range(n))

    def primary_rate_limit(self, n: int = 1, *, reset_in_s: int = 60) -> None:
        """The next ``n`` API requests find the hourly limit spent (403, remaining 0)."""
        reset = str(int(time.time()) + reset_in_s)
        body = error_body(403, f"API rate limit exceeded for user {self.login}.", _RATE_DOCS)
        headers = (("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset))
        self._faults.extend(Fault(403, body, headers) for _ in range(n))

    def stall_next(self, n: int = 1, *, seconds: float) -> None:
        """The next ``n`` API requests wait ``seconds`` before they answer (a timeout)."""
        self._stalls.extend([seconds] * n)

    def clear_faults(self) -> None:
        """Forget every fault and stall not served yet."""
        with self._lock:
            self._faults.clear()
            self._stalls.clear()

    def take_stall(self) -> float | None:
        """The next stall asked for (seconds), if any."""
        with self._lock:
            return self._stalls.popleft() if self._stalls else None

    def take_fault(self) -> Fault | None:
        """The next fault asked for, if any."""
        with self._lock:
            return self._faults.popleft() if self._faults else None


class FakeServer(ThreadingHTTPServer):
    """The fake's HTTP server on a free port of 127.0.0.1."""

    daemon_threads = True

    def __init__(self, fake: FakeGitHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: an answer is written as its head, then its body. On a kept-alive
    # connection Nagle held the body until the client ACKed the head, which the client
    # delays (~40 ms on Linux): every API call took ~44 ms instead of ~1 ms.
    disable_nagle_algorithm = True
    server: FakeServer

    def do_GET(self) -> None:
        serve(self.server.fake, self)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the fake keeps its own record (``FakeGitHub.requests``)."""


def serve(fake: FakeGitHub, h: BaseHTTPRequestHandler) -> None:
    """Answer one request."""
    parts = urlsplit(h.path)
    body = _read_body(h)
    split = split_git_path(parts.path)
    if split is not None:
        _serve_git(fake, h, split[0], split[1], parts.query, body)
        return
    status, payload, headers = _answer_api(fake, h, parts.path, parts.query, body)
    fake.requests.append(
        FakeRequest("api", h.command, parts.path, parts.query, status, _json_or_none(body))
    )
    data = b"" if payload is None else json.dumps(payload).encode()
    base_headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-GitHub-Request-Id", uuid.uuid4().hex[:16].upper()),
        ("X-GitHub-Media-Type", "github.v3; format=json"),
    ]
    if "x-ratelimit-remaining" not in {k.lower() for k, _ in headers}:
        base_headers += [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", str(int(time.time()) + 3600)),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-resource", "core"),
        ]
    _send(h, status, [*base_headers, *headers], data)


def _answer_api(
    fake: FakeGitHub, h: BaseHTTPRequestHandler, path: str, query: str, body: bytes
) -> tuple[int, Json | list[Json] | None, list[tuple[str, str]]]:
    # Faults come before authentication, as GitHub's edge answers a 503 or a rate limit
    # before it looks at the token.
    stall = fake.take_stall()
    if stall:
        time.sleep(stall)
    fault = fake.take_fault()
    if fault is not None:
        return fault.status, fault.body, list(fault.headers)
    given = h.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if not given:
        return 401, error_body(401, "Requires authentication"), []
    good = scheme.lower() in ("bearer", "token") and hmac.compare_digest(
        token.strip().encode(), fake.token.encode()
    )
    if not good:
        return 401, error_body(401, "Bad credentials"), []
    request = api.ApiRequest(h.command, path, dict(parse_qsl(query)), _json_or_none(body))
    with fake.changing():
        answer = api.dispatch(fake, request)
    return answer.status, answer.payload, list(answer.headers)


def _serve_git(
    fake: FakeGitHub, h: BaseHTTPRequestHandler, repo: str, rest: str, query: str, body: bytes
) -> None:
    user = git_user(fake.token, fake.login, h.headers.get("Authorization", ""))
    status = 200
    if repo not in fake.repos:
        status = 404
        _send(h, status, [("Content-Type", "text/plain")], b"Repository not found.\n")
    elif user is None:
        # The challenge makes git send the credentials of the URL (or say it has none).
        status = 401
        headers = [("WWW-Authenticate", 'Basic realm="GitHub"'), ("Content-Type", "text/plain")]
        _send(h, status, headers, b"Invalid username or token.\n")
    else:
        pushing = rest.endswith("/git-receive-pack")
        before = fake.bare.refs(repo) if pushing else {}
        cgi = fake.bare.http_backend(
            method=h.command,
            path_info=f"/{repo}.git{rest}",
            query=query,
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
            remote_user=user,
        )
        status = cgi.status
        if pushing:
            with fake.changing():
                fake.branches_moved(fake.repo(repo), before, user)
        _send(h, cgi.status, cgi.headers, cgi.body)
    fake.requests.append(FakeRequest("git", h.command, f"/{repo}.git{rest}", query, status))


def git_user(token: str, login: str, given: str) -> str | None:
    """The user a git request's Basic auth is (``login``), or None when refused. GitHub
    takes the token as the password (any user name, ``x-access-token`` by convention) or
    as the user name."""
    scheme, _, encoded = given.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    good = token.encode()
    if hmac.compare_digest(password.encode(), good) or hmac.compare_digest(user.encode(), good):
        return login
    return None


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    # git sends a large push with chunked transfer encoding, not a Content-Length.
    if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _json_or_none(body: bytes) -> Json | None:
    if not body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _send(
    h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    h.send_response(status)
    for name, value in headers:
        if name.lower() not in ("content-length", "connection"):
            h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    try:
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        # The client left (its timeout ran out during a stall): nobody to answer.
        h.close_connection = True
