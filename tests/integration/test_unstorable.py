"""Rows an agent's text could make unstorable: every job still ends, with a reason.

What a job ends with holds text the agent chose (its CLI's error message, a check's log, a
file name) and figures its CLI printed. A NUL (PostgreSQL refuses it in text and in JSONB)
or a lone surrogate (UTF-8 cannot encode it: both databases refuse it in text) made the
job's end a row no database writes: the worker tried it again and again, the task never
moved and the job never ended. The store writes such characters as U+FFFD, in every text
and JSON column; and an end that still cannot be stored (a figure out of a column's range)
is ended as a crash whose reasons say so, holding nothing the agent wrote.

The SQLite or PostgreSQL database comes from the ``migrated_db_url`` fixture, as everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from orchestrator.agents.common import MAX_COST_USD, MAX_TOKENS
from orchestrator.alerts import raise_alert
from orchestrator.domain.breaker import BackendState, Health
from orchestrator.domain.verdicts import Verdict
from orchestrator.engine import worker as worker_mod
from orchestrator.gates import registry
from orchestrator.gates.context import GateContext
from orchestrator.jobcontract import JobContext, JobResult
from orchestrator.store import breakers, is_transient, queries, spend

try:
    from test_bad_input import FAKE_CLAUDE
    from test_engine import Harness
    from test_store import add_repo, add_task
except ImportError:  # imported as tests.integration.test_unstorable
    from tests.integration.test_bad_input import FAKE_CLAUDE
    from tests.integration.test_engine import Harness
    from tests.integration.test_store import add_repo, add_task

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPLACED = "\ufffd"
# What an agent can put in a string: JSON's escapes give a NUL and a lone surrogate.
HOSTILE = "overloaded\x00 by \ud800 now"
SHOWN = f"overloaded{REPLACED} by {REPLACED} now"


# --------------------------------------------------------------------------- the store


def test_text_and_json_columns_write_nul_and_lone_surrogates_as_replacement(
    engine: sa.Engine,
) -> None:
    # Before: PostgreSQL refused each write (NUL in text and JSONB, a surrogate in text);
    # SQLite refused a surrogate in text and kept the NUL for every reader to carry on.
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id, title=HOSTILE, body=HOSTILE)
        queries.insert_transition(
            conn,
            task_id=task.id,
            kind="block",
            from_stage="development",
            to_stage="development",
            from_state="active",
            to_state="blocked",
            reasons=[HOSTILE, {HOSTILE: HOSTILE}],  # type: ignore[list-item]
            actor="engine",
            now=3.0,
        )
        raise_alert(
            conn, kind="task-blocked", message=HOSTILE, reasons=[HOSTILE], now=4.0, task_id=task.id
        )
        breakers.save(
            conn, BackendState("claude", Health.CLOSED, failures=1, last_error=HOSTILE), now=5.0
        )
    with engine.connect() as conn:
        stored = queries.get_task(conn, task.key)
        assert stored is not None
        assert (stored.title, stored.body) == (SHOWN, SHOWN)
        assert queries.list_transitions(conn, task.id)[-1].reasons == [SHOWN, {SHOWN: SHOWN}]
        alert = conn.execute(sa.text("SELECT message FROM alerts")).scalar_one()
        assert alert == SHOWN
        backend = breakers.get(conn, "claude")
        assert backend is not None
        assert backend.state.last_error == SHOWN


def test_a_lone_surrogate_stored_before_is_read_with_replacement(engine: sa.Engine) -> None:
    # SQLite kept what JSON escapes (``"\\ud800"``) until the store replaced it on write:
    # such a row, read back, gave a string no reader could write out (`orch task show`,
    # the API: UnicodeEncodeError). PostgreSQL never holds one: JSONB refuses it.
    if engine.dialect.name != "sqlite":
        pytest.skip("only SQLite can hold a lone surrogate in a JSON column")
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        conn.exec_driver_sql(
            "UPDATE transitions SET reasons = ? WHERE task_id = ?",
            (json.dumps(["tests/\udcff.py (deleted)"]), task.id),
        )
    with engine.connect() as conn:
        [created] = queries.list_transitions(conn, task.id)
    assert created.reasons == [f"tests/{REPLACED}.py (deleted)"]


def test_a_value_past_a_database_limit_is_not_taken_for_an_outage(engine: sa.Engine) -> None:
    # PostgreSQL reports a value too large for a limit (an index row, a JSONB value) as
    # SQLSTATE class 54, which psycopg makes an OperationalError, as it does a dropped
    # connection: taken for an outage, a job's end holding one was tried again for ever.
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TEMP TABLE limited (name TEXT PRIMARY KEY)")
            with pytest.raises(sa.exc.OperationalError) as caught:
                conn.execute(
                    sa.text("INSERT INTO limited VALUES (:name)"),
                    {"name": "".join(chr(0x4E00 + i % 2000) for i in range(3000))},
                )
        assert type(caught.value.orig).__name__ == "ProgramLimitExceeded"
        assert not is_transient(caught.value)
    # As SQLAlchemy wraps it, on any database the tests run on.
    limit = psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum")
    assert not is_transient(sa.exc.OperationalError("INSERT", {}, limit))
    gone = psycopg.errors.AdminShutdown("terminating connection")
    assert is_transient(sa.exc.OperationalError("INSERT", {}, gone))


# --------------------------------------------------------------------------- whole runs

# Stands in for the claude CLI: a model-API failure whose message holds a NUL and a lone
# surrogate (as JSON escapes them), and no work done.
HOSTILE_CLAUDE = """\
import json, sys
result = {
    "type": "result",
    "subtype": "error_during_execution",
    "is_error": True,
    "api_error_status": 500,
    "num_turns": 1,
    "result": MESSAGE,
    "total_cost_usd": 0.01,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
sys.stdout.write(json.dumps(result) + "\\n")
"""


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    # In the plan folder: the one folder of the tests' own the sandbox lets the agent see.
    fake = tmp_path / "plan" / "hostile_claude.py"
    harness = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(files={"README.md": "demo\n"}),
        claude_command=f"{sys.executable} {fake}",
        infra_retry_budget=1,
        backend_breaker_threshold=5,
    )
    fake.write_text(HOSTILE_CLAUDE.replace("MESSAGE", json.dumps(HOSTILE)))
    yield harness
    harness.stop()
    harness.engine.dispose()


def _first_job_finished(h: Harness, key: str) -> Any:
    h.wait_for(lambda: any(j.state == "finished" for j in h.jobs(key)))
    return next(j for j in h.jobs(key) if j.state == "finished")


def test_a_model_error_message_holding_nul_and_a_surrogate_ends_the_job(h: Harness) -> None:
    """The claude CLI reports a model-API failure whose message holds a NUL and a lone
    surrogate: the message reaches the job's reasons (JSON) and the backend's last error
    (text). The job ends CRASHED, the message shown with U+FFFD (before: the end was
    refused by the database, on SQLite too, and tried again forever)."""
    h.add_repo(development="claude")
    key = h.add_task()
    h.start()
    job = _first_job_finished(h, key)
    h.stop()
    assert job.outcome == "crashed", job.reasons
    text = " | ".join(job.reasons)
    assert SHOWN in text, text
    assert "\x00" not in text
    with h.engine.connect() as conn:
        backend = breakers.get(conn, "claude")
    assert backend is not None
    assert backend.state.last_error is not None
    assert SHOWN in backend.state.last_error


def test_costs_claimed_near_the_largest_float_add_up_on_both_databases(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> None:
    """Two tasks' claude jobs each say they cost 1e308 USD (no budget set): both are
    counted, at the most a job's cost can be, and their sum is still a number (before:
    PostgreSQL's SUM overflowed, "value out of range", so the second job's end, every
    admission and every spend total failed for good; SQLite's sum was infinity)."""
    h = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(files={"README.md": "demo\n"}),
        # 1e308: valid JSON, a finite float.
        claude_command=f"{sys.executable} {FAKE_CLAUDE} --fake-cost 1e308",
        llm_budget_per_task_usd=0,
        llm_budget_per_day_usd=0,
    )
    try:
        h.add_repo(development="claude")
        keys = [h.add_task("one"), h.add_task("two")]
        h.start()
        h.wait_for(lambda: all(h.task(k).stage != "development" for k in keys))
        h.stop()
        costs = [j.cost_usd for k in keys for j in h.jobs(k) if j.stage == "development"]
        assert costs == [MAX_COST_USD, MAX_COST_USD]
        with h.engine.connect() as conn:
            assert spend.total_spend(conn).cost_usd == 2 * MAX_COST_USD
    finally:
        h.stop()
        h.engine.dispose()


# --------------------------------------------------------------------------- refused ends

# More tokens than any INTEGER column holds: PostgreSQL refuses it (DataError), SQLite too
# (OverflowError, not a database error at all). The CLIs' parsers cap what they read
# (``agents.common.MAX_TOKENS``); planted here as a stand-in for whatever else a job's end
# may hold that the store refuses, such as the next unforeseen character.
TOO_MANY = 2**64


def _crashed_until_blocked(h: Harness, key: str) -> list[Any]:
    """Run the worker until the task is blocked; its jobs, each a development job that
    crashed with one reason, as many as the infra budget allows."""
    h.start()
    h.wait_for(lambda: h.task(key).state == "blocked", deadline_s=30)
    h.stop()
    jobs = h.jobs(key)
    budget = h.settings.infra_retry_budget
    assert [(j.stage, j.state, j.outcome) for j in jobs] == [
        ("development", "finished", "crashed")
    ] * (budget + 1)
    for job in jobs:
        assert len(job.reasons) == 1, job.reasons
    return jobs


def test_a_job_end_the_store_refuses_is_a_crash_that_says_so_not_a_loop(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each development job's end holds a token count no column holds, and a reason of the
    agent's. Each job ends CRASHED with a reason that says its end could not be stored,
    holding nothing of the job's own (not its reasons, not its count); the infra budget
    runs out and the task is blocked (before: the end was tried again and again, "job
    thread failed", and the job never ended)."""
    h = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    real = worker_mod.launch_job

    def launch(ctx: JobContext) -> JobResult:
        result = real(ctx)
        if ctx.job.stage != "development":
            return result
        return dataclasses.replace(
            result, reasons=[*result.reasons, "the agent's own words"], tokens_in=TOO_MANY
        )

    monkeypatch.setattr(worker_mod, "launch_job", launch)
    try:
        h.add_repo()
        key = h.add_task()
        for job in _crashed_until_blocked(h, key):
            assert "this job's end could not be stored" in job.reasons[0]
            assert "the agent's own words" not in job.reasons[0]
            assert job.tokens_in == MAX_TOKENS  # the safe side of a budget
        assert h.task(key).stage == "development"
    finally:
        h.stop()
        h.engine.dispose()


def test_a_gate_that_raises_is_a_gate_error_that_says_so_not_a_loop(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A development gate check raises on what the agent left (a bug of ours the agent can
    find): the job ends with a gate error that names the check and the exception's type,
    not the agent's text; the gate-only retries run out and the task is blocked (before:
    "job thread failed", recovery re-queued the job and the agent ran again, forever)."""
    h = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))

    def broken(ctx: GateContext) -> Verdict:
        msg = "the agent's own words"
        raise RuntimeError(msg)

    monkeypatch.setitem(registry.CHECKS, "check_dev_report", broken)  # type: ignore[index]
    try:
        h.add_repo()
        key = h.add_task()
        h.start()
        h.wait_for(lambda: h.task(key).state == "blocked")
        h.stop()
        budget = h.settings.merge_gate_infra_retry_budget
        jobs = h.jobs(key)
        assert [(j.stage, j.state, j.outcome) for j in jobs] == [
            ("development", "finished", "completed")
        ] * (budget + 1)
        for job in jobs:
            text = " | ".join(job.reasons)
            assert "check_dev_report: internal error (RuntimeError)" in text, text
            assert "the agent's own words" not in text
        # The agent ran once: a gate error re-runs the gates alone.
        assert sum(":development:" in s for s in h.starts()) == 1, h.starts()
    finally:
        h.stop()
        h.engine.dispose()


def test_an_after_pass_step_that_raises_is_noted_and_the_task_goes_on(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Testing's after-pass step (recording the validated tree) raises: the step is noted
    as not done and the PASS stands (a tree not recorded is only re-tested by the merge
    gate); before, the job's thread died after its gates passed, recovery re-queued the
    job and the testing agent ran again, forever."""
    h = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))

    def broken(ctx: GateContext, passed_tests: Sequence[str] | None) -> str:
        msg = "the agent's own words"
        raise RuntimeError(msg)

    # Trusting the fake testing agent, so that the step runs for it.
    step = registry.AfterPass(trusts=h.agent(), run=broken)
    monkeypatch.setitem(registry.AFTER_PASS, "record_validated_tree", step)  # type: ignore[index]
    try:
        h.add_repo()
        key = h.add_task()
        h.start()
        h.wait_for(lambda: h.task(key).state == "done")
        h.stop()
        testing = [j for j in h.jobs(key) if j.stage == "testing"]
        assert [(j.state, j.outcome, j.verdict) for j in testing] == [
            ("finished", "completed", "PASS")
        ]
        assert sum(":testing:" in s for s in h.starts()) == 1, h.starts()
    finally:
        h.stop()
        h.engine.dispose()


# Rows of docs/security.md's attack table (rendered by test_security_doc.py).
HERE = "tests/integration/test_unstorable.py"
DEFENDED = [
    {
        "attack": "make the CLI report an error whose message holds a NUL or a lone "
        "surrogate (`\\u0000`, `\\ud800` in its JSON), or put one in any text that reaches "
        "a row",
        "before": "the database refused the job's end (PostgreSQL: NUL in JSONB or text; "
        "both: a string UTF-8 cannot encode); the worker tried it again and again, the "
        "task never moved",
        "now": "every text and JSON column writes them as U+FFFD: the job ends with its "
        "reasons, the message shown",
        "test": HERE,
    },
    {
        "attack": "end a job with anything else the store refuses (a figure no column "
        "holds, the next unforeseen character)",
        "before": "the same endless loop: the end was tried again and again",
        "now": "the end is recorded once as a crash that says it could not be stored, "
        "holding none of the job's text; the infra budget blocks the task",
        "test": HERE,
    },
    {
        "attack": "claim a cost of `1e308` USD (a finite float) in the CLI's result, twice",
        "before": "PostgreSQL's SUM of the costs overflowed: every later job's end, every "
        "LLM admission and every spend total failed for good",
        "now": "a cost is counted as at most $1,000,000 a job (the safe side of a budget); "
        "the totals add up on both databases",
        "test": HERE,
    },
    {
        "attack": "leave something that makes a gate check, or a step after a PASS, "
        "raise (a bug of ours)",
        "before": "the job's thread died; recovery re-queued the job and the agent ran "
        "again and again",
        "now": "a gate error naming the check and the exception's type: the gates alone "
        "run again within the gate's budget, then the task is blocked; a step after a "
        "PASS is noted as not done and the PASS stands",
        "test": HERE,
    },
]


def test_a_job_whose_thread_raises_is_a_crash_that_says_so_not_a_loop(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
) -> None:
    """The task folder's ``runs`` is a file, so the worker cannot make the job's log there:
    the job's thread raises before any process starts (a bug of ours or the machine's,
    not the code's). Each job ends CRASHED with a reason naming the exception; the infra
    budget runs out and the task is blocked with one alert (before: "job thread failed",
    the job stayed running until its lease ran out, recovery re-queued it without spending
    anything, and it failed the same way again, for ever)."""
    h = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    try:
        h.add_repo()
        key = h.add_task()
        (h.folder(key) / "runs").write_text("not a folder\n")
        for job in _crashed_until_blocked(h, key):
            assert job.reasons[0].startswith("internal error in the worker (FileExistsError"), (
                job.reasons
            )
        assert h.starts() == []  # no agent ran
        kinds = [a.kind for a in h.alerts()]
        assert kinds == ["infra-budget-exhausted"], kinds
    finally:
        h.stop()
        h.engine.dispose()
