"""Verdict parsers fail closed: only an explicit, consistent success is a PASS."""

from __future__ import annotations

import pytest

from orchestrator.domain import artifacts as A
from orchestrator.domain.verdicts import (
    PARSERS,
    VerdictStatus,
    _parse_staging_status,
    _parse_tests_verdict,
)

GOOD_TESTS = A.render_artifact(A.TEST_REPORT, {"result": "PASSED", "status": "PASS", "failed": 0})


def test_aligned_test_report_passes() -> None:
    v = _parse_tests_verdict(GOOD_TESTS)
    assert v.status is VerdictStatus.PASS
    assert v.passed
    assert v.fields == {"result": "PASSED", "status": "PASS", "failed": "0"}


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        (None, "is missing"),
        ("", "key 'result' is missing"),
        ("result: PASSED\nstatus: PASS\n", "key 'failed' is missing"),
        ("result: PASSED\nstatus: PASS\nfailed: 2\n", "failed=2"),
        ("result: PASSED\nstatus: FAIL\nfailed: 0\n", "status=FAIL"),
        ("result: PASSED\nstatus: PASS\nfailed: none\n", "not a count"),
        ("result: GREEN\nstatus: PASS\nfailed: 0\n", "not one of"),
        ("result: PASSED\nstatus: PASS\nfailed: 0\nresult: FAILED\n", "contradicting"),
        ("result: passed\nstatus: pass\nfailed: 0\n", "not one of"),
        # Quoted output in a code fence is not a claim.
        ("```\nresult: PASSED\nstatus: PASS\nfailed: 0\n```\n", "missing"),
    ],
)
def test_test_report_fails_closed(text: str | None, reason_part: str) -> None:
    v = _parse_tests_verdict(text)
    assert v.status is VerdictStatus.FAIL
    assert any(reason_part in r for r in v.reasons), v.reasons


def test_keys_in_body_and_front_matter_must_agree() -> None:
    text = GOOD_TESTS + "\nstatus: FAIL\n"
    v = _parse_tests_verdict(text)
    assert not v.passed
    assert any("contradicting" in r for r in v.reasons)


def test_bullets_and_bold_keys_are_read() -> None:
    text = "- **result**: PASSED\n- status: `PASS`\n* failed: 0\n"
    assert _parse_tests_verdict(text).passed


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("PASSED", True),
        ("FAILED", False),
        # Nothing to stage (no staging command) passes, and says so.
        ("SKIPPED", True),
        ("skipped", False),
        ("SKIP", False),
        ("", False),
    ],
)
def test_staging_status(value: str, ok: bool) -> None:
    assert _parse_staging_status(f"staging_status: {value}\n").passed is ok


def test_skipped_staging_fails_closed_like_any_value() -> None:
    v = _parse_staging_status("staging_status: SKIPPED\n")
    assert v.reasons == ["15-staging-log.md: staging_status=SKIPPED"]
    contradicted = _parse_staging_status("staging_status: SKIPPED\nstaging_status: PASSED\n")
    assert not contradicted.passed
    assert "contradicting" in contradicted.reasons[0]


def test_also_success_holds_only_allowed_values_of_a_success_key() -> None:
    keys = (A.KeySpec("s", frozenset({"OK", "NO", "SKIPPED"})), A.KeySpec("n", integer=True))
    spec = A.ArtifactSpec("99-x.md", "X", keys, {"s": "OK"}, {"s": frozenset({"SKIPPED"})})
    assert spec.success_values("s") == {"OK", "SKIPPED"}
    for bad in ({"s": frozenset({"MAYBE"})}, {"n": frozenset({"0"})}, {"x": frozenset({"OK"})}):
        with pytest.raises(ValueError, match="also_success"):
            A.ArtifactSpec("99-x.md", "X", keys, {"s": "OK"}, bad)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_parser_passes_its_rendered_success_and_fails_empty(name: str) -> None:
    spec = A.ARTIFACTS[name]
    text = A.render_artifact(name, dict(spec.success), "some body")
    assert PARSERS[name](text).passed
    assert not PARSERS[name](None).passed
    assert not PARSERS[name]("").passed


def test_render_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="not one of"):
        A.render_artifact(A.STAGING_LOG, {"staging_status": "MAYBE"})
    with pytest.raises(ValueError, match="not a count"):
        A.render_artifact(A.TEST_REPORT, {"failed": "-1"})


# The property tests of these parsers (nothing but an explicit, consistent success is a
# PASS) live with every other parser's in parser_properties/props_domain.py, run by
# test_parser_properties.py here and at 100,000 examples by bench/parsers_fuzz.py.
