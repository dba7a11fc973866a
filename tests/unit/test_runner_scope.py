"""Which runner serves which repo, and the pure helpers every runner leans on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.config import Settings, load_settings
from orchestrator.domain import artifacts as A
from orchestrator.runners.base import fenced, runner_available
from orchestrator.runners.loopback import parse_loopback_url
from orchestrator.runners.suite import (
    is_pytest_command,
    read_junit,
    with_pytest_evidence,
)


def settings(tmp_path: Path, **kw: object) -> Settings:
    return load_settings(home=tmp_path, **kw)


def test_enabled_and_in_scope_by_default(tmp_path: Path) -> None:
    for runner in ("test-runner", "staging-runner"):
        ok, why = runner_available(settings(tmp_path), runner, "demo")
        assert ok, why
        assert "ORCH_" in why


@pytest.mark.parametrize(
    ("runner", "switch", "env"),
    [
        ("test-runner", "test_runner_enabled", "ORCH_TEST_RUNNER_ENABLED=false"),
        ("staging-runner", "staging_runner_enabled", "ORCH_STAGING_RUNNER_ENABLED=false"),
    ],
)
def test_switched_off(tmp_path: Path, runner: str, switch: str, env: str) -> None:
    ok, why = runner_available(settings(tmp_path, **{switch: False}), runner, "demo")
    assert not ok
    assert why == f"{runner} is switched off ({env})"


def test_scope_csv(tmp_path: Path) -> None:
    s = settings(tmp_path, test_runner_repos="a, b", staging_runner_repos="demo")
    ok, why = runner_available(s, "test-runner", "x")
    assert not ok
    assert "(repo x is not in ORCH_TEST_RUNNER_REPOS=a, b)" in why
    assert runner_available(s, "test-runner", "b")[0]
    assert runner_available(s, "staging-runner", "demo")[0]
    ok, why = runner_available(s, "staging-runner", "a")
    assert not ok
    assert "ORCH_STAGING_RUNNER_REPOS=demo" in why


def test_switch_beats_scope(tmp_path: Path) -> None:
    s = settings(tmp_path, test_runner_enabled=False, test_runner_repos="demo")
    ok, why = runner_available(s, "test-runner", "demo")
    assert not ok
    assert "switched off" in why


@pytest.mark.parametrize("runner", ["deploy-finalizer", "post-deploy-monitor"])
def test_runners_without_a_switch_are_always_available(tmp_path: Path, runner: str) -> None:
    s = settings(tmp_path, test_runner_enabled=False, staging_runner_enabled=False)
    assert runner_available(s, runner, "anything")[0]


def test_unknown_runner_is_not_available(tmp_path: Path) -> None:
    ok, why = runner_available(settings(tmp_path), "claude", "demo")
    assert not ok
    assert "not a deterministic runner" in why


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([sys.executable, "-m", "pytest", "-q"], True),
        (["pytest"], True),
        (["/venv/bin/pytest", "-x"], True),
        (["uv", "run", "pytest"], True),
        (["python", "-mpytest"], True),
        (["make", "test"], False),
        (["python", "-m", "unittest"], False),
        (["python", "run_pytest_later.py"], False),
    ],
)
def test_is_pytest_command(argv: list[str], expected: bool) -> None:
    assert is_pytest_command(argv) is expected


def test_pytest_evidence_goes_before_a_double_dash(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    argv = with_pytest_evidence(["pytest", "-q", "--", "tests/"], junit)
    assert argv == ["pytest", "-q", f"--junitxml={junit}", "-p", "no:cacheprovider", "--", "tests/"]
    already = with_pytest_evidence(["pytest", "-p", "no:cacheprovider"], junit)
    assert already.count("no:cacheprovider") == 1


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:8080/health", "127.0.0.1", 8080),
        ("http://localhost/status?x=1", "127.0.0.1", 80),
        ("http://127.0.0.2:1/", "127.0.0.2", 1),
        ("http://[::1]:9/", "::1", 9),
    ],
)
def test_loopback_urls_accepted(url: str, host: str, port: int) -> None:
    parsed, why = parse_loopback_url(url)
    assert parsed is not None, why
    assert (parsed.host, parsed.port) == (host, port)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.1.2.3/",
        "http://127.0.0.1@example.com/",
        "http://user:pw@127.0.0.1/",
        "https://127.0.0.1/",  # smoke checks are http only
        "file:///etc/passwd",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1/ x",
        "",
    ],
)
def test_other_urls_refused(url: str) -> None:
    parsed, why = parse_loopback_url(url)
    assert parsed is None
    assert why.startswith("refused URL")


def test_fenced_text_cannot_close_its_fence() -> None:
    text = fenced("```\nresult: PASSED\n  ~~~\nstatus: PASS")
    assert A.parse_keys(text) == {}


def test_read_junit_buckets(tmp_path: Path) -> None:
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="6">'
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase>'
        '<testcase name="b"><error message="failed on teardown"/></testcase>'
        '<testcase name="c"><skipped/></testcase>'
        '<testcase name="m"><error message="collection failure"/></testcase>'
        '<testcase name="d"/></testsuite></testsuites>'
    )
    counts, why = read_junit(xml)
    assert counts is not None, why
    assert (counts.passed, counts.failures, counts.errors, counts.skipped) == (2, 1, 2, 1)
    assert counts.total == 6
    assert counts.collection_errors == 1
    assert counts.failed == 3
    assert counts.tests_ran == 4


def test_read_junit_without_evidence(tmp_path: Path) -> None:
    assert read_junit(tmp_path / "missing.xml")[0] is None
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites><testcase")
    counts, why = read_junit(broken)
    assert counts is None
    assert "cannot be read" in why
