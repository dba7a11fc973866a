"""The coverage gate on real projects: coverage.py runs the suite, the total decides."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.integration.test_runners import PYTEST

from orchestrator.config import load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.verdicts import VerdictStatus, _parse_coverage_status
from orchestrator.gates.coverage_gate import measure_coverage, plan_coverage
from orchestrator.runners.base import RunContext, RunnerResult

# calc.used is tested, calc.unused (most of the module) is not: well under 90% in total,
# well over 10%, whatever coverage.py counts of the test file itself.
CALC = (
    "def used():\n    return 1\n\n\ndef unused(x):\n"
    + "".join(f"    x = x + {i}\n" for i in range(30))
    + "    return x\n"
)
PROJECT = {
    "calc.py": CALC,
    "test_calc.py": "import calc\n\n\ndef test_used():\n    assert calc.used() == 1\n",
}


def make_ctx(tmp_path: Path, files: Mapping[str, str]) -> RunContext:
    wt = tmp_path / "wt"
    wt.mkdir()
    for rel, text in files.items():
        (wt / rel).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    folder = tmp_path / "tasks" / "DEMO-1"
    return RunContext(
        task_key="DEMO-1",
        repo_name="demo",
        worktree=wt,
        artifact_dir=folder,
        log_path=folder / "runs" / "2-testing-coverage.log",
        env=env,
        settings=load_settings(home=tmp_path / "home", kill_grace_s=0.5),
    )


def fields(result: RunnerResult) -> dict[str, list[str]]:
    assert result.artifact_path is not None, result.reasons
    return A.parse_keys(result.artifact_path.read_text(encoding="utf-8"))


def status(result: RunnerResult) -> VerdictStatus:
    assert result.artifact_path is not None, result.reasons
    return _parse_coverage_status(result.artifact_path.read_text(encoding="utf-8")).status


def test_coverage_above_threshold_passes(tmp_path: Path) -> None:
    result = measure_coverage(make_ctx(tmp_path, PROJECT), PYTEST, 10.0)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert status(result) is VerdictStatus.PASS, result.reasons
    keys = fields(result)
    percent = float(keys["coverage_percent"][0])
    assert 10.0 <= percent < 90.0
    assert keys["threshold_percent"] == ["10"]
    assert result.counts["passed"] == 1
    assert not (tmp_path / "wt" / ".coverage").exists()  # the data file lives in runs/


def test_coverage_below_threshold_fails(tmp_path: Path) -> None:
    result = measure_coverage(make_ctx(tmp_path, PROJECT), PYTEST, 90.0)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert status(result) is VerdictStatus.FAIL
    assert float(fields(result)["coverage_percent"][0]) < 90.0
    assert any("below the threshold 90%" in r for r in result.reasons)


def test_red_suite_fails_the_gate_whatever_its_coverage(tmp_path: Path) -> None:
    files = {**PROJECT, "test_red.py": "def test_red():\n    assert False\n"}
    result = measure_coverage(make_ctx(tmp_path, files), PYTEST, 0.0)
    assert result.outcome is OutcomeKind.COMPLETED, result.reasons
    assert status(result) is VerdictStatus.FAIL
    assert fields(result)["tests_status"] == ["FAIL"]


def test_coverage_missing_is_not_started(tmp_path: Path) -> None:
    # -S: no site-packages, so this interpreter has no coverage.py.
    command = [sys.executable, "-S", "-m", "pytest", "-q"]
    result = measure_coverage(make_ctx(tmp_path, PROJECT), command, 10.0)
    assert result.outcome is OutcomeKind.NOT_STARTED
    assert any("coverage.py is not available" in r for r in result.reasons)
    assert status(result) is VerdictStatus.FAIL


def test_timeout_is_a_tool_error(tmp_path: Path) -> None:
    files = {"test_hang.py": "import time\n\n\ndef test_hang():\n    time.sleep(120)\n"}
    # The suite never ends by itself: any limit is met by a timeout, however loaded the machine.
    result = measure_coverage(make_ctx(tmp_path, files), PYTEST, 10.0, timeout_s=0.3)
    assert result.outcome is OutcomeKind.TIMEOUT
    assert status(result) is VerdictStatus.FAIL


def test_plan_coverage_shapes() -> None:
    plan, _ = plan_coverage(["/v/bin/python", "-X", "dev", "-m", "pytest", "-q"])
    assert plan is not None
    assert plan.coverage == ["/v/bin/python", "-X", "dev", "-m", "coverage"]
    assert plan.target == ["-m", "pytest", "-q"]
    plan, _ = plan_coverage(["python3", "-mpytest", "-x"])
    assert plan is not None
    assert (plan.coverage, plan.target) == (["python3", "-m", "coverage"], ["-m", "pytest", "-x"])
    plan, _ = plan_coverage(["uv", "run", "pytest", "-x"])
    assert plan is not None
    assert plan.coverage == ["uv", "run", "python", "-m", "coverage"]
    plan, _ = plan_coverage(["python3", "script.py"])
    assert plan is not None
    assert not plan.pytest
    plan, why = plan_coverage(["make", "test"])
    assert plan is None
    assert "not a pytest or python command" in why
