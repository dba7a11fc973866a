"""The post-deploy-monitor: poll the repo's health URL and write ``18-monitor-report.md``.

What is watched is the deploy: a refused connection, a timeout or a 5xx is an unhealthy
check (a verdict), not a tool error. Only a failure of the monitor itself is ``crashed``.
Only loopback URLs are polled; any other URL is refused before a socket is opened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import POST_DEPLOY_MONITOR
from orchestrator.runners.base import (
    RunContext,
    RunnerResult,
    guarded,
    one_line,
    reasons_block,
    write_report,
)
from orchestrator.runners.loopback import http_get, json_object, parse_loopback_url

NO_URL_REASON = "no health URL configured; nothing to watch"
# Values of a JSON body's "status" field that mean healthy (compared case-insensitively).
HEALTHY_STATUSES = frozenset({"ok", "healthy", "pass"})
_FAIL_KEYS = {"monitor_status": "UNHEALTHY"}


@dataclass(frozen=True)
class HealthCheck:
    """One poll of the health URL."""

    number: int
    healthy: bool
    code: int | None
    latency_s: float
    detail: str


def _judge(
    number: int, code: int | None, latency_s: float, body: bytes, error: str | None
) -> HealthCheck:
    if code is None:
        return HealthCheck(number, False, None, latency_s, f"no response: {error}")
    if not 200 <= code < 300:
        return HealthCheck(number, False, code, latency_s, f"HTTP {code}")
    data = json_object(body)
    if data is not None and "status" in data:
        status = str(data["status"])
        if status.lower() not in HEALTHY_STATUSES:
            return HealthCheck(number, False, code, latency_s, f"HTTP {code}, status={status!r}")
        return HealthCheck(number, True, code, latency_s, f"HTTP {code}, status={status!r}")
    return HealthCheck(number, True, code, latency_s, f"HTTP {code}")


def _table(checks: Sequence[HealthCheck]) -> str:
    rows = ["## Checks", "", "| # | result | code | latency_ms | detail |", "|---|---|---|---|---|"]
    for c in checks:
        code = "-" if c.code is None else str(c.code)
        detail = one_line(c.detail).replace("|", "\\|")
        result = "healthy" if c.healthy else "UNHEALTHY"
        rows.append(f"| {c.number} | {result} | {code} | {c.latency_s * 1000:.0f} | {detail} |")
    return "\n".join(rows)


def run_monitor(
    ctx: RunContext,
    health_url: str | None,
    *,
    checks: int = 5,
    interval_s: float = 1.0,
    timeout_s_per_check: float = 3.0,
    required_healthy: int | None = None,
) -> RunnerResult:
    """Poll ``health_url`` ``checks`` times, ``interval_s`` apart; never raises.

    HEALTHY when at least ``required_healthy`` checks (default: all) got a 2xx, and, for a
    JSON body with a ``status`` field, a status of ok / healthy / pass. No URL is HEALTHY,
    and the report says so.
    """
    return guarded(
        POST_DEPLOY_MONITOR,
        ctx,
        A.MONITOR_REPORT,
        _FAIL_KEYS,
        lambda: _run_monitor(
            ctx, health_url, checks, interval_s, timeout_s_per_check, required_healthy
        ),
    )


def _run_monitor(
    ctx: RunContext,
    health_url: str | None,
    checks: int,
    interval_s: float,
    timeout_s: float,
    required_healthy: int | None,
) -> RunnerResult:
    t0 = time.monotonic()
    if not health_url:
        keys: dict[str, object] = {
            "monitor_status": "HEALTHY",
            "outcome": OutcomeKind.COMPLETED.value,
            "url": "none",
        }
        return _finish(ctx, keys, [NO_URL_REASON], [], OutcomeKind.COMPLETED, t0)
    url_keys: dict[str, object] = {"url": one_line(health_url), "checks": checks}
    target, refused = parse_loopback_url(health_url, schemes=("http", "https"))
    if target is None:
        keys = {"monitor_status": "UNHEALTHY", "outcome": OutcomeKind.COMPLETED.value, **url_keys}
        return _finish(ctx, keys, [refused], [], OutcomeKind.COMPLETED, t0)
    bad = _bad_parameters(checks, interval_s, timeout_s, required_healthy)
    if bad is not None:
        keys = {"monitor_status": "UNHEALTHY", "outcome": OutcomeKind.NOT_STARTED.value, **url_keys}
        return _finish(ctx, keys, [bad], [], OutcomeKind.NOT_STARTED, t0)
    need = checks if required_healthy is None else required_healthy

    results: list[HealthCheck] = []
    cancelled = False
    for n in range(1, checks + 1):
        if n > 1:
            if ctx.cancel is not None:
                cancelled = ctx.cancel.wait(interval_s)
            else:
                time.sleep(interval_s)
        if cancelled or (ctx.cancel is not None and ctx.cancel.is_set()):
            cancelled = True
            break
        probe = http_get(target, timeout_s)
        results.append(_judge(n, probe.code, probe.latency_s, probe.body, probe.error))

    healthy = sum(1 for r in results if r.healthy)
    ok = not cancelled and healthy >= need
    reasons = [f"{healthy} of {len(results)} check(s) healthy; {need} required"]
    kind = OutcomeKind.COMPLETED
    if cancelled:
        # Stopped by us before the window was over: no verdict on the deploy.
        kind = OutcomeKind.CRASHED
        reasons.append(f"cancelled after {len(results)} of {checks} check(s)")
    reasons.extend(f"check {r.number}: {r.detail}" for r in results if not r.healthy)
    keys = {
        "monitor_status": "HEALTHY" if ok else "UNHEALTHY",
        "outcome": kind.value,
        **url_keys,
        "healthy_checks": healthy,
        "required_healthy": need,
        "interval_s": f"{interval_s:g}",
    }
    return _finish(ctx, keys, reasons, results, kind, t0)


def _bad_parameters(
    checks: int, interval_s: float, timeout_s: float, required_healthy: int | None
) -> str | None:
    if checks < 1:
        return f"checks must be at least 1 (got {checks})"
    if not (math.isfinite(interval_s) and interval_s >= 0):
        return f"interval_s must be a finite number >= 0 (got {interval_s})"
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        return f"timeout_s_per_check must be a finite number > 0 (got {timeout_s})"
    if required_healthy is not None and not 1 <= required_healthy <= checks:
        return f"required_healthy must be between 1 and checks={checks} (got {required_healthy})"
    return None


def _finish(
    ctx: RunContext,
    keys: Mapping[str, object],
    reasons: list[str],
    results: Sequence[HealthCheck],
    kind: OutcomeKind,
    t0: float,
) -> RunnerResult:
    reasons.insert(0, f"post-deploy-monitor: {keys['monitor_status']}")
    sections = [reasons_block(reasons)]
    if results:
        sections.append(_table(results))
    path, problem = write_report(ctx, A.MONITOR_REPORT, keys, "\n\n".join(sections))
    if problem is not None:
        reasons.append(problem)
        if kind is OutcomeKind.COMPLETED:
            kind = OutcomeKind.CRASHED
    return RunnerResult(
        outcome=kind,
        artifact_name=A.MONITOR_REPORT,
        artifact_path=path,
        exit_code=None,
        reasons=reasons,
        duration_s=time.monotonic() - t0,
        counts={"checks": len(results), "healthy": sum(1 for r in results if r.healthy)},
    )
