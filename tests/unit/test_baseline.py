"""The baseline: test outcomes from JUnit XML, and the verdict on the tests that passed on main."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runners import baseline as B
from orchestrator.runners.protected_changes import ProtectedChange

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_calc" name="test_add"/>
<testcase classname="tests.test_calc" name="test_mul"><failure message="x">boom</failure></testcase>
<testcase classname="tests.test_calc" name="test_div"><skipped type="pytest.skip"/></testcase>
<testcase classname="tests.test_calc" name="test_pow"><skipped type="pytest.xfail"/></testcase>
<testcase classname="tests.test_calc" name="test_sub"/>
<testcase classname="tests.test_calc" name="test_sub"><error message="teardown">e</error></testcase>
<testcase classname="tests.test_calc.TestK" name="test_m[1]"/>
</testsuite></testsuites>
"""


def test_outcomes_from_junit(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    assert B.read_outcomes(path) == {
        "tests.test_calc::test_add": "passed",
        "tests.test_calc::test_mul": "failed",
        "tests.test_calc::test_div": "skipped",
        "tests.test_calc::test_pow": "xfailed",
        # a pass and then an error in teardown: the worse one
        "tests.test_calc::test_sub": "error",
        "tests.test_calc.TestK::test_m[1]": "passed",
    }
    assert B.passed_ids(B.read_outcomes(path) or {}) == [
        "tests.test_calc.TestK::test_m[1]",
        "tests.test_calc::test_add",
    ]


def test_no_readable_junit_is_no_outcomes(tmp_path: Path) -> None:
    assert B.read_outcomes(tmp_path / "missing.xml") is None
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testcase")
    assert B.read_outcomes(bad) is None


MAIN = frozenset({"t::a", "t::b", "t::c"})


def _baseline(**kw: object) -> B.Baseline:
    values: dict[str, object] = {"tree": "f" * 40, "required": MAIN, "note": "recorded"}
    values.update(kw)
    return B.Baseline(**values)  # type: ignore[arg-type]


def test_every_test_that_passed_on_main_passed_again() -> None:
    check = B.judge(
        _baseline(), {"t::a": "passed", "t::b": "passed", "t::c": "passed", "t::n": "failed"}
    )
    # A new test that fails is the suite's business (counted as today), not the baseline's.
    assert check.ok
    assert "all 3 test(s) that passed on main's tree ffffffffffff passed" in check.reasons[0]


@pytest.mark.parametrize(
    ("outcomes", "named"),
    [
        ({"t::a": "passed", "t::b": "passed"}, ["t::c (missing)"]),
        (
            {"t::a": "passed", "t::b": "skipped", "t::c": "xfailed"},
            ["t::b (skipped)", "t::c (xfailed)"],
        ),
        ({"t::a": "failed", "t::b": "error", "t::c": "passed"}, ["t::a (failed)", "t::b (error)"]),
        ({}, ["t::a (missing)", "t::b (missing)", "t::c (missing)"]),
    ],
)
def test_a_test_of_main_that_did_not_pass_fails_by_name(
    outcomes: dict[str, str], named: list[str]
) -> None:
    check = B.judge(_baseline(), outcomes)
    assert not check.ok
    assert set(check.not_passed) == {n.split(" ")[0] for n in named}
    assert ", ".join(named) in check.reasons[-1]


def test_no_evidence_is_a_fail_naming_the_tests() -> None:
    check = B.judge(_baseline(), None)
    assert not check.ok
    assert "no JUnit evidence" in check.reasons[0]
    assert "t::a, t::b, t::c" in check.reasons[0]


def test_no_baseline_says_why_and_decides_nothing() -> None:
    check = B.judge(B.Baseline.none("e" * 40, "main's tree eeee has not passed"), None)
    assert check.ok
    assert check.reasons == [
        "baseline: none: main's tree eeee has not passed; only the suite's result counts"
    ]


def test_exempt_tests_are_named_and_not_required() -> None:
    check = B.judge(_baseline(exempt=("t::c",)), {"t::a": "passed", "t::b": "passed"})
    assert check.ok
    assert "t::c" in check.reasons[0]
    assert "all 2 test(s)" in check.reasons[1]


def test_the_named_list_is_bounded() -> None:
    many = frozenset(f"t::x{i:03}" for i in range(50))
    check = B.judge(_baseline(required=many), {})
    assert "and 30 more" in check.reasons[0]


IDS = [
    "tests.test_calc::test_add",
    "tests.test_calc::test_mul[2]",
    "tests.test_calc.TestK::test_m",
    "tests.test_other::test_x",
    "tests.test_gone::test_y",
]


def test_only_definitions_an_approved_change_removed_are_exempt() -> None:
    branch = {"tests/test_calc.py": "def test_mul(x):\n    pass\n"}
    approved = [
        ProtectedChange("tests/test_calc.py", "modified", "", "b"),
        ProtectedChange("tests/test_gone.py", "deleted", "", "deleted"),
        ProtectedChange("conftest.py", "added", "", "c"),
    ]
    exempt = B.removed_by_approval(IDS, approved, branch.get)
    # test_add and TestK.test_m are no longer defined; test_mul still is (a parameter
    # gone from it is not a removal); test_other's module was not approved.
    assert exempt == [
        "tests.test_calc.TestK::test_m",
        "tests.test_calc::test_add",
        "tests.test_gone::test_y",
    ]


def test_an_unreadable_module_exempts_nothing() -> None:
    approved = [ProtectedChange("tests/test_calc.py", "modified", "", "b")]
    assert B.removed_by_approval(IDS, approved, lambda _p: None) == []
