"""Loopback HTTP: the one way a runner's check reaches a URL.

``parse_loopback_url`` accepts a URL only when its host is this machine (a loopback
address, or ``localhost`` pinned to 127.0.0.1), with no credentials and printable ASCII
only; ``http_get`` connects to exactly the host it checked (no proxy, no redirect, no second
URL parser) and returns network trouble as a value. The test-runner's smoke check, the
post-deploy monitor, self-hosted staging and the checks of ``orch repo`` options use them.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Bytes of an HTTP body read by a smoke or health check.
_MAX_BODY_BYTES = 1_000_000
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class LoopbackURL:
    """A URL checked to point at this machine; connect to ``host``:``port`` only."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str


def parse_loopback_url(
    url: str, *, schemes: Sequence[str] = ("http",)
) -> tuple[LoopbackURL | None, str]:
    """(the parsed URL, "") when ``url`` is a loopback URL, else (None, why it is refused).

    Only the host parsed here is ever connected to (no proxy, no redirect, no second URL
    parser), so what was checked is what is reached.
    """
    # Printable ASCII only: http.client sends the target as ASCII and raises (not an OSError)
    # on anything else, so a URL with a non-ASCII path would crash the probe, not fail it.
    if not isinstance(url, str) or not url or not all(32 < ord(c) < 127 for c in url):
        return None, (
            f"refused URL {url!r}: empty, or holds whitespace, control or non-ASCII characters "
            "(percent-encode them)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return None, f"refused URL {url}: {exc}"
    if parts.scheme not in schemes:
        return None, f"refused URL {url}: scheme must be one of {', '.join(schemes)}"
    if "@" in parts.netloc:
        return None, f"refused URL {url}: credentials in the URL are not accepted"
    host = (parts.hostname or "").lower()
    if not _is_loopback(host):
        return None, f"refused URL {url}: only loopback hosts (127.0.0.1, localhost) are allowed"
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # "localhost" is pinned to 127.0.0.1: no resolver can send it elsewhere. The Host header
    # still says localhost, for servers that check it.
    connect = "127.0.0.1" if host in _LOOPBACK_NAMES else host
    shown = f"[{host}]" if ":" in host else host
    return LoopbackURL(url, parts.scheme, connect, port, target, f"{shown}:{port}"), ""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Probe:
    """One HTTP GET: its status code (None when no response), latency, body, or error."""

    code: int | None
    latency_s: float
    body: bytes = b""
    error: str | None = None


def http_get(url: LoopbackURL, timeout_s: float, headers: Mapping[str, str] | None = None) -> Probe:
    """GET a checked loopback URL, with ``headers``. Network trouble is a value (``error``),
    not an exception."""
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.host, url.port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(url.host, url.port, timeout=timeout_s)
    t0 = time.monotonic()
    try:
        sent = {"Host": url.host_header, "Accept": "*/*", **(headers or {})}
        conn.request("GET", url.target, headers=sent)
        resp = conn.getresponse()
        body = resp.read(_MAX_BODY_BYTES)
        return Probe(resp.status, time.monotonic() - t0, body)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(None, time.monotonic() - t0, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def json_object(body: bytes) -> dict[str, object] | None:
    """``body`` as a JSON object, or None when it is not one."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
