"""Latency of ``GET /queue`` and ``GET /status`` on a big database, and ``/health`` throughput.

    python bench/api.py [--tasks 10000] [--jobs 100000] [--requests 300] [--health-s 5]
                        [--database-url URL]

1. Fills a fresh database (SQLite in a temp home unless --database-url is given) with
   ``--tasks`` tasks and ``--jobs`` jobs, bulk-inserted with SQLAlchemy Core executemany
   (not through ops): most tasks done, some active with a queued job, some running, deferred
   and blocked; finished jobs of every agent with outcomes, verdicts, durations and costs;
   their transitions, some alerts and merge results.
2. Starts a real ``orch serve --no-scheduler`` on a free loopback port.
3. ``/queue`` and ``/status``: ``--requests`` sequential requests each over one keep-alive
   connection; median and p99 in ms (goal: /queue p99 under 25 ms).
4. ``/health``: requests per second from 4 client threads over ``--health-s`` seconds.
5. The same latencies again after adding the indexes proposed for a migration
   (``PROPOSED_INDEXES``), so the figures show what they buy.

No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sqlalchemy as sa

from orchestrator.store import make_engine, upgrade
from orchestrator.store.schema import alerts, jobs, merge_results, repos, tasks, transitions

ORCH = Path(sys.executable).with_name("orch")
STAGES = ["development", "testing", "deploy-staging"]
AGENTS = {
    "development": "command:dev",
    "testing": "test-runner",
    "deploy-staging": "staging-runner",
}
BATCH = 5000

# Indexes the API's lists need; migration 0004 has them, so this step is a no-op now:
# tasks by state, newest first (deferred and blocked lists), and queued jobs by task
# (the queue's counts join them to their task without reading each job's row).
PROPOSED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_tasks_state_updated_at ON tasks (state, updated_at)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_state_task_id ON jobs (state, task_id)",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        conn.execute(sa.insert(table), rows[i : i + BATCH])


def fill(engine: sa.Engine, n_tasks: int, n_jobs: int, repo_path: str) -> None:
    """Bulk rows: tasks by state, jobs spread over them, transitions, alerts, merge results."""
    rnd = random.Random(7)
    now = time.time()
    n_repos = 5
    with engine.begin() as conn:
        _insert(
            conn,
            repos,
            [
                {
                    "id": r + 1,
                    "name": f"repo{r}",
                    "path": repo_path,
                    "main_branch": "main",
                    "key_prefix": f"R{r}",
                    "next_task_number": n_tasks + 1,
                    "stages": STAGES,
                    "agents": AGENTS,
                    "agent_env": [],
                    "options": {},
                    "self_hosting": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in range(n_repos)
            ],
        )
        # States: 75 % done, 12 % active (queued), 1 % running, 5 % deferred, 7 % blocked.
        plan: list[tuple[str, str | None]] = []
        for i in range(n_tasks):
            x = (i * 7919) % 100
            if x < 75:
                plan.append(("done", None))
            elif x < 87:
                plan.append(("active", "queued"))
            elif x < 88:
                plan.append(("active", "running"))
            elif x < 93:
                plan.append(("deferred", "queued"))
            else:
                plan.append(("blocked", None))
        task_rows = []
        for i, (state, _live) in enumerate(plan):
            repo_id = i % n_repos + 1
            stage = "deploy-staging" if state == "done" else rnd.choice(STAGES)
            task_rows.append(
                {
                    "id": i + 1,
                    "key": f"R{repo_id - 1}-{i + 1}",
                    "repo_id": repo_id,
                    "number": i + 1,
                    "title": f"bench task {i}",
                    "body": "x" * 200,
                    "stage": stage,
                    "state": state,
                    "reasons": [f"reason for {state}"],
                    "developer_retries": 0,
                    "infra_retries": 1 if state == "deferred" else 0,
                    "created_at": now - 86400 + i,
                    "updated_at": now - 3600 + i * 0.3,
                }
            )
        _insert(conn, tasks, task_rows)
        job_rows: list[dict[str, Any]] = []
        trans_rows: list[dict[str, Any]] = []
        per_task = max(1, n_jobs // n_tasks)
        job_id = 0
        running_serial: set[str] = set()
        for t in task_rows:
            state = t["state"]
            live = plan[t["id"] - 1][1]
            for attempt in range(1, per_task + 1):
                job_id += 1
                stage = STAGES[(attempt - 1) % len(STAGES)]
                last = attempt == per_task
                started = now - 80000 + job_id * 0.5
                row: dict[str, Any] = {
                    "id": job_id,
                    "task_id": t["id"],
                    "stage": stage,
                    "agent": AGENTS[stage],
                    "attempt": attempt,
                    "state": "finished",
                    "outcome": rnd.choice(["completed"] * 8 + ["timeout", "crashed"]),
                    "verdict": rnd.choice(["PASS", "PASS", "FAIL"]),
                    "reasons": ["bench"],
                    "not_before": started,
                    "cancel_requested": False,
                    "created_at": started - 1,
                    "started_at": started,
                    "finished_at": started + rnd.uniform(0.5, 900),
                    "cost_usd": 0.05 if stage == "development" else None,
                    "serial_key": None,
                }
                if last and live is not None:
                    row.update(outcome=None, verdict=None, finished_at=None, cost_usd=None)
                    row["state"] = live
                    if live == "running":
                        row.update(lease_owner="bench:1:1", host="bench", started_at=now - 30)
                        repo_name = f"repo{t['repo_id'] - 1}"
                        if stage == "deploy-staging" and repo_name not in running_serial:
                            row["serial_key"] = repo_name
                            running_serial.add(repo_name)
                    else:
                        row.update(started_at=None)
                        if state == "deferred":
                            row["not_before"] = now + rnd.uniform(10, 600)
                job_rows.append(row)
            for kind in ("create", "advance", "advance", "done" if state == "done" else "defer"):
                trans_rows.append(
                    {
                        "task_id": t["id"],
                        "kind": kind,
                        "from_stage": None,
                        "to_stage": t["stage"],
                        "from_state": None,
                        "to_state": state,
                        "reasons": [f"{kind} for the bench"],
                        "actor": "bench",
                        "at": now - 1000,
                    }
                )
        _insert(conn, jobs, job_rows)
        _insert(conn, transitions, trans_rows)
        blocked = [t for t in task_rows if t["state"] == "blocked"]
        _insert(
            conn,
            alerts,
            [
                {
                    "task_id": t["id"],
                    "kind": "task-blocked",
                    "severity": "warning",
                    "message": f"{t['key']} is blocked",
                    "reasons": ["bench"],
                    "created_at": now - 500,
                    "delivery_attempts": 0,
                }
                for t in blocked
            ],
        )
        done = [t for t in task_rows if t["state"] == "done"]
        _insert(
            conn,
            merge_results,
            [
                {
                    "task_id": t["id"],
                    "status": "MERGED",
                    "retest": "skipped",
                    "rounds": 1,
                    "reasons": ["bench"],
                    "at": now - 100,
                }
                for t in done
            ],
        )
    print(
        f"filled: {len(task_rows)} tasks, {len(job_rows)} jobs, {len(trans_rows)} transitions, "
        f"{len(blocked)} alerts, {len(done)} merge results"
    )


def timed_gets(port: int, path: str, n: int) -> list[float]:
    """``n`` sequential GETs over one keep-alive connection; each latency in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            out.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                print(f"  {path}: HTTP {resp.status}")
                break
    finally:
        conn.close()
    return out


def health_rps(port: int, seconds: float, threads: int = 4) -> float:
    """Requests per second to /health from ``threads`` keep-alive clients."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < stop:
                conn.request("GET", "/health")
                conn.getresponse().read()
                counts[i] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - t0)


def show(path: str, ms: list[float]) -> None:
    ms_sorted = sorted(ms)
    p99 = ms_sorted[min(len(ms_sorted) - 1, int(len(ms_sorted) * 0.99))]
    print(
        f"GET {path:<8} n={len(ms):<4} median {statistics.median(ms):7.2f} ms   "
        f"p99 {p99:7.2f} ms   max {ms_sorted[-1]:7.2f} ms"
    )


def measure(port: int, n: int) -> None:
    for path in ("/queue", "/status"):
        timed_gets(port, path, 10)  # warm-up: connection pool, statement caches
        show(path, timed_gets(port, path, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--health-s", type=float, default=5.0)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-api-"))
    home = tmp / "home"
    url = args.database_url or f"sqlite:///{home / 'orchestrator.db'}"
    engine = make_engine(url)
    upgrade(engine)
    t0 = time.perf_counter()
    fill(engine, args.tasks, args.jobs, str(tmp))
    print(f"fill took {time.perf_counter() - t0:.1f} s ({engine.dialect.name})")
    engine.dispose()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(home), ORCH_DATABASE_URL=url)
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(ORCH), "serve", "--no-scheduler", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if timed_gets(port, "/health", 1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"the server did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.1)
        measure(port, args.requests)
        print(f"GET /health  {health_rps(port, args.health_s):8.0f} requests/s (4 client threads)")
        engine = make_engine(url)
        with engine.begin() as conn:
            for ddl in PROPOSED_INDEXES:
                conn.exec_driver_sql(ddl)
        engine.dispose()
        print("with the proposed indexes:")
        measure(port, args.requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
