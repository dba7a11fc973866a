"""Latency of the API on a big database and of the dashboard on a board-sized one.

    python bench/api.py [--tasks 10000] [--jobs 100000] [--requests 300] [--min-s 12]
                        [--board-tasks 1000] [--board-jobs 10000] [--health-s 5]
                        [--database-url URL] [--board-only]

1. Fills a fresh database (SQLite in a temp home unless --database-url is given) with
   ``--tasks`` tasks and ``--jobs`` jobs, bulk-inserted with SQLAlchemy Core executemany
   (not through ops): most tasks done, some active with a queued job, some running, deferred
   and blocked; finished jobs of every agent with outcomes, verdicts, durations and costs;
   their transitions, some alerts and merge results.
2. Starts a real ``orch serve --no-scheduler`` on a free loopback port.
3. ``/health`` (the baseline: one ``SELECT 1``), ``/queue`` and ``/status``: sequential
   requests over one keep-alive connection, at least ``--requests`` of them and for at least
   ``--min-s`` seconds (so anything the server does every few seconds shows in the p99);
   median, p99 and max in ms (goal: /queue p99 under 25 ms).
4. ``/health``: requests per second from 4 client threads over ``--health-s`` seconds.
5. A second database of ``--board-tasks`` tasks (the dashboard's size): ``/health`` again
   as the baseline, the dashboard ``/`` and its fragment ``/ui/board``, and ``/tasks`` as a
   client pages it (goal: each under 20 ms median). ``--board-only``: this part alone.

No asserts: figures to read, each beside the ``/health`` of the same server.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
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


def timed_gets(
    port: int, path: str, n: int, min_s: float = 0.0, headers: dict[str, str] | None = None
) -> list[float]:
    """At least ``n`` sequential GETs over one keep-alive connection, for at least
    ``min_s`` seconds, with ``headers`` (the token: every read but /health needs it); each
    latency in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out: list[float] = []
    until = time.monotonic() + min_s
    try:
        while len(out) < n or time.monotonic() < until:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers or {})
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
        f"GET {path:<22} n={len(ms):<5} median {statistics.median(ms):7.2f} ms   "
        f"p99 {p99:7.2f} ms   max {ms_sorted[-1]:7.2f} ms"
    )


def measure(served: tuple[int, dict[str, str]], paths: list[str], n: int, min_s: float) -> None:
    port, headers = served
    for path in paths:
        timed_gets(port, path, 10, headers=headers)  # warm-up: connection pool, caches
        show(path, timed_gets(port, path, n, min_s, headers))


def filled(tmp: Path, name: str, url: str, n_tasks: int, n_jobs: int) -> str:
    """A fresh database at ``url`` (or a SQLite file under ``tmp/name``), filled."""
    url = url or f"sqlite:///{tmp / name / 'orchestrator.db'}"
    (tmp / name).mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    upgrade(engine)
    t0 = time.perf_counter()
    fill(engine, n_tasks, n_jobs, str(tmp))
    print(f"fill took {time.perf_counter() - t0:.1f} s ({engine.dialect.name})")
    engine.dispose()
    return url


@contextlib.contextmanager
def serving(tmp: Path, name: str, url: str) -> Iterator[tuple[int, dict[str, str]]]:
    """``orch serve --no-scheduler`` on ``url``, on a free loopback port, until exit: its
    port, and the headers a client that reads sends (the token the server made)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp / name), ORCH_DATABASE_URL=url)
    log_path = tmp / f"serve-{name}.log"
    with log_path.open("wb") as log:
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
                    sys.exit(f"the server did not start: {log_path.read_text()}")
                time.sleep(0.1)
            token = (tmp / name / "api-token").read_text().strip()
            yield port, {"Authorization": f"Bearer {token}"}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def wipe(url: str) -> None:
    """Empty a given (PostgreSQL) database for the next fill."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


def big(tmp: Path, args: argparse.Namespace) -> None:
    """Parts 1 to 4: the API on ``--tasks`` tasks and ``--jobs`` jobs."""
    if args.database_url:
        wipe(args.database_url)
    url = filled(tmp, "big", args.database_url, args.tasks, args.jobs)
    with serving(tmp, "big", url) as served:
        measure(served, ["/health", "/queue", "/status"], args.requests, args.min_s)
        rps = health_rps(served[0], args.health_s)
        print(f"GET /health  {rps:8.0f} requests/s (4 client threads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--min-s", type=float, default=12.0)
    parser.add_argument("--board-tasks", type=int, default=1_000)
    parser.add_argument("--board-jobs", type=int, default=10_000)
    parser.add_argument("--health-s", type=float, default=5.0)
    parser.add_argument("--database-url", default="", help="PostgreSQL: wiped before each fill")
    parser.add_argument("--board-only", action="store_true", help="only part 5, the dashboard")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-api-"))
    try:
        if not args.board_only:
            big(tmp, args)
        if args.database_url:
            wipe(args.database_url)
        url = filled(tmp, "board", args.database_url, args.board_tasks, args.board_jobs)
        with serving(tmp, "board", url) as served:
            paths = ["/health", "/", "/ui/board", "/tasks", "/tasks?limit=50"]
            measure(served, paths, args.requests, 0.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
