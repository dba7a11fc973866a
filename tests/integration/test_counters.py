"""Honest counters on /queue, /metrics and the dashboard: each part counted as its own.

A merge gate that fails after a passing staging check is the merge gate's, not a staging
FAIL; staging with no command is SKIPPED; a runner stage an LLM did instead is counted
apart; infra retries are re-queues. Driven through the real engine where it can be (real
git, real runners, the real merge gate), read over the API in-process, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.api_client import api_client
from tests.integration.test_engine import STAGES, Harness

from orchestrator import repo_ops, task_ops
from orchestrator.config import load_settings
from orchestrator.store import merges, queries
from orchestrator.store.merges import reason_starts
from orchestrator.store.schema import jobs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PASS_CMD = f"{sys.executable} -c pass"
FAIL_CMD = f"{sys.executable} -c 'raise SystemExit(1)'"
SLOW_CMD = f"{sys.executable} -c 'import time; time.sleep(30)'"


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


def _metrics(client: TestClient) -> Callable[..., float]:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def sample(family: str, **labels: str) -> float:
        # A family with no sample for these labels counts 0; a family missing is an error.
        for s in families[family].samples:
            named = s.name in (family, f"{family}_total")
            if named and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        return 0.0

    return sample


def test_each_part_is_counted_as_its_own(
    h: Harness, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    h.settings = load_settings(
        **{
            **asdict(h.settings),
            "developer_retry_budget": 0,
            "staging_runner_timeout_s": 0.5,
            "staging_runner_infra_retry_budget": 1,
            # The test-runner serves no repo here: the fallback repo's testing falls back.
            "test_runner_repos": "none",
        }
    )
    fake = h.agent()
    staged = [f"development={fake}", f"testing={fake}", "deploy-staging=staging-runner"]

    def repo(name: str, agents: list[str], **cmds: str) -> None:
        path = make_repo(tmp_path / name, files={"README.md": f"{name}\n"})
        repo_ops.add_repo(h.engine, name, path, h.repo_input(stages=STAGES, agents=agents, **cmds))

    # red: staging passes, then the merge gate's re-test fails (RED).
    repo("red", staged, staging_cmd=PASS_CMD, test_cmd=FAIL_CMD)
    # skip: no staging command; the merge gate merges.
    repo("skip", staged, test_cmd=PASS_CMD)
    # slow: the staging command times out twice (one deferral, then blocked).
    repo("slow", staged, staging_cmd=SLOW_CMD, test_cmd=PASS_CMD)
    # fallback: testing is the test-runner's, out of its scope: its fallback agent does it.
    repo(
        "fallback",
        [f"development={fake}", "testing=test-runner", f"deploy-staging={fake}"],
        test_cmd=PASS_CMD,
    )
    with h.engine.begin() as conn:
        agents = dict(queries.get_repo(conn, "fallback").agents)  # type: ignore[union-attr]
        queries.update_repo(
            conn, "fallback", now=time.time(), agents={**agents, "testing:fallback": fake}
        )
    keys = {
        name: task_ops.add_task(h.engine, h.settings, name, name).task.key
        for name in ("red", "skip", "slow", "fallback")
    }
    h.run_until_idle()
    states = {name: h.task(key).state for name, key in keys.items()}
    assert states == {"red": "blocked", "skip": "done", "slow": "blocked", "fallback": "done"}
    staging_log = (h.folder(keys["skip"]) / "15-staging-log.md").read_text()
    assert "staging_status: SKIPPED" in staging_log
    assert "no staging command configured" in staging_log

    client = api_client(h.settings, h.engine)
    q = client.get("/queue").json()
    sr, tr = q["staging_runner"], q["test_runner"]
    assert (sr["jobs"], sr["finished"]) == (4, 4)
    assert sr["by_outcome"] == {"completed": 2, "timeout": 2}
    # The red task's staging passed; its merge gate failed, and is counted as the gate's.
    assert sr["by_verdict"] == {"PASS": 1, "SKIPPED": 1, "none": 2}
    assert sr["merge_gate_failed"] == 1
    assert q["merge_gate"]["red"] == 1
    # Two timeouts, one re-queue: the second blocked the task.
    assert sr["infra_retries"] == 1
    assert sr["llm_fallback"] == {"finished": 0, "by_outcome": {}, "by_verdict": {}}
    assert (tr["jobs"], tr["finished"], tr["by_outcome"], tr["by_verdict"]) == (1, 1, {}, {})
    assert tr["llm_fallback"] == {
        "finished": 1,
        "by_outcome": {"completed": 1},
        "by_verdict": {"PASS": 1},
    }

    sample = _metrics(client)
    assert sample("orch_runner_verdicts", agent="staging-runner", verdict="PASS") == 1
    assert sample("orch_runner_verdicts", agent="staging-runner", verdict="SKIPPED") == 1
    assert sample("orch_runner_verdicts", agent="staging-runner", verdict="FAIL") == 0
    assert sample("orch_runner_merge_gate_failed", agent="staging-runner") == 1
    assert sample("orch_runner_infra_retries", agent="staging-runner") == 1
    assert sample("orch_runner_verdicts", agent="test-runner", verdict="PASS") == 0
    assert sample("orch_runner_llm_fallback", agent="test-runner", verdict="PASS") == 1

    page = client.get("/").text
    row = page.split('data-agent="staging-runner"', 1)[1].split("</tr>", 1)[0]
    for cell, value in [
        ('data-verdict="PASS"', 1),
        ('data-verdict="FAIL"', 0),
        ('data-verdict="SKIPPED"', 1),
        ('data-count="tool-errors"', 2),
        ('data-count="infra-retries"', 1),
        ('data-count="merge-gate-failed"', 1),
    ]:
        assert f"{cell}>{value}<" in row, (cell, row)
    row = page.split('data-agent="test-runner"', 1)[1].split("</tr>", 1)[0]
    assert 'data-verdict="PASS">0<' in row
    assert 'data-count="llm-fallback">1<' in row
    client.close()


# ---- from rows: the merge gate's job id, legacy rows, reasons that only quote a mark ------


def _job(conn: sa.Connection, task_id: int, agent: str, attempt: int, **end: Any) -> int:
    j = queries.insert_job(
        conn, task_id=task_id, stage="deploy-staging", agent=agent, attempt=attempt, now=1.0
    )
    queries.update_job(conn, j.id, state="finished", finished_at=2.0, **end)
    return j.id


def _defer(conn: sa.Connection, task_id: int, job_id: int, reasons: list[str]) -> None:
    queries.insert_transition(
        conn,
        task_id=task_id,
        job_id=job_id,
        kind="defer",
        from_stage="deploy-staging",
        to_stage="deploy-staging",
        from_state="active",
        to_state="deferred",
        reasons=reasons,
        actor="engine",
        now=3.0,
    )


def test_counters_from_rows(
    engine: sa.Engine, migrated_db_url: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES))
    task = task_ops.add_task(engine, settings, "demo", "t").task
    completed = {"outcome": "completed"}
    staging_passed = "check_staging_status: 15-staging-log.md: staging_status=PASSED"
    with engine.begin() as conn:
        t = task.id
        # A merge gate INFRA whose row names its job (as the gate will once it records
        # job_id): the job's reasons need not say anything; it re-queued a gate-only job.
        a = _job(conn, t, "staging-runner", 1, verdict="FAIL", reasons=["no prefix"], **completed)
        merges.insert_merge_result(
            conn, task_id=t, job_id=a, status="INFRA", classification="timeout",
            retest="ran", rounds=1, reasons=["timed out"], now=2.0,
        )  # fmt: skip
        _defer(conn, t, a, ["deploy-staging: tool error timeout"])
        # A legacy gate-only retry: no job id on its result, the gate's reasons on the job.
        gate = [staging_passed, "check_branch_mergeable: merge gate: INFRA (lock-busy)"]
        b = _job(conn, t, "gate-only", 2, verdict="FAIL", reasons=gate, **completed)
        merges.insert_merge_result(
            conn, task_id=t, status="INFRA", classification="lock-busy", retest="none",
            rounds=1, reasons=["locked"], now=2.0,
        )  # fmt: skip
        _defer(conn, t, b, ["deploy-staging: tool error lock-busy", *gate])
        # An INFRA result that re-queued nothing (the budget was spent: blocked).
        merges.insert_merge_result(
            conn, task_id=t, status="INFRA", classification="timeout", retest="ran",
            rounds=1, reasons=["timed out"], now=2.0,
        )  # fmt: skip
        # The staging command's own timeout, re-queued: the runner's infra retry.
        c = _job(conn, t, "staging-runner", 3, outcome="timeout", reasons=["timed out"])
        _defer(conn, t, c, ["deploy-staging: tool error timeout"])
        # A staging FAIL of its own; reasons that only quote the marks count as nothing.
        quoted = 'the suite printed: ", "fell back to claude" and "check_branch_mergeable: x"'
        _job(conn, t, "staging-runner", 4, verdict="FAIL", reasons=[quoted], **completed)
        # A fallback, whatever its verdict, is not the runner's.
        fb = ["staging-runner is off", "fell back to claude"]
        _job(conn, t, "staging-runner", 5, verdict="FAIL", reasons=fb, **completed)
        counts = merges.merge_counters(conn)
    assert (counts["infra"], counts["infra_retries"], counts["timeouts"]) == (3, 2, 2)

    client = api_client(settings, engine)
    q = client.get("/queue").json()
    client.close()
    sr = q["staging_runner"]
    assert q["merge_gate"]["infra_retries"] == 2
    assert sr["by_verdict"] == {"PASS": 1, "FAIL": 1, "none": 1}
    assert sr["merge_gate_failed"] == 1
    assert sr["infra_retries"] == 1
    assert sr["llm_fallback"]["by_verdict"] == {"FAIL": 1}
    assert sr["finished"] == 4


@pytest.mark.parametrize(
    ("reasons", "hit"),
    [
        (["fell back to claude"], True),
        (["why", "fell back to claude", "more"], True),
        (["fell back to"], False),  # the mark is "fell back to " with its space
        (['he said "fell back to claude"'], False),
        (['x", "fell back to claude'], False),
        (["x, fell back to claude"], False),
        ([], False),
    ],
)
def test_reason_starts_matches_whole_reasons_only(
    engine: sa.Engine,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    tmp_path: Path,
    reasons: list[str],
    hit: bool,
) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES))
    task = task_ops.add_task(engine, settings, "demo", "t").task
    with engine.begin() as conn:
        job = _job(conn, task.id, "test-runner", 2, reasons=reasons)
        found = conn.execute(
            sa.select(jobs.c.id).where(reason_starts(jobs.c.reasons, "fell back to "))
        ).scalars()
        assert (job in set(found)) is hit
    with pytest.raises(ValueError, match="JSON text"):
        reason_starts(jobs.c.reasons, 'say "x"')
