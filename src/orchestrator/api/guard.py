"""The guard in front of every request, decided before any route runs or reads a body.

1. **Host.** Only the names this server is reached by: 127.0.0.1, localhost, ::1, the bound
   address, and ``ORCH_API_ALLOWED_HOSTS``. A page on a name that an attacker's DNS points
   at 127.0.0.1 (DNS rebinding) sends its own name: 421, for reads too.
2. **Same origin** (mutations). A browser says where a request comes from: ``Origin`` must
   be this server's own (scheme, the Host, its port) and ``Sec-Fetch-Site``, when sent,
   ``same-origin`` or ``none``. A page on another port of 127.0.0.1 is another origin
   (though the same site): 403. Clients that are no browser send neither header.
3. **Token**: ``Authorization: Bearer <token>``, compared in constant time; 401. A read
   (GET, HEAD, OPTIONS) may show the dashboard's code instead, as the password of
   ``Authorization: Basic`` (``Policy.dashboard``: the dashboard's link holds it), and
   ``/health`` (``Policy.open_reads``) needs neither: a job's processes reach 127.0.0.1 too,
   and reads show every task's artifacts and logs. A read's 401 asks for Basic, so a
   browser asks its user, or takes the link's. Not a cookie: a browser sends 127.0.0.1's
   cookies to all its ports, so to a job listening on one; Basic credentials it keeps for
   one origin. ``--insecure-no-token`` drops this step only.
4. **Body cap**: a ``Content-Length`` over ``ORCH_API_MAX_BODY_BYTES`` is 413 at once; a
   body without one (chunked) is counted as the route reads it and cut off at the cap.

A signed path (``Policy.signed_paths``: a forge's webhook, which cannot send the token)
skips step 3 only: its route refuses any body whose signature is not right before it acts,
and its own, smaller cap replaces the one of step 4. Every other path stays as above.

Steps 1 to 3 and the length check answer before a byte of the body is read: a large body
sent without a token costs the server no memory. Every refusal is ``{"error": message}``
and closes the connection, so an unread body is not drained either.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.config import Settings, host_names

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A read's 401 asks for the dashboard's code too: a browser then asks its user for it, or
# answers with the one in the link it was opened with.
_READ_CHALLENGES = (
    ("www-authenticate", 'Basic realm="orch dashboard", charset="UTF-8"'),
    ("www-authenticate", "Bearer"),
)
_SINGLE_HEADERS = frozenset(
    {
        "host",
        "origin",
        "sec-fetch-site",
        "authorization",
        "content-length",
        "transfer-encoding",
        # A webhook's: the route must check the one signature the guard saw once.
        "x-hub-signature-256",
        "x-github-delivery",
        "x-github-event",
    }
)

# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then a port.
_HOST_HEADER_RE = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


@dataclass(frozen=True)
class Policy:
    """What the guard lets through. ``token`` None: mutations need no token (insecure)."""

    allowed_hosts: frozenset[str]
    token: str | None = field(repr=False)
    max_body_bytes: int
    # Said in a 401: where the token is ("ORCH_API_TOKEN", or "in <the file's path>").
    token_source: str = ""
    # Path -> body cap of the routes that check a signature over the body themselves (a
    # forge's webhook): no token asked, the cap theirs. Matched exactly, as routed.
    signed_paths: Mapping[str, int] = field(default_factory=dict)
    # The dashboard's code (``token.login_code``), Basic's password: it lets a read through,
    # as the token does. None: no code (reads need the token itself).
    dashboard: str | None = field(default=None, repr=False)
    # Reads that need neither: the liveness probe.
    open_reads: frozenset[str] = frozenset({"/health"})


@dataclass(frozen=True)
class Refusal:
    """An answer given instead of the route's."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Loopback names, the bound address (unless a wildcard), and ORCH_API_ALLOWED_HOSTS."""
    names = set(LOOPBACK_NAMES) | set(host_names(settings.api_allowed_hosts))
    bound = settings.api_host.strip().lower().strip("[]")
    if bound and not _unspecified(bound):
        names.add(bound)
    return frozenset(names)


def _unspecified(address: str) -> bool:
    """0.0.0.0 or ::, which a client never sends as a Host."""
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name of a Host header, lower case, without port or brackets; None if malformed."""
    m = _HOST_HEADER_RE.fullmatch(header.strip())
    if m is None:
        return None
    name = m.group(1).lower().removesuffix(".")
    if name.startswith("["):
        name = name[1:-1]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
        # The compressed form, as ORCH_API_ALLOWED_HOSTS and "::1" are written.
        return str(ipaddress.IPv6Address(name))
    return name


def _foreign_origin(headers: Mapping[str, str], host: str) -> str | None:
    """Why a mutation is not from this server's own pages, or None when it may be."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request may not change anything here (Sec-Fetch-Site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    scheme, sep, netloc = origin.partition("://")
    # A browser omits the default port in Origin and in Host alike, so the two compare as
    # they are written.
    if not sep or scheme not in ("http", "https") or netloc.lower() != host.strip().lower():
        shown = origin[:100]
        return f"Origin {shown} is not this server's: another origin may not change anything"
    return None


def decide(
    policy: Policy, method: str, headers: Mapping[str, str], path: str = ""
) -> Refusal | None:
    """The refusal of a request by its method, headers (names lower case) and path, or None.

    Pure: the guard below only applies it. Checked in this order: Host, origin, token
    (not for a signed path), declared length.
    """
    signed_cap = policy.signed_paths.get(path)
    host = headers.get("host")
    if host is None:
        return Refusal(400, "a Host header is needed")
    name = host_name(host)
    if name is None or name not in policy.allowed_hosts:
        # The names it does answer for are not listed: a rebinding page reads this answer.
        return Refusal(
            421,
            f"this server does not answer for Host {host[:100]!r} (a name it is reached "
            "by goes into ORCH_API_ALLOWED_HOSTS)",
        )
    where = f" (the token is {policy.token_source})" if policy.token_source else ""
    if method in READ_METHODS:
        auth = headers.get("authorization", "")
        if (
            policy.token is not None
            and path not in policy.open_reads
            and not _bearer_matches(auth, policy.token)
            and not _dashboard_matches(auth, policy.dashboard)
        ):
            return Refusal(
                401,
                f"reading needs Authorization: Bearer <token>{where}, or the dashboard's "
                "code: open the link `orch dashboard` prints",
                _READ_CHALLENGES,
            )
    else:
        why = _foreign_origin(headers, host)
        if why is not None:
            return Refusal(403, why)
        if (
            signed_cap is None
            and policy.token is not None
            and not _bearer_matches(headers.get("authorization", ""), policy.token)
        ):
            return Refusal(
                401,
                f"this needs Authorization: Bearer <token>{where}",
                (("www-authenticate", "Bearer"),),
            )
    cap = body_cap(policy, path)
    length = headers.get("content-length")
    if length is not None:
        if not (length.strip().isascii() and length.strip().isdigit()):
            return Refusal(400, "Content-Length is not a number")
        if int(length) > cap:
            return Refusal(413, _too_large(cap, signed=signed_cap is not None))
    return None


def body_cap(policy: Policy, path: str) -> int:
    """The largest body a request to ``path`` may send."""
    return policy.signed_paths.get(path, policy.max_body_bytes)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.strip().partition(" ")
    # Constant-time, on bytes: how much of a guess was right must not show in the timing,
    # and a header that is not ASCII must fail like any wrong token, not raise.
    right = hmac.compare_digest(given.strip().encode("latin-1"), token.encode())
    return scheme.lower() == "bearer" and right


def _dashboard_matches(header: str, code: str | None) -> bool:
    """Whether ``Authorization: Basic`` holds the dashboard's code as its password (any user
    name), compared in constant time; anything malformed is a wrong code."""
    if code is None:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(given.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        return False
    _user, sep, password = decoded.partition(b":")
    return hmac.compare_digest(password, code.encode()) and bool(sep)


def _too_large(cap: int, *, signed: bool = False) -> str:
    setting = "ORCH_GITHUB_WEBHOOK_MAX_BODY_BYTES" if signed else "ORCH_API_MAX_BODY_BYTES"
    return f"the body is larger than {cap} bytes ({setting})"


def _response(refusal: Refusal) -> tuple[Message, Message]:
    body = json.dumps({"error": refusal.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The body the client may still be sending is never read: end the connection.
        (b"connection", b"close"),
        *((k.encode(), v.encode()) for k, v in refusal.headers),
    ]
    start: Message = {"type": "http.response.start", "status": refusal.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class Guard:
    """ASGI middleware applying ``decide`` and the body cap (see the module's docstring)."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        refusal = None
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in headers and name in _SINGLE_HEADERS:
                # Two Hosts (or Origins...): the guard and the app might each read another.
                refusal = Refusal(400, f"{name} is given more than once")
            headers[name] = raw_value.decode("latin-1")
        path = scope.get("path", "")
        refusal = refusal or decide(self.policy, scope["method"], headers, path)
        if refusal is not None:
            for message in _response(refusal):
                await send(message)
            return
        cap = body_cap(self.policy, path)
        signed = path in self.policy.signed_paths
        await _Capped(self.app, cap, signed=signed)(scope, receive, send)


class _Capped:
    """One request whose body is counted as the app reads it, and cut off past ``cap``.

    Past the cap the guard answers 413 itself and tells the app the client is gone
    (``http.disconnect``), so the app stops reading; whatever the app then answers is
    dropped, the 413 having been sent.
    """

    def __init__(self, app: ASGIApp, cap: int, *, signed: bool = False) -> None:
        self.app = app
        self.cap = cap
        self.signed = signed
        self.read = 0
        self.started = False
        self.cut = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            if self.cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
                if self.read > self.cap:
                    self.cut = True
                    if not self.started:
                        self.started = True
                        too_large = _too_large(self.cap, signed=self.signed)
                        for out in _response(Refusal(413, too_large)):
                            await send(out)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            if self.cut:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
