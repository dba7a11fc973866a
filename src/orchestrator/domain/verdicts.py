"""Verdict parsers: pure functions from an artifact's text to a verdict. All fail closed.

A missing file (``None``), a missing key, an unknown value, or two lines that disagree
give a FAIL verdict whose reasons say which. Only an explicit, consistent success is PASS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.domain import artifacts as A


class VerdictStatus(StrEnum):
    """A gate's answer."""

    PASS = "PASS"  # noqa: S105 (a verdict, not a password)
    FAIL = "FAIL"


# A gate's tool error when the artifact in the task folder is not what the job produced:
# someone rewrote it between the write and the read. The stage runs again (its infra
# budget) and an alert says so: the file's word is never taken.
ARTIFACT_CHANGED = "artifact-changed"


@dataclass(frozen=True)
class Verdict:
    """What a gate read, with reasons a human can follow."""

    status: VerdictStatus
    reasons: list[str] = field(default_factory=list)
    fields: Mapping[str, str] = field(default_factory=dict)
    # Set by a gate that found infra trouble (e.g. the merge re-test timed out): the
    # engine then defers instead of rolling back.
    tool_error: str | None = None
    # Set by a gate that found something only a human can settle (main rewound under the
    # orchestrator): neither the code's fault nor trouble that retrying cures. The task is
    # blocked with this alert kind.
    needs_human: str | None = None
    # Set by a gate that waits for something outside the task and the orchestrator (a
    # pull request's checks and reviews): the stage's gates run again after this many
    # seconds, and no budget is spent, since nothing failed.
    wait_s: float | None = None

    @property
    def passed(self) -> bool:
        """True only for a PASS with no tool error, nothing for a human, nothing waited for."""
        return (
            self.status is VerdictStatus.PASS
            and self.tool_error is None
            and self.needs_human is None
            and self.wait_s is None
        )


def passed(reason: str, fields: Mapping[str, str] | None = None) -> Verdict:
    """A PASS verdict."""
    return Verdict(VerdictStatus.PASS, [reason], dict(fields or {}))


def failed(*reasons: str, fields: Mapping[str, str] | None = None) -> Verdict:
    """A FAIL verdict."""
    return Verdict(VerdictStatus.FAIL, list(reasons), dict(fields or {}))


def _read_key(name: str, found: Mapping[str, list[str]], key: A.KeySpec) -> tuple[str | None, str]:
    """The one value of ``key``, or None with the reason it cannot be trusted."""
    values = found.get(key.name)
    if not values:
        return None, f"{name}: key {key.name!r} is missing"
    distinct = sorted(set(values))
    if len(distinct) > 1:
        return None, f"{name}: key {key.name!r} has contradicting values {distinct}"
    value = distinct[0]
    if key.values is not None and value not in key.values:
        return None, f"{name}: {key.name}={value!r} is not one of {sorted(key.values)}"
    if key.integer and not value.isdigit():
        return None, f"{name}: {key.name}={value!r} is not a count"
    return value, ""


def parse_artifact(name: str, text: str | None) -> Verdict:
    """The generic fail-closed parser: every key of the contract read and agreeing on success."""
    spec = A.ARTIFACTS[name]
    if text is None:
        return failed(f"{name} is missing")
    found = A.parse_keys(text)
    reasons: list[str] = []
    fields: dict[str, str] = {}
    for key in spec.keys:
        value, problem = _read_key(name, found, key)
        if value is None:
            reasons.append(problem)
            continue
        fields[key.name] = value
    if reasons:
        return failed(*reasons, fields=fields)
    wrong = [
        f"{name}: {k}={fields[k]}"
        for k in spec.success
        if fields.get(k) not in spec.success_values(k)
    ]
    if wrong:
        return failed(*wrong, fields=fields)
    claims = ", ".join(f"{k}={v}" for k, v in fields.items())
    return passed(f"{name}: {claims}", fields)


def _parse_tests_verdict(text: str | None) -> Verdict:
    """``13-test-report.md``: ``result:``, ``status:`` and ``failed:`` must all say success."""
    return parse_artifact(A.TEST_REPORT, text)


def _parse_staging_status(text: str | None) -> Verdict:
    """``15-staging-log.md``: ``staging_status: PASSED``, or ``SKIPPED`` (nothing to stage)."""
    return parse_artifact(A.STAGING_LOG, text)


def _parse_analysis_status(text: str | None) -> Verdict:
    """``03-analysis.md``: ``analysis_status: READY``."""
    return parse_artifact(A.ANALYSIS, text)


def _parse_dev_report(text: str | None) -> Verdict:
    """``10-dev-report.md``: ``dev_status: DONE``."""
    return parse_artifact(A.DEV_REPORT, text)


def _parse_coverage_status(text: str | None) -> Verdict:
    """``14-coverage.md``: ``coverage_status: PASSED``."""
    return parse_artifact(A.COVERAGE, text)


def _parse_merge_status(text: str | None) -> Verdict:
    """``16-merge-report.md``: ``merge_status: MERGED``."""
    return parse_artifact(A.MERGE_REPORT, text)


def _parse_deploy_status(text: str | None) -> Verdict:
    """``17-deploy-log.md``: ``deploy_status: SUCCEEDED``."""
    return parse_artifact(A.DEPLOY_LOG, text)


def _parse_monitor_status(text: str | None) -> Verdict:
    """``18-monitor-report.md``: ``monitor_status: HEALTHY``."""
    return parse_artifact(A.MONITOR_REPORT, text)


PARSERS: dict[str, Callable[[str | None], Verdict]] = {
    A.ANALYSIS: _parse_analysis_status,
    A.DEV_REPORT: _parse_dev_report,
    A.TEST_REPORT: _parse_tests_verdict,
    A.COVERAGE: _parse_coverage_status,
    A.STAGING_LOG: _parse_staging_status,
    A.MERGE_REPORT: _parse_merge_status,
    A.DEPLOY_LOG: _parse_deploy_status,
    A.MONITOR_REPORT: _parse_monitor_status,
}
