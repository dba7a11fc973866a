"""The fault matrix: each fault injected into a real engine run, and where it ends.

``FAULTS`` is the single source of ``docs/reliability.md``: ``test_reliability_doc_is_current``
renders the table and compares it with the file, so the doc cannot drift. Regenerate with
``python -m tests.integration.test_fault_matrix --write`` (from the repo root) or by running
the suite with ``ORCH_WRITE_RELIABILITY_DOC=1``.

Every row is driven through the engine with real git, a real database and real child
processes (the fake agent of ``test_engine.py``, or a small agent of this module), and the
row's end state, transition kinds and alert are checked against what really happened.
"never a PASS": the faulted jobs never carry a PASS verdict and the task never moves past
the faulted stage on their account.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
WRITE_ENV = "ORCH_WRITE_RELIABILITY_DOC"
# The real suites' command: this interpreter's pytest without the test extras' plugins
# (hypothesis, schemathesis, anyio), whose imports cost seconds a run; the repos need none.
PYTEST_CMD = f"{sys.executable} -m pytest -q --disable-plugin-autoload"


@dataclass(frozen=True)
class Fault:
    """One row of the matrix: the fault, how it is injected, and where it must end."""

    id: str
    fault: str
    injection: str
    stage: str
    state: str
    kinds: tuple[str, ...]
    alert: str | None
    never_pass: str
    note: str = ""


FAULTS: list[Fault] = [
    Fault(
        "agent-crash",
        "Agent crash",
        "the testing agent writes a PASS report, then kills itself with SIGKILL",
        "testing",
        "blocked",
        ("create", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "a signal death is a tool error: the PASS report it left is not read as a PASS",
    ),
    Fault(
        "agent-hang",
        "Agent hang",
        "the testing agent sleeps 60 s; agent_timeout_s=0.2 (tree-kill each time)",
        "testing",
        "blocked",
        ("create", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "each timeout is a tool error; spent infra budget is FAILED, not PASS",
    ),
    Fault(
        "merge-retest-timeout",
        "Timeout (merge re-test)",
        "the repo's test command sleeps 30 s; merge_retest_timeout_s=0.2",
        "deploy-staging",
        "blocked",
        ("create", "advance", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "main is not moved; the retries are gate-only",
    ),
    Fault(
        "missing-artifact",
        "Missing artifact",
        "the testing agent exits 0 and writes no 13-test-report.md",
        "testing",
        "blocked",
        ("create", "advance", "rollback", "advance", "rollback", "advance", "block"),
        "developer-budget-exhausted",
        "no artifact is a FAIL with a reason; deploy-staging never runs",
        "a bad report is read as the code's FAIL: it rolls back to development and spends "
        "the developer budget, rather than deferring as a tool error",
    ),
    Fault(
        "malformed-artifact",
        "Malformed artifact",
        "the testing agent writes binary garbage with an unterminated front matter",
        "testing",
        "blocked",
        ("create", "advance", "rollback", "advance", "rollback", "advance", "block"),
        "developer-budget-exhausted",
        "unparseable keys are a FAIL; deploy-staging never runs",
        "a bad report is read as the code's FAIL: it rolls back to development and spends "
        "the developer budget, rather than deferring as a tool error",
    ),
    Fault(
        "contradicting-keys",
        "Contradicting keys",
        "the testing report says result: PASSED and then result: FAILED",
        "testing",
        "blocked",
        ("create", "advance", "rollback", "advance", "rollback", "advance", "block"),
        "developer-budget-exhausted",
        "contradiction is a FAIL; deploy-staging never runs",
        "a bad report is read as the code's FAIL: it rolls back to development and spends "
        "the developer budget, rather than deferring as a tool error",
    ),
    Fault(
        "git-conflict",
        "Git conflict",
        "two patch tasks change the same line of README.md; the second merges after the first",
        "development",
        "blocked",
        ("create", "advance", "advance", "rollback", "rollback", "block"),
        "developer-budget-exhausted",
        "the merge gate reports CONFLICT and rolls back; main keeps the first change only",
        "the patch backend re-applies the same stale patch on each rollback, so the "
        "developer budget is spent without a chance of success",
    ),
    Fault(
        "lock-busy",
        "Lock busy",
        "a held .git/refs/heads/main.lock while the merge gate runs; removed after the defer",
        "deploy-staging",
        "done",
        ("create", "advance", "advance", "defer", "done"),
        None,
        "lock-busy defers on deploy-staging; the gate-only retry merges once",
    ),
    Fault(
        "db-locked",
        "DB locked for a moment",
        "a second connection holds the write lock (SQLite BEGIN IMMEDIATE; PostgreSQL "
        "LOCK TABLE tasks) from before a job ends until its end is seen waiting on it",
        "deploy-staging",
        "done",
        ("create", "advance", "advance", "done"),
        None,
        "the engine waits (busy_timeout / lock wait) and completes; nothing is skipped",
    ),
    Fault(
        "db-gone",
        "DB gone for a moment",
        "while the development job ends, the database refuses every connection until the "
        "job's end and the scheduler loop have each met it, and 0.5 s more (PostgreSQL: "
        "ALLOW_CONNECTIONS false and every session terminated; SQLite: every statement fails "
        "with OperationalError)",
        "deploy-staging",
        "done",
        ("create", "advance", "advance", "done"),
        None,
        "the worker outlives the outage, applies the job's end once the database is back "
        "(the agent ran once), and completes; nothing is skipped",
    ),
    Fault(
        "webhook-down",
        "Webhook down",
        "ORCH_ALERT_WEBHOOK_URL points at a closed 127.0.0.1 port; testing always FAILs",
        "testing",
        "blocked",
        ("create", "advance", "block"),
        "developer-budget-exhausted",
        "the engine finishes; the alert is stored, every delivery attempt recorded, "
        "delivered_at empty",
    ),
    Fault(
        "disk-full",
        "Disk full writing an artifact",
        "write_atomic raises OSError(ENOSPC) for 13-test-report.md (the real test-runner)",
        "testing",
        "blocked",
        ("create", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "the runner's result is a tool error (crashed) with no report; never a PASS",
        "the job's reasons still carry the suite's own line 'test-runner: PASS' next to "
        "the ENOSPC error: the state is right, the wording can mislead a reader",
    ),
    Fault(
        "kill-after-patch-commit",
        "Orchestrator killed between the patch commit and its bookkeeping",
        "the patch (a new file) is committed on the task's branch, the development job left "
        "running under a dead worker (what a kill -9 at that moment leaves); a worker starts",
        "deploy-staging",
        "done",
        ("create", "advance", "advance", "done"),
        None,
        "the re-run recognises the committed patch (DONE) instead of applying it again; the "
        "testing and merge gates still decide, and the change lands on main once",
        "was an engine bug, found by the chaos suite on PostgreSQL: the re-run applied the "
        "patch again, found nothing to commit, reported FAILED and burned the developer "
        "budget. Fixed in engine.patch_backend.run_patch",
    ),
    Fault(
        "conflicted-patch-then-retry",
        "A patch that does not apply, then a retry with another patch",
        "the first patch meets a changed line (git apply --3way writes conflict markers); "
        "`orch task retry --patch` attaches a patch that adds a new file",
        "deploy-staging",
        "done",
        ("create", "rollback", "rollback", "block", "retry", "advance", "advance", "done"),
        "developer-budget-exhausted",
        "each failed apply is undone (the worktree is back at the branch's last commit) and "
        "its reason is git's own message; main receives the new file and no conflict marker",
    ),
    Fault(
        "fresh-retry",
        "A retry that needs current main",
        "the patch edits a file that main gains only after the task's worktree was made; "
        "`orch task retry --fresh` once main has it",
        "deploy-staging",
        "done",
        ("create", "rollback", "rollback", "block", "retry", "advance", "advance", "done"),
        "developer-budget-exhausted",
        "the old base never passes; the fresh worktree starts from current main and the "
        "patch applies there",
    ),
    Fault(
        "branch-no-longer-rebases",
        "A branch that no longer rebases onto main",
        "the second task's branch changes README.md and changes it back (two commits) while "
        "the first task's change to README.md lands",
        "deploy-staging",
        "done",
        (
            "create",
            "advance",
            "rollback",
            "advance",
            "advance",
            "rollback",
            "advance",
            "advance",
            "done",
        ),
        None,
        "the merge gate names the conflict and sends the task back; its next attempt starts "
        "from current main with the branch's old change (for `patch`, re-applied there)",
    ),
    Fault(
        "no-gitignore-bytecode",
        "A Python repo without .gitignore",
        "the real test-runner runs pytest; the first patch fails its test, the second fixes it",
        "deploy-staging",
        "done",
        ("create", "advance", "rollback", "advance", "advance", "done"),
        None,
        "no bytecode, cache or coverage file is committed or dirties the worktree; the merge "
        "re-test is skipped for the tree the test-runner validated",
    ),
    Fault(
        "merge-gate-own-budget",
        "Merge-gate infra trouble with the staging-runner's budget at 0",
        "a held .git/refs/heads/main.lock for the whole run; the real staging-runner; "
        "staging_runner_infra_retry_budget=0",
        "deploy-staging",
        "blocked",
        ("create", "advance", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "the merge gate's gate-only retries spend ORCH_MERGE_GATE_INFRA_RETRY_BUDGET, not the "
        "staging-runner's; main is not moved",
    ),
    Fault(
        "kill-9-during-retest",
        "`kill -9` of the worker during the merge re-test",
        "`orch run` is killed while the repo's test command runs as the merge re-test; "
        "`orch run --until-idle` after",
        "deploy-staging",
        "done",
        ("create", "advance", "advance", "done"),
        None,
        "the re-test is a job process: recovery kills it with the job; the task is merged "
        "once by the re-run",
    ),
    Fault(
        "dependency-blocked",
        "A dependent task whose dependency is still in flight, then blocks",
        "`orch task add --after` the first task, filed while the first is at testing; the "
        "first task's tests always fail",
        "development",
        "active",
        ("create",),
        None,
        "its first job is never claimed while the dependency is not done; "
        "`orch run --until-idle` still ends and the task says what it waits on",
    ),
    Fault(
        "main-rewound",
        "Main rewound outside the orchestrator",
        "after the first task merges, someone moves main back to its parent "
        "(`git update-ref`); a second task reaches the merge gate",
        "deploy-staging",
        "blocked",
        ("create", "advance", "advance", "block"),
        "main-rewound",
        "the merge gate refuses to build on a main that does not descend from the last main "
        "it made; main is not moved; `orch repo set --trust-main` and a retry go on",
    ),
    Fault(
        "sandbox-start-failure",
        "Sandbox fails to start",
        "while development runs, the user adds a remote that is a git bundle file; the "
        "test-runner's sandbox hides it with an empty file system, which bubblewrap cannot "
        "mount on a file (it exits 1 before the suite ever runs)",
        "testing",
        "blocked",
        ("create", "advance", "defer", "defer", "block"),
        "infra-budget-exhausted",
        "not started (bubblewrap's status fd has no exit code of the suite): a tool error, "
        "never a red suite that rolls back to development",
    ),
]


def render(faults: list[Fault]) -> str:
    """docs/reliability.md, from ``faults``."""
    lines = [
        "# Reliability: the fault matrix",
        "",
        "<!-- Generated from tests/integration/test_fault_matrix.py (FAULTS); do not edit.",
        "     Regenerate: python -m tests.integration.test_fault_matrix --write -->",
        "",
        "Each fault is injected into a real engine run (real git, a real database, real child",
        "processes) by `tests/integration/test_fault_matrix.py`, which checks the end state,",
        "the transition kinds, the alert and that no faulted job is ever read as a PASS.",
        "A budget of 2 developer retries, 2 infra retries and 2 merge-gate retries is used",
        "throughout.",
        "",
        "| Fault | Injection | End state (stage / state) | Transitions | Alert | Never a PASS |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for f in faults:
        cell = f.never_pass
        if f.note:
            notes.append(f"- **{f.fault}**: {f.note}")
            cell += " (see note)"
        lines.append(
            f"| {f.fault} | {f.injection} | {f.stage} / {f.state} | {', '.join(f.kinds)} "
            f"| {f.alert or 'none'} | {cell} |"
        )
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += [
        "",
        "The chaos suite (`tests/chaos/`, `bench/chaos.py`) covers `kill -9` of the",
        "orchestrator itself at random moments.",
        "",
        "Bad input has its own tests: hostile artifacts (binary, over 1 MB, a symlink out of",
        "the task folder, a FIFO, a directory) and hostile titles run end to end in",
        "`tests/integration/test_bad_input.py`; every parser has a Hypothesis property",
        "(`tests/unit/parser_properties`, at 100,000 examples by `bench/parsers_fuzz.py`);",
        "`tests/integration/test_cli_properties.py` generates the CLI's argv and",
        "`tests/acceptance/test_api_schema.py` runs schemathesis on the API.",
        "",
        "## Model-API failures",
        "",
        "Across tasks, with the real pinned CLIs against a model server on 127.0.0.1",
        "(`tests/integration/test_backend_faults.py`, `tests/integration/test_llm_spend.py`):",
        "",
        _model_faults(),
        "",
    ]
    return "\n".join(lines)


def _model_faults() -> str:
    # Also under `python -m tests.integration.test_fault_matrix`, where this folder is not
    # on the import path.
    sys.path.insert(0, str(Path(__file__).parent))
    from model_faults_doc import render as rows

    return rows()


def test_reliability_doc_is_current() -> None:
    text = render(FAULTS)
    if os.environ.get(WRITE_ENV):
        DOC.write_text(text)
    assert DOC.exists(), "docs/reliability.md is missing: run with ORCH_WRITE_RELIABILITY_DOC=1"
    assert DOC.read_text() == text, "docs/reliability.md is stale: regenerate it"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        DOC.write_text(render(FAULTS))
        print(f"wrote {DOC}")
    else:
        sys.stdout.write(render(FAULTS))
    sys.exit(0)


# --------------------------------------------------------------------------- the drivers
# (below the __main__ block's exit: --write needs none of the engine's imports)

from orchestrator import alerts, proc_group, repo_ops, task_ops  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.jobcontract import job_marker  # noqa: E402
from orchestrator.store import dependencies, make_engine, normalize_url  # noqa: E402

try:
    from test_engine import STAGES, Harness
except ImportError:  # imported as tests.integration.test_fault_matrix
    from tests.integration.test_engine import STAGES, Harness

AGENT = """
import os, signal, sys
from pathlib import Path
mode, artifact_dir = sys.argv[1], Path(sys.argv[2])
if mode == "crash":
    (artifact_dir / "13-test-report.md").write_text(
        "---\\nresult: PASSED\\nstatus: PASS\\nfailed: 0\\n---\\n")
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "malformed":
    (artifact_dir / "13-test-report.md").write_bytes(
        b"---\\nresult: PASS\\xff\\xfe\\x00ED\\nstatus: P\\x00ASS\\nfailed 0\\n")
"""


@dataclass
class Seen:
    """What a driver saw: the task's end, its history, alerts, and the faulted verdicts."""

    stage: str
    state: str
    kinds: tuple[str, ...]
    alerts: list[str]
    faulted_verdicts: list[str | None]
    jobs: list[tuple[str, int, str | None, str | None]]
    reasons: list[str]


def seen(h: Harness, key: str, faulted: Callable[[Any], bool]) -> Seen:
    t = h.task(key)
    return Seen(
        t.stage,
        t.state,
        tuple(x.kind for x in h.history(key)),
        [a.kind for a in h.alerts() if a.task_id == t.id],
        [j.verdict for j in h.jobs(key) if faulted(j)],
        [(j.stage, j.attempt, j.outcome, j.verdict) for j in h.jobs(key)],
        list(t.reasons),
    )


def _agent_script(h: Harness) -> Path:
    path = h.plan_path.parent / "fault_agent.py"  # the plan folder: readable in the sandbox
    path.write_text(AGENT)
    return path


def _custom_agent(h: Harness, mode: str) -> str:
    return f"command:{sys.executable} {_agent_script(h)} {mode} {{artifact_dir}}"


def _testing(j: Any) -> bool:
    return bool(j.stage == "testing")


def drive_agent_crash(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.add_repo(testing=_custom_agent(h, "crash"))
    key = h.add_task()
    h.run_until_idle()
    return seen(h, key, _testing)


def drive_agent_hang(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    # The agent never ends by itself: any limit is met by a timeout, however loaded the
    # machine.
    h.settings = load_settings(**{**asdict(h.settings), "agent_timeout_s": 0.2})
    h.plan = {"*:testing:*": {"sleep": 60}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    return seen(h, key, _testing)


def drive_merge_retest_timeout(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    # Only the re-test runs under this limit, and it never ends by itself: any limit is met
    # by a timeout, however loaded the machine.
    h.settings = load_settings(**{**asdict(h.settings), "merge_retest_timeout_s": 0.2})
    specs = [f"{s}={h.agent()}" for s in STAGES]
    sleeper = f"{sys.executable} -c 'import time; time.sleep(30)'"
    repo_ops.add_repo(
        h.engine, "demo", h.repo_path, h.repo_input(stages=STAGES, agents=specs, test_cmd=sleeper)
    )
    key = h.add_task()
    h.run_until_idle()
    # Each re-test ended by its limit: the gate's infra trouble was the timeout, every time.
    ends = [x for x in h.history(key) if x.kind in ("defer", "block")]
    assert ends, h.history(key)
    assert all(any("tool error timeout" in r for r in x.reasons) for x in ends), ends
    return seen(h, key, lambda j: j.stage == "deploy-staging")


def drive_missing_artifact(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {"*:testing:*": {"no_artifact": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    return seen(h, key, _testing)


def drive_malformed_artifact(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.add_repo(testing=_custom_agent(h, "malformed"))
    key = h.add_task()
    h.run_until_idle()
    return seen(h, key, _testing)


def drive_contradicting_keys(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {"*:testing:*": {"contradict": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    return seen(h, key, _testing)


def _readme_patch(line: str) -> bytes:
    return (
        b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        b"@@ -1 +1 @@\n-demo\n+" + line.encode() + b"\n"
    )


def drive_git_conflict(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    # Both pass development and testing off the same main before either merges.
    h.plan = {"*:testing:1": {"hold": True}}
    h.save_plan()
    h.add_repo(development="patch")
    first = h.add_task("first", patch=_readme_patch("first"))
    second = h.add_task("second", patch=_readme_patch("second"))
    h.start()
    h.wait_for(lambda: sum(":testing:" in s for s in h.starts()) == 2)
    h.release(first, "testing")
    h.wait_for(lambda: h.task(first).state == "done")
    h.release(second, "testing")
    h.wait_for(lambda: h.task(second).state not in ("active", "deferred"), deadline_s=120)
    h.stop()
    shown = subprocess.run(
        ["git", "show", "main:README.md"],
        cwd=h.repo_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert shown.stdout == "first\n"
    merge = h.folder(second) / "16-merge-report.md"
    assert "CONFLICT" in merge.read_text()
    return seen(h, second, lambda j: j.stage == "deploy-staging")


def drive_lock_busy(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    from orchestrator.engine import worker

    h.plan = {"*:deploy-staging:*": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    lock = h.repo_path / ".git" / "refs" / "heads" / "main.lock"
    real_apply = worker.apply_job_end

    def apply_then_unlock(conn: sa.Connection, **kw: Any) -> Any:
        applied = real_apply(conn, **kw)
        if applied.transition is not None and applied.transition.kind == "defer":
            # The holder lets go once the defer is decided, inside the transaction that
            # queues the gate-only retry: the retry can never meet the lock, however soon
            # its backoff ends and however slowly this test would have seen the defer.
            lock.unlink(missing_ok=True)
        return applied

    mp.setattr(worker, "apply_job_end", apply_then_unlock)
    h.start()
    h.wait_for(lambda: any(":deploy-staging:" in s for s in h.starts()))
    lock.write_text("held by a test\n")
    try:
        h.release(key, "deploy-staging")
        h.wait_for(lambda: "defer" in [x.kind for x in h.history(key)])
    finally:
        lock.unlink(missing_ok=True)
    h.wait_for(lambda: h.task(key).state == "done")
    h.stop()
    return seen(h, key, lambda j: j.stage == "deploy-staging" and j.attempt == 1)


class _JobStatements:
    """The statements the worker's job threads have begun and not yet finished, by number
    in the order begun (SQLAlchemy's cursor events on the engine the worker uses)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._last = 0
        self._running: dict[int, int] = {}  # thread id -> its statement's number
        sa_event.listen(engine, "before_cursor_execute", self._before)
        sa_event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_args: Any) -> None:
        if threading.current_thread().name.startswith("job-"):
            with self._lock:
                self._last = next(self._numbers)
                self._running[threading.get_ident()] = self._last

    def _after(self, *_args: Any) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def begun(self) -> int:
        """The number of the last statement begun (0: none yet)."""
        with self._lock:
            return self._last

    def running(self) -> set[int]:
        with self._lock:
            return set(self._running.values())

    def close(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._before)
        sa_event.remove(self.engine, "after_cursor_execute", self._after)


def drive_db_locked(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {"*:development:*": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    statements = _JobStatements(h.engine)
    h.start()
    h.wait_for(lambda: any(":development:" in s for s in h.starts()))
    other = make_engine(h.settings.database_url)
    held = threading.Event()
    let_go = threading.Event()

    def hold() -> None:
        # Until the driver saw the job's end wait on the lock (a bound if it never does).
        if h.settings.database_url.startswith("sqlite"):
            # Straight through the driver: SQLAlchemy's pysqlite set-up issues its own BEGIN.
            raw = sqlite3.connect(h.settings.database_url.split(":///", 1)[1], isolation_level=None)
            raw.execute("BEGIN IMMEDIATE")
            held.set()
            let_go.wait(60)
            raw.execute("ROLLBACK")
            raw.close()
            return
        with other.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            held.set()
            let_go.wait(60)

    released: list[int] = []
    seen_running: set[int] = set()

    def end_waits() -> bool:
        """The job's end is waiting on the lock: a statement its thread began after the
        release (the job thread touches no database while its command agent runs) is still
        running at two looks of ``wait_for`` (50 ms apart; the lock keeps it running)."""
        running = {n for n in statements.running() if n > released[0]}
        waited = bool(running & seen_running)
        seen_running.clear()
        seen_running.update(running)
        return waited

    locker = threading.Thread(target=hold)
    locker.start()
    try:
        assert held.wait(10), "the second connection never took the lock"
        released.append(statements.begun())
        h.release(key, "development")
        h.wait_for(end_waits)
    finally:
        let_go.set()
        locker.join()
        other.dispose()
        statements.close()
    h.wait_for(lambda: h.task(key).state == "done")
    h.stop()
    return seen(h, key, lambda j: False)


# How long the database stays gone once every part of the engine the fault is about has met
# it: a duration of the fault (each part fails again as its retries back off), not a
# timing assert.
OUTAGE_AFTER_MET_S = 0.5


class _Met(logging.Handler):
    """The places that met a database outage, by the engine's own word: engine.outage logs
    ``database unavailable (<where>)`` once per place as the outage begins for it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.where: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "db-down" and isinstance(record.args, tuple):
            self.where.add(str(record.args[0]))


class Outage:
    """The database refuses everything for a moment.

    Real on PostgreSQL: the test database stops taking connections and every session on it
    is terminated. On SQLite a file cannot go away from under open connections, so the
    outage is injected: every statement of the harness's engine fails with the driver's
    ``OperationalError`` until it ends. ``met``: where the engine met it, from its log.
    """

    def __init__(self, h: Harness) -> None:
        self.url = sa.make_url(h.settings.database_url)
        self.engine = h.engine
        self.down = threading.Event()
        self.pg = self.url.get_backend_name() == "postgresql"
        if not self.pg:
            sa_event.listen(self.engine, "before_cursor_execute", self._refuse)
        self._met = _Met()
        self._log = logging.getLogger("orchestrator.engine.outage")
        self._level = self._log.level

    @property
    def met(self) -> set[str]:
        return self._met.where

    def _refuse(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if self.down.is_set():
            # What SQLAlchemy raises when the driver fails a statement (an event hook runs
            # before its wrapping, so the hook wraps it itself).
            cause = sqlite3.OperationalError("disk I/O error (an injected outage)")
            raise sa.exc.OperationalError(statement, params, cause)

    def _admin(self, *statements: str) -> None:
        admin = sa.create_engine(
            normalize_url(self.url.set(database="postgres")),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.NullPool,
        )
        try:
            with admin.connect() as conn:
                for sql in statements:
                    conn.exec_driver_sql(sql)
        finally:
            admin.dispose()

    def begin(self) -> None:
        # The driver waits on what this handler hears: heard at whatever level another test
        # left the engine's loggers.
        self._log.setLevel(logging.WARNING)
        self._log.addHandler(self._met)
        self.down.set()
        if self.pg:
            name = self.url.database
            self._admin(
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            )

    def end(self) -> None:
        if self.pg:
            self._admin(f'ALTER DATABASE "{self.url.database}" ALLOW_CONNECTIONS true')
        self.down.clear()
        self._log.removeHandler(self._met)
        self._log.setLevel(self._level)


def drive_db_gone(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {"*:development:*": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.start()
    h.wait_for(lambda: any(":development:" in s for s in h.starts()))
    spans = h.plan_path.parent / "SPANS.log"
    outage = Outage(h)
    outage.begin()
    try:
        h.release(key, "development")
        h.wait_for(lambda: spans.exists() and " development " in spans.read_text())
        # The agent has exited: its end, the heartbeats and the claims now meet a dead
        # database; each has met it, then keeps meeting it for a while.
        h.wait_for(lambda: {"apply a job's end", "scheduler loop"} <= outage.met)
        time.sleep(OUTAGE_AFTER_MET_S)
        assert h.thread is not None
        assert h.thread.is_alive(), "the worker died in the outage"
    finally:
        outage.end()
    h.wait_for(lambda: h.task(key).state == "done")
    assert h.thread.is_alive()
    h.stop()
    # The job's end was applied after the outage, not its work redone.
    assert sum(":development:" in s for s in h.starts()) == 1, h.starts()
    return seen(h, key, lambda j: False)


def drive_webhook_down(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens
    h.settings = load_settings(
        **{
            **asdict(h.settings),
            "alert_webhook_url": f"http://127.0.0.1:{port}/hook",
            "developer_retry_budget": 0,
        }
    )
    # Attempts 0.01 s apart rather than the default 0.5 s, 1 s: how long a delivery waits
    # between attempts is not this fault's subject, that each is made and recorded is.
    mp.setattr(alerts, "deliver", functools.partial(alerts.deliver, backoff_s=0.01))
    h.plan = {"*:testing:*": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    # Every bounded attempt is made and recorded, none delivered; then the delivery
    # threads are done (they must not outlive the test's database).
    h.wait_for(lambda: all(a.delivery_attempts == alerts.WEBHOOK_ATTEMPTS for a in h.alerts()))
    for thread in threading.enumerate():
        if thread.name.startswith("alert-"):
            thread.join(30)
    assert h.alerts()
    assert all(a.delivered_at is None for a in h.alerts())
    return seen(h, key, _testing)


def drive_disk_full(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    from orchestrator import taskdir
    from orchestrator.runners import base

    real = taskdir.write_atomic

    def full(path: Path, data: str | bytes, *, durable: bool = True) -> None:
        if Path(path).name == "13-test-report.md":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data, durable=durable)

    mp.setattr(taskdir, "write_atomic", full)
    mp.setattr(base, "write_atomic", full)
    specs = [f"development={h.agent()}", "deploy-staging=" + h.agent()]
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        h.repo_input(stages=STAGES, agents=specs, test_cmd=PYTEST_CMD),
    )
    key = h.add_task()
    h.run_until_idle()
    assert not (h.folder(key) / "13-test-report.md").exists()
    return seen(h, key, _testing)


def drive_kill_after_patch_commit(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    from orchestrator import taskdir
    from orchestrator.engine.worker import Worker
    from orchestrator.gitops import commits, worktrees
    from orchestrator.store import jobs as jobq

    h.add_repo(development="patch")
    # A patch that adds a file, as the chaos suite's tasks do.
    new_file = (
        b"diff --git a/NEW.md b/NEW.md\nnew file mode 100644\n--- /dev/null\n+++ b/NEW.md\n"
        b"@@ -0,0 +1 @@\n+after a crash\n"
    )
    key = h.add_task(patch=new_file)
    made = worktrees.ensure_worktree(h.repo_path, "main", h.settings.worktrees_dir, "demo", key)
    assert made.path is not None
    patch = taskdir.patch_for_attempt(h.folder(key), 1)
    assert patch is not None
    assert commits.apply_patch(made.path, patch)[0]
    assert commits.commit_staged(made.path, f"{key}: T (patch {patch.name}, attempt 1)")
    here = Worker(h.settings, h.engine).host
    with h.engine.begin() as conn:
        claimed = jobq.claim_jobs(
            conn,
            owner=f"{here}:999999999:1",
            host=here,
            now=time.time(),
            lease_s=300,
            limits=jobq.ClaimLimits(4, 4),
        )
    assert [j.stage for j in claimed] == ["development"]
    h.run_until_idle()
    first = next(j for j in h.jobs(key) if j.stage == "development")
    assert any("recovered from" in r for r in first.reasons)
    assert any("already committed on the task branch" in r for r in first.reasons), first.reasons
    log = subprocess.run(
        ["git", "log", "--format=%s", "main", "--", "NEW.md"],
        cwd=h.repo_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert len(log.stdout.splitlines()) == 1  # on main exactly once
    # No faulted job here: the killed run's work was real and the re-run may pass.
    return seen(h, key, lambda j: False)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def _patch_of(repo: Path, files: dict[str, str | None]) -> bytes:
    """A real patch (full blob ids, so --3way can merge) of ``files`` against HEAD; the
    repo is left as it was. None deletes a file."""
    for rel, text in files.items():
        if text is None:
            (repo / rel).unlink()
        else:
            (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    patch = _git(repo, "diff", "--cached", "--full-index", "--binary").encode()
    _git(repo, "read-tree", "HEAD")
    _git(repo, "checkout-index", "-a", "-u", "-q", "-f")
    for rel in files:
        if not _git(repo, "ls-files", rel).strip():
            (repo / rel).unlink(missing_ok=True)
    return patch


def _commit_on_main(repo: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "a human commits on main")


def _main_tree(h: Harness) -> list[str]:
    return _git(h.repo_path, "ls-tree", "-r", "--name-only", "main").split()


def drive_conflicted_patch_then_retry(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.add_repo(development="patch")
    conflicting = _patch_of(h.repo_path, {"README.md": "the task's line\n"})
    _commit_on_main(h.repo_path, {"README.md": "main's line\n"})
    key = h.add_task(patch=conflicting)
    h.run_until_idle()
    assert h.task(key).state == "blocked"
    dev = [j for j in h.jobs(key) if j.stage == "development"]
    for job in dev:
        # git's own message, every time: not the debris of the attempt before.
        assert any("with conflicts" in r or "patch failed" in r for r in job.reasons), job.reasons
        assert not any("does not exist in index" in r for r in job.reasons), job.reasons
    worktree = h.settings.worktrees_dir / "demo" / key
    assert _git(worktree, "status", "--porcelain") == ""
    new_file = _patch_of(h.repo_path, {"NEW.md": "a new file\n"})
    task_ops.retry_task(h.engine, h.settings, key, patch=new_file)
    h.run_until_idle()
    shown = _git(h.repo_path, "show", "main:README.md")
    assert shown == "main's line\n"
    assert "NEW.md" in _main_tree(h)
    grep = subprocess.run(
        ["git", "grep", "-n", "-e", "<<<<<<<", "-e", ">>>>>>>", "main"],
        cwd=h.repo_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert grep.returncode == 1, grep.stdout  # no conflict marker anywhere on main
    return seen(h, key, lambda j: j.stage == "development" and j.attempt <= 3)


def drive_fresh_retry(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.add_repo(development="patch")
    _commit_on_main(h.repo_path, {"LATER.md": "later\n"})
    needs_later = _patch_of(h.repo_path, {"LATER.md": "later, edited\n"})
    _git(h.repo_path, "rm", "-q", "LATER.md")
    _git(h.repo_path, "commit", "-q", "-m", "not yet")
    key = h.add_task(patch=needs_later)
    h.run_until_idle()
    assert h.task(key).state == "blocked"
    _commit_on_main(h.repo_path, {"LATER.md": "later\n"})
    task_ops.retry_task(h.engine, h.settings, key, fresh=True)
    h.run_until_idle()
    assert _git(h.repo_path, "show", "main:LATER.md") == "later, edited\n"
    fresh = [j for j in h.jobs(key) if j.stage == "development"][-1]
    assert fresh.fresh_start == "carry"
    return seen(h, key, lambda j: j.stage == "development" and j.attempt <= 3)


def drive_branch_no_longer_rebases(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    # The second task: README.md demo -> x, then (after a failed test) x -> demo plus a new
    # file. Its branch cannot be rebased over the first task's README.md change, but its
    # change as a whole (the new file) still applies to current main.
    h.plan = {"DEMO-2:testing:1": {"verdict": "FAIL"}, "DEMO-2:testing:2": {"hold": True}}
    h.save_plan()
    h.add_repo(development="patch")
    first = h.add_task("first", patch=_readme_patch("first"))
    second = h.add_task("second", patch=_patch_of(h.repo_path, {"README.md": "x\n"}))
    _git(h.repo_path, "checkout", "-q", "-b", "scratch")
    _commit_on_main(h.repo_path, {"README.md": "x\n"})
    back = _patch_of(h.repo_path, {"README.md": "demo\n", "NEW.md": "new\n"})
    _git(h.repo_path, "checkout", "-q", "main")
    from orchestrator import taskdir

    taskdir.add_patch(h.folder(second), back)  # attached up front: development attempt 2
    h.start()
    h.wait_for(lambda: h.task(first).state == "done", deadline_s=120)
    h.release(second, "testing", 2)
    h.wait_for(lambda: h.task(second).state not in ("active", "deferred"), deadline_s=120)
    h.stop()
    assert h.task(second).state == "done", h.history(second)[-1].reasons
    assert _git(h.repo_path, "show", "main:README.md") == "first\n"
    assert _git(h.repo_path, "show", "main:NEW.md") == "new\n"
    rollback = [x for x in h.history(second) if x.kind == "rollback"][-1]
    assert any("conflicts in: README.md" in r for r in rollback.reasons), rollback.reasons
    third = [j for j in h.jobs(second) if j.stage == "development"][-1]
    assert (third.attempt, third.fresh_start) == (3, "carry")
    carried = (h.folder(second) / "runs" / f"{third.id}-carried.diff").read_text()
    assert "NEW.md" in carried
    assert "README.md" not in carried
    return seen(h, second, lambda j: j.stage == "deploy-staging" and j.attempt == 1)


def drive_no_gitignore_bytecode(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    specs = ["development=patch", "testing=test-runner", f"deploy-staging={h.agent()}"]
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        h.repo_input(stages=STAGES, agents=specs, test_cmd=PYTEST_CMD),
    )
    assert not (h.repo_path / ".gitignore").exists()
    test = "from calc import double\n\n\ndef test_double():\n    assert double(2) == 4\n"
    buggy = {"calc.py": "def double(x):\n    return x + 1\n", "test_calc.py": test}
    key = h.add_task(patch=_patch_of(h.repo_path, buggy))
    from orchestrator import taskdir

    _git(h.repo_path, "checkout", "-q", "-b", "scratch")
    _commit_on_main(h.repo_path, buggy)
    fix = _patch_of(h.repo_path, {"calc.py": "def double(x):\n    return x * 2\n"})
    _git(h.repo_path, "checkout", "-q", "main")
    taskdir.add_patch(h.folder(key), fix)  # attached up front: development attempt 2
    h.run_until_idle()
    tree = _main_tree(h)
    assert "calc.py" in tree
    assert not [p for p in tree if p.endswith((".pyc", ".pyo")) or "__pycache__" in p], tree
    assert not [p for p in tree if ".pytest_cache" in p or ".coverage" in p], tree
    merge = (h.folder(key) / "16-merge-report.md").read_text()
    assert "retest: skipped" in merge, merge
    return seen(h, key, lambda j: j.stage == "testing" and j.attempt == 1)


def drive_merge_gate_own_budget(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.settings = load_settings(**{**asdict(h.settings), "staging_runner_infra_retry_budget": 0})
    h.add_repo(deploy_staging="staging-runner")
    lock = h.repo_path / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("held by a test\n")
    before = _git(h.repo_path, "rev-parse", "main")
    try:
        key = h.add_task()
        h.run_until_idle()
    finally:
        lock.unlink()
    assert _git(h.repo_path, "rev-parse", "main") == before
    retries = [j for j in h.jobs(key) if j.stage == "deploy-staging"]
    assert [j.agent for j in retries] == ["staging-runner", "gate-only", "gate-only"]
    assert h.task(key).gate_retries == 2
    return seen(h, key, lambda j: j.stage == "deploy-staging")


RETEST = """
import os, sys, time
from pathlib import Path
here = Path(sys.argv[1])
(here / f"RETEST-{os.getpid()}").write_text("")
if (here / "HOLD").exists():
    time.sleep(120)
"""


def drive_kill_9_during_retest(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    import signal

    orch = Path(sys.executable).with_name("orch")
    box = h.tmp / "retest"
    box.mkdir()
    script = box / "retest.py"
    script.write_text(RETEST)
    (box / "HOLD").write_text("")
    specs = [f"{s}={h.agent()}" for s in STAGES]
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        repo_ops.RepoInput(
            stages=STAGES,
            agents=specs,
            test_cmd=f"{sys.executable} {script} {box}",
            sandbox_rw=[str(h.plan_path.parent), str(box)],
        ),
    )
    key = h.add_task()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
    }
    env.update(
        ORCH_HOME=str(h.settings.home),
        ORCH_DATABASE_URL=h.settings.effective_database_url,
        ORCH_POLL_INTERVAL_S="0.2",
        ORCH_HEARTBEAT_INTERVAL_S="0.5",
        ORCH_JOB_LEASE_S="3",
        ORCH_KILL_GRACE_S="0.5",
    )
    run = subprocess.Popen(
        [str(orch), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        h.wait_for(lambda: any(box.glob("RETEST-*")), deadline_s=120)
        (job,) = [j for j in h.jobs(key) if j.state == "running"]
        # The re-test's processes, seen from here, by the job's marker (inside the sandbox
        # a process's own pid is its namespace's).
        marker = job_marker(job)
        assert proc_group.find_marked(marker)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    (box / "HOLD").unlink()
    h.run_until_idle()
    left = proc_group.find_marked(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the killed worker's re-test outlived recovery"
    with h.engine.connect() as conn:
        from orchestrator.store import merges

        results = merges.list_merge_results(conn, task_id=h.task(key).id)
    assert [r.status for r in results] == ["MERGED"]  # evaluated once, by the re-run
    return seen(h, key, lambda j: False)


def drive_dependency_blocked(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {
        "DEMO-1:testing:*": {"verdict": "FAIL"},
        "DEMO-1:testing:1": {"verdict": "FAIL", "hold": True},
    }
    h.save_plan()
    h.add_repo()
    first = h.add_task("first")
    h.start()
    h.wait_for(lambda: any(s.startswith(f"{first}:testing:") for s in h.starts()))
    second = task_ops.add_task(h.engine, h.settings, "demo", "second", after=[first]).task.key
    h.release(first, "testing")
    h.wait_for(lambda: h.task(first).state == "blocked", deadline_s=120)
    h.stop()
    h.run_until_idle()  # ends: nothing that can move is left
    assert not any(s.startswith(f"{second}:") for s in h.starts())
    with h.engine.connect() as conn:
        waits = dependencies.waiting_on(conn, h.task(second).id)
    assert [(w.key, w.state) for w in waits] == [(first, "blocked")]
    return seen(h, second, lambda j: True)


def drive_main_rewound(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.add_repo()
    first = h.add_task("first")
    h.run_until_idle()
    assert h.task(first).state == "done"
    merged = _git(h.repo_path, "rev-parse", "main").strip()
    _git(h.repo_path, "update-ref", "refs/heads/main", "main~1")  # someone rewinds main
    rewound = _git(h.repo_path, "rev-parse", "main").strip()
    second = h.add_task("second")
    h.run_until_idle()
    assert _git(h.repo_path, "rev-parse", "main").strip() == rewound  # not built on
    task = h.task(second)
    assert any("the last main the merge gate made" in r for r in task.reasons), task.reasons
    assert any(merged[:12] in r for r in task.reasons)
    seen_now = seen(h, second, lambda j: j.stage == "deploy-staging")
    # A human looked: the rewound main is right. Trust it, retry: the task merges on it.
    repo_ops.set_repo(h.engine, "demo", repo_ops.RepoInput(trust_main=True))
    task_ops.retry_task(h.engine, h.settings, second)
    h.run_until_idle()
    assert h.task(second).state == "done"
    assert _git(h.repo_path, "rev-parse", "main~1").strip() == rewound
    return seen_now


def drive_sandbox_start_failure(h: Harness, mp: pytest.MonkeyPatch) -> Seen:
    h.plan = {"*:development:*": {"hold": True}}
    h.save_plan()
    specs = [f"development={h.agent()}", "testing=test-runner", f"deploy-staging={h.agent()}"]
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        h.repo_input(stages=STAGES, agents=specs, test_cmd=PYTEST_CMD),
    )
    key = h.add_task()
    # Outside /tmp: the sandbox's /tmp is a fresh one, where any path is free.
    folder = Path(tempfile.mkdtemp(prefix="orch-fault-", dir="/var/tmp"))
    bundle = folder / "backup.bundle"
    bundle.write_bytes(b"# v2 git bundle\n")
    try:
        h.start()
        h.wait_for(lambda: any(":development:" in s for s in h.starts()))
        _git(h.repo_path, "remote", "add", "backup", str(bundle))
        h.release(key, "development")
        h.wait_for(lambda: h.task(key).state == "blocked")
        h.stop()
    finally:
        shutil.rmtree(folder)
    got = seen(h, key, _testing)
    assert any("sandbox failed to start: bwrap: " in r for r in got.reasons), got
    assert not any("tests failed" in r for r in got.reasons), got
    return got


DRIVERS: dict[str, Callable[[Harness, pytest.MonkeyPatch], Seen]] = {
    "agent-crash": drive_agent_crash,
    "agent-hang": drive_agent_hang,
    "merge-retest-timeout": drive_merge_retest_timeout,
    "missing-artifact": drive_missing_artifact,
    "malformed-artifact": drive_malformed_artifact,
    "contradicting-keys": drive_contradicting_keys,
    "git-conflict": drive_git_conflict,
    "lock-busy": drive_lock_busy,
    "db-locked": drive_db_locked,
    "db-gone": drive_db_gone,
    "webhook-down": drive_webhook_down,
    "disk-full": drive_disk_full,
    "kill-after-patch-commit": drive_kill_after_patch_commit,
    "conflicted-patch-then-retry": drive_conflicted_patch_then_retry,
    "fresh-retry": drive_fresh_retry,
    "branch-no-longer-rebases": drive_branch_no_longer_rebases,
    "no-gitignore-bytecode": drive_no_gitignore_bytecode,
    "merge-gate-own-budget": drive_merge_gate_own_budget,
    "kill-9-during-retest": drive_kill_9_during_retest,
    "dependency-blocked": drive_dependency_blocked,
    "main-rewound": drive_main_rewound,
    "sandbox-start-failure": drive_sandbox_start_failure,
}


@pytest.fixture
def fh(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    files = {"README.md": "demo\n", "test_ok.py": "def test_ok():\n    assert True\n"}
    harness = Harness(tmp_path, migrated_db_url, make_repo(files=files))
    yield harness
    harness.stop()
    harness.engine.dispose()


def test_every_fault_has_a_driver() -> None:
    assert sorted(DRIVERS) == sorted(f.id for f in FAULTS)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault_ends_where_documented(
    fault: Fault, fh: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = DRIVERS[fault.id](fh, monkeypatch)
    assert (got.stage, got.state) == (fault.stage, fault.state), got
    assert got.kinds == fault.kinds, got
    assert got.alerts == ([fault.alert] if fault.alert else []), got
    # Never a PASS: no faulted job was read as a PASS.
    assert "PASS" not in got.faulted_verdicts, got
