"""Verdict parsers fail closed: only an explicit, consistent success is a PASS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    ("value", "ok"), [("PASSED", True), ("FAILED", False), ("SKIPPED", False), ("", False)]
)
def test_staging_status(value: str, ok: bool) -> None:
    assert _parse_staging_status(f"staging_status: {value}\n").passed is ok


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


# --- property tests: nothing but an explicit, consistent success is a PASS -------------

_KEYS = ["result", "status", "failed", "staging_status", "other", "Result"]
_VALUES = ["PASSED", "FAILED", "PASS", "FAIL", "0", "1", "", "passed", "OK", "true", "00"]


def _is_explicit_success(text: str) -> bool:
    """Independent oracle: read every key line the same way, decide success from scratch."""
    found = A.parse_keys(text)
    want = {"result": "PASSED", "status": "PASS", "failed": "0"}
    return all(found.get(k) and set(found[k]) == {v} for k, v in want.items())


line = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
    st.sampled_from(["```", "---", "# Test report", "", "result PASSED", "status=PASS"]),
    st.text(max_size=40),
)


@settings(max_examples=800)
@given(st.lists(line, max_size=12))
def test_property_no_pass_without_consistent_success(lines: list[str]) -> None:
    text = "\n".join(lines)
    v = _parse_tests_verdict(text)
    if v.passed:
        assert _is_explicit_success(text), text
        assert v.fields["result"] == "PASSED"
        assert v.fields["failed"] == "0"


@settings(max_examples=500)
@given(st.text())
def test_property_arbitrary_text_never_passes_without_all_three(text: str) -> None:
    v = _parse_tests_verdict(text)
    if v.passed:
        found = A.parse_keys(text)
        assert set(found["result"]) == {"PASSED"}
        assert set(found["status"]) == {"PASS"}
        assert set(found["failed"]) == {"0"}


@settings(max_examples=300)
@given(st.sampled_from(sorted(PARSERS)), st.lists(line, max_size=10))
def test_property_every_parser_fails_closed(name: str, lines: list[str]) -> None:
    text = "\n".join(lines)
    v = PARSERS[name](text)
    if v.passed:
        found = A.parse_keys(text)
        for key, want in A.ARTIFACTS[name].success.items():
            assert set(found[key]) == {want}


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(PARSERS)),
    st.lists(
        st.sampled_from(["FAILED", "FAIL", "1", "NEEDS_INFO", "UNHEALTHY", "RED"]), min_size=1
    ),
)
def test_property_a_contradicting_line_spoils_success(name: str, bad: list[str]) -> None:
    spec = A.ARTIFACTS[name]
    text = A.render_artifact(name, dict(spec.success))
    key = next(iter(spec.success))
    text += "".join(f"\n{key}: {b}" for b in bad)
    assert not PARSERS[name](text).passed
