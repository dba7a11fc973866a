"""``run_suite`` on real pytest processes: evidence in, judged run out."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from orchestrator.config import load_settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners.suite import SuiteRequest, SuiteRun, run_suite

SUITE = {
    "test_mixed.py": "def test_ok():\n    assert 1\n\n\ndef test_bad():\n    assert 1 == 2\n",
}
# Exits 0 whatever its tests did: the JUnit XML must still decide.
LYING_CONFTEST = "def pytest_sessionfinish(session, exitstatus):\n    session.exitstatus = 0\n"


def _request(tmp_path: Path, files: dict[str, str], **kw: object) -> SuiteRequest:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    for rel, text in files.items():
        (wt / rel).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    fields: dict[str, object] = {
        # No plugin autoload: this interpreter's test extras cost seconds of imports a run.
        "argv": [sys.executable, "-m", "pytest", "-q", "--disable-plugin-autoload"],
        "worktree": wt,
        "timeout_s": 120.0,
        "log_path": tmp_path / "runs" / "suite.log",
        "evidence_dir": tmp_path / "runs" / "suite.out",
        "env": env,
        "settings": load_settings(home=tmp_path / "home", kill_grace_s=0.5),
        **kw,
    }
    return SuiteRequest(**fields)  # type: ignore[arg-type]


def test_a_red_suite_names_its_tests_and_its_evidence(tmp_path: Path) -> None:
    run = run_suite(_request(tmp_path, SUITE))
    assert isinstance(run, SuiteRun)
    assert not run
    assert run.kind is OutcomeKind.COMPLETED
    assert run.junit == tmp_path / "runs" / "suite.out" / "junit.xml"
    assert run.junit.is_file()
    assert f"--junitxml={run.junit}" in run.argv
    assert run.counts is not None
    assert (run.counts.passed, run.counts.failures) == (1, 1)
    assert run.passed_tests == ["test_mixed::test_ok"]
    assert run.failed_tests == ["test_mixed::test_bad"]
    assert run.process.log_path == tmp_path / "runs" / "suite.log"


def test_exit_0_but_failures_in_the_junit_xml_is_not_a_pass(tmp_path: Path) -> None:
    run = run_suite(_request(tmp_path, {**SUITE, "conftest.py": LYING_CONFTEST}))
    assert run.process.exit_code == 0
    assert not run
    assert any("exit code 0, but the JUnit XML shows 1 failed" in r for r in run.reasons)


def test_an_earlier_runs_evidence_is_never_read(tmp_path: Path) -> None:
    request = _request(tmp_path, {"test_ok.py": "def test_ok():\n    assert 1\n"})
    stale = request.evidence_dir / "junit.xml"
    stale.parent.mkdir(parents=True)
    stale.write_text('<testsuite><testcase classname="x" name="forged"/></testsuite>')
    # The command writes no JUnit XML of its own: only the stale file could count.
    run = run_suite(replace(request, argv=[sys.executable, "-c", "pass"], pytest=True))
    assert not run
    assert run.counts is None
    assert run.passed_tests is None
    assert any("no JUnit XML was written" in r for r in run.reasons)


def test_a_plain_command_gets_no_evidence(tmp_path: Path) -> None:
    run = run_suite(_request(tmp_path, {}, argv=[sys.executable, "-c", "pass"]))
    assert run
    assert not run.pytest
    assert run.junit is None
    assert run.counts is None
    assert run.argv == [sys.executable, "-c", "pass"]
