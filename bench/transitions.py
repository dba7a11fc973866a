"""Orchestration overhead per stage transition, throughput, wake-ups and idle CPU.

    python bench/transitions.py [--transitions 500] [--tasks 1000] [--parallel 8] [--idle-s 10]
        [--workers 1,2,4] [--worker-tasks 300] [--repos 4] [--wake-samples 20]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--only SECTIONS]

1. Overhead: tasks go one at a time through development → testing → deploy-staging →
   deploy → post-deploy-monitor with no-op agents (``sh`` writing the artifact). For each
   transition: the previous job's process exit to the next job's process start, read from
   timestamps the agents themselves write. Baseline, in the same process: the same agent
   commands run back to back by a bare loop (subprocess.run), and by the same loop with
   each command in the agent's sandbox (bubblewrap), so the engine's own cost is told
   apart from the sandbox's start-up. Printed as median and p95, the overhead as the
   difference and the ratio, and per kind of transition (development→testing, the merge
   gate at deploy-staging→deploy, ...) against the loops' gaps between the same agents.
   Beside them, what the engine spent per job: this process's CPU and its SQL statements,
   figures that a loaded machine moves less than the gaps.
2. Throughput: ``--tasks`` tasks through the same pipeline with ``--parallel`` jobs at once,
   one in-process worker.
3. Workers: 1, 2 and 4 ``orch worker`` processes on one database, on SQLite and, with
   ``--database-url``, on PostgreSQL side by side. Overhead per transition as in 1 (one
   job at a time, the workers competing for each claim); throughput with
   ``--worker-tasks`` tasks over ``--repos`` repos (the serial gate lets one task per repo
   deploy at a time) in ``--parallel`` slots, the same for every count since the limit
   is global.
4. Wake-up (PostgreSQL): a task filed by another process while the worker sleeps, to its
   first job's start, with LISTEN/NOTIFY on and off (then only the 1 s poll finds it).
5. Idle CPU: a worker with nothing to do, CPU seconds per wall second.

No asserts: figures to read. ``--database-url`` names a PostgreSQL server; each run makes a
database of its own there and drops it afterwards. Sections: overhead, throughput,
workers, wake, idle (default all).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import itertools

import sqlalchemy as sa

from orchestrator import repo_ops, sandbox, task_ops
from orchestrator.config import Settings, load_settings
from orchestrator.engine.worker import Worker
from orchestrator.store import make_engine, normalize_url, upgrade

STAGES = ["development", "testing", "deploy-staging", "deploy", "post-deploy-monitor"]
KEYS = {
    "development": "dev_status: DONE",
    "testing": "result: PASSED\\nstatus: PASS\\nfailed: 0",
    "deploy-staging": "staging_status: PASSED",
    "deploy": "deploy_status: SUCCEEDED",
    "post-deploy-monitor": "monitor_status: HEALTHY",
}
NAMES = {
    "development": "10-dev-report.md",
    "testing": "13-test-report.md",
    "deploy-staging": "15-staging-log.md",
    "deploy": "17-deploy-log.md",
    "post-deploy-monitor": "18-monitor-report.md",
}


def agent_script(stage: str, stamps: Path) -> str:
    """A no-op agent: stamp start, write the artifact (and a change), stamp end."""
    change = 'echo "$ORCH_TASK" > "$ORCH_TASK.txt"; ' if stage == "development" else ""
    return (
        f'echo "s $ORCH_TASK {stage} $(date +%s.%N)" >> {stamps}; '
        f"{change}"
        f'printf -- "---\\n{KEYS[stage]}\\n---\\n" > "$ORCH_ARTIFACT_DIR/{NAMES[stage]}"; '
        f'echo "e $ORCH_TASK {stage} $(date +%s.%N)" >> {stamps}'
    )


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@localhost",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@localhost",
    }
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)


def setup(
    root: Path, db_url: str | None, parallel: int, stamps: Path, repos: int = 1
) -> tuple[Settings, sa.Engine, list[str]]:
    """A home, ``repos`` repos with the no-op agents, and their names."""
    home = root / "home"
    settings = load_settings(
        home=home,
        database_url=db_url or "",
        max_parallel_jobs=parallel,
        max_parallel_jobs_per_repo=parallel,
        poll_interval_s=1.0,
    )
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    stamps.parent.mkdir(parents=True, exist_ok=True)
    agents = []
    for stage in STAGES:
        script = agent_script(stage, stamps).replace("'", "'\\''")
        agents.append(f"{stage}=command:sh -c '{script}'")
    names = []
    for i in range(repos):
        name = "bench" if i == 0 else f"bench{i + 1}"
        repo = root / name
        make_repo(repo)
        # The merge gate re-tests the merged tree with the repo's test command: one that
        # passes at once, as the no-op agents have no suite.
        # The agents stamp into their own folder, the one path the sandbox lets them write
        # besides the worktree and the job's folders.
        spec = repo_ops.RepoInput(
            stages=STAGES,
            agents=agents,
            test_cmd=f"{sys.executable} -c pass",
            sandbox_rw=[str(stamps.parent)],
        )
        repo_ops.add_repo(engine, name, repo, spec)
        names.append(name)
    return settings, engine, names


def read_stamps(stamps: Path) -> dict[str, list[tuple[str, float, float]]]:
    starts: dict[tuple[str, str], float] = {}
    ends: dict[tuple[str, str], float] = {}
    for line in stamps.read_text().splitlines():
        kind, task, stage, ts = line.split()
        (starts if kind == "s" else ends)[(task, stage)] = float(ts)
    per_task: dict[str, list[tuple[str, float, float]]] = {}
    for (task, stage), start in starts.items():
        per_task.setdefault(task, []).append((stage, start, ends[(task, stage)]))
    for rows in per_task.values():
        rows.sort(key=lambda r: r[1])
    return per_task


def gaps(per_task: dict[str, list[tuple[str, float, float]]]) -> list[float]:
    """Exit of one job to the start of the next, over the whole chain in time order.

    With one job at a time the chain is global: the engine is free to interleave tasks
    (the oldest queued job goes first), so the next job may be another task's.
    """
    return [gap for _kind, gap in kinded_gaps(per_task)]


def kinded_gaps(per_task: dict[str, list[tuple[str, float, float]]]) -> list[tuple[str, float]]:
    """``gaps`` with the kind of each transition: ``stage→stage`` within a task (the
    merge gate runs at the end of deploy-staging), or ``stage→next task's stage``."""
    rows = sorted(
        (start, end, task, stage)
        for task, task_rows in per_task.items()
        for stage, start, end in task_rows
    )
    out = []
    for (_b1, end1, task1, stage1), (start2, _e2, task2, stage2) in itertools.pairwise(rows):
        kind = f"{stage1}→{stage2}" if task1 == task2 else f"{stage1}→next task's {stage2}"
        out.append((kind, start2 - end1))
    return out


def by_kind(pairs: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Gaps grouped by kind, in pipeline order."""
    grouped: dict[str, list[float]] = {}
    for kind, gap in pairs:
        grouped.setdefault(kind, []).append(gap)
    order = {stage: i for i, stage in enumerate(STAGES)}

    def key(kind: str) -> tuple[bool, int]:
        return "next task" in kind, order.get(kind.split("→")[0], len(order))

    return {kind: grouped[kind] for kind in sorted(grouped, key=key)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Gaps = list[tuple[str, float]]


@dataclass(frozen=True)
class Overhead:
    """Gaps between jobs, each with its kind, and what the engine spent per job."""

    orch: Gaps
    bare: Gaps
    boxed: Gaps
    # This process's CPU (every thread; not the agents' or git's) and its SQL statements
    # (BEGIN and ROLLBACK included), per job: figures the machine's load moves less.
    cpu_ms_per_job: float
    statements_per_job: float


def bench_overhead(transitions: int, db_url: str | None) -> Overhead:
    """The engine's gaps and, in the same process, the bare loops' (plain and sandboxed)."""
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        stamps = root / "stamps" / "stamps.log"
        settings, engine, _ = setup(root, db_url, 1, stamps)
        n_tasks = max(1, transitions // (len(STAGES) - 1))
        for i in range(n_tasks):
            task_ops.add_task(engine, settings, "bench", f"t{i}")
        statements = [0]

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _count(*_args: object) -> None:
            statements[0] += 1

        worker = Worker(settings, engine)
        before = resource.getrusage(resource.RUSAGE_SELF)
        worker.run(until_idle=True)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        jobs = max(1, worker.jobs_finished)
        orch = kinded_gaps(read_stamps(stamps))

        # Baseline: the same commands, back to back, in a bare loop.
        bare_stamps = root / "bare.log"
        work = root / "bare"
        work.mkdir()
        env = {**os.environ, "ORCH_ARTIFACT_DIR": str(work)}
        for i in range(n_tasks):
            env["ORCH_TASK"] = f"B-{i}"
            for stage in STAGES:
                subprocess.run(
                    ["sh", "-c", agent_script(stage, bare_stamps)], cwd=work, env=env, check=True
                )
        bare = kinded_gaps(read_stamps(bare_stamps))

        # Second baseline: the same loop, each command in the sandbox the engine gives an
        # agent (bubblewrap), so what the engine adds is told apart from the sandbox's start.
        boxed_stamps = root / "boxed.log"
        for i in range(n_tasks):
            env["ORCH_TASK"] = f"S-{i}"
            for stage in STAGES:
                argv = ["sh", "-c", agent_script(stage, boxed_stamps)]
                box = sandbox.for_job(
                    settings,
                    kind="agent",
                    repo_path=root / "bench",
                    argv=argv,
                    writable=[work, boxed_stamps.parent],
                )
                if box is not None:
                    argv = box.wrap(argv, work)
                subprocess.run(argv, cwd=work, env=env, check=True)
        boxed = kinded_gaps(read_stamps(boxed_stamps))
        engine.dispose()
        return Overhead(orch, bare, boxed, cpu * 1e3 / jobs, statements[0] / jobs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_throughput(tasks: int, parallel: int, db_url: str | None) -> tuple[float, int]:
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        stamps = root / "stamps" / "stamps.log"
        settings, engine, _ = setup(root, db_url, parallel, stamps)
        for i in range(tasks):
            task_ops.add_task(engine, settings, "bench", f"t{i}")
        worker = Worker(settings, engine)
        start = time.perf_counter()
        done = threading.Event()

        def progress() -> None:
            while not done.wait(5):
                print(f"  ... {worker.jobs_finished} jobs finished", flush=True)

        threading.Thread(target=progress, daemon=True).start()
        worker.run(until_idle=True)
        done.set()
        elapsed = time.perf_counter() - start
        engine.dispose()
        return tasks / elapsed, worker.jobs_finished
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_idle(seconds: float, db_url: str | None) -> float:
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        settings, engine, _ = setup(root, db_url, 1, root / "stamps" / "stamps.log")
        worker = Worker(settings, engine)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        time.sleep(1.0)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        time.sleep(seconds)
        after = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter() - t0
        worker.stop()
        thread.join()
        engine.dispose()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu / wall
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str | None, root: Path) -> Iterator[str]:
    """A new empty database: SQLite under ``root``, or one made on the PostgreSQL server."""
    if not server_url:
        yield f"sqlite:///{root / 'orchestrator.db'}"
        return
    base = normalize_url(server_url)
    name = f"orch_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def spawn_workers(
    n: int, st: Settings, db_url: str, log: Path, **env: str
) -> list[subprocess.Popen[bytes]]:
    """``n`` real ``orch worker`` processes on ``db_url``."""
    base = {
        **os.environ,
        "ORCH_HOME": str(st.home),
        "ORCH_DATABASE_URL": db_url,
        "ORCH_MAX_PARALLEL_JOBS": str(st.max_parallel_jobs),
        "ORCH_MAX_PARALLEL_JOBS_PER_REPO": str(st.max_parallel_jobs_per_repo),
        **env,
    }
    procs = []
    for i in range(n):
        out = (log.parent / f"{log.name}.{i}").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "worker"],
                env=base,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count_done(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM tasks WHERE state = 'done'").scalar())


def run_workers(
    workers: int, tasks: int, parallel: int, repos: int, server_url: str | None
) -> dict[str, list[tuple[str, float, float]]]:
    """``tasks`` tasks through ``workers`` worker processes; the agents' stamps per task."""
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        with fresh_database(server_url, root) as db_url:
            stamps = root / "stamps" / "stamps.log"
            settings, engine, names = setup(root, db_url, parallel, stamps, repos)
            for i in range(tasks):
                task_ops.add_task(engine, settings, names[i % len(names)], f"t{i}")
            procs = spawn_workers(workers, settings, db_url, root / "worker.log")
            try:
                last = time.perf_counter()
                while (done := count_done(engine)) < tasks:
                    if any(p.poll() is not None for p in procs):
                        msg = f"a worker exited early; see {root}/worker.log.*"
                        raise SystemExit(msg)
                    if time.perf_counter() - last > 10:
                        print(f"  ... {done}/{tasks} tasks done", flush=True)
                        last = time.perf_counter()
                    time.sleep(0.05)
            finally:
                stop_workers(procs)
            engine.dispose()
            return read_stamps(stamps)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_workers(
    workers: int, transitions: int, tasks: int, parallel: int, repos: int, server_url: str | None
) -> tuple[list[float], float]:
    """(gaps of one job at a time, tasks per second under load) for ``workers`` processes.

    Overhead: one slot, so each gap is the orchestration between two jobs while the other
    workers compete for the claim. Throughput: from the first job's start to the last
    job's end, by the agents' clocks (the workers' own start-up is not counted).
    """
    serial = run_workers(workers, max(1, transitions // (len(STAGES) - 1)), 1, 1, server_url)
    loaded = run_workers(workers, tasks, parallel, repos, server_url)
    spans = [(start, end) for rows in loaded.values() for _stage, start, end in rows]
    elapsed = max(e for _s, e in spans) - min(s for s, _e in spans)
    return gaps(serial), tasks / elapsed


def bench_wake(samples: int, server_url: str, listen: bool) -> list[float]:
    """Seconds from filing a task (another process) to its first job's start."""
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    rng = random.Random(7)
    try:
        with fresh_database(server_url, root) as db_url:
            stamps = root / "stamps" / "stamps.log"
            settings, engine, _ = setup(root, db_url, 1, stamps)
            procs = spawn_workers(
                1,
                settings,
                db_url,
                root / "worker.log",
                ORCH_DB_LISTEN_ENABLED="true" if listen else "false",
            )
            latencies = []
            try:
                time.sleep(2.0)  # the worker is up and asleep
                for i in range(samples):
                    # Somewhere in the poll's phase, so the poll is not favoured.
                    time.sleep(rng.uniform(0.2, 1.2))
                    filed = time.time()
                    key = task_ops.add_task(engine, settings, "bench", f"w{i}").task.key
                    while True:
                        starts = (
                            [
                                float(line.split()[3])
                                for line in stamps.read_text().splitlines()
                                if line.startswith(f"s {key} development ")
                            ]
                            if stamps.exists()
                            else []
                        )
                        if starts:
                            latencies.append(starts[0] - filed)
                            break
                        time.sleep(0.002)
                    while count_done(engine) < i + 1:
                        time.sleep(0.02)
            finally:
                stop_workers(procs)
            engine.dispose()
            return latencies
    finally:
        shutil.rmtree(root, ignore_errors=True)


def figures(values: list[float]) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    return statistics.median(values) * 1e3, pct(values, 0.95) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transitions", type=int, default=500)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--workers", default="1,2,4", help="worker process counts to compare")
    p.add_argument("--worker-tasks", type=int, default=300)
    p.add_argument("--repos", type=int, default=4, help="repos the worker tasks are spread over")
    p.add_argument("--wake-samples", type=int, default=20)
    p.add_argument(
        "--database-url", default=None, help="a PostgreSQL server (default: SQLite only)"
    )
    p.add_argument("--only", default="overhead,throughput,workers,wake,idle")
    args = p.parse_args()
    # A SIGTERM runs the finally blocks too: no worker process or database is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = set(args.only.split(","))
    backend = "postgresql" if args.database_url else "sqlite"
    bm = bp95 = 0.0

    if "overhead" in only:
        print(f"== overhead per transition ({backend}, {args.transitions} transitions)")
        root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
        with fresh_database(args.database_url, root) as db_url:
            found = bench_overhead(args.transitions, db_url)
        orch, bare, boxed = found.orch, found.bare, found.boxed
        shutil.rmtree(root, ignore_errors=True)
        om, op95 = figures([g for _k, g in orch])
        bm, bp95 = figures([g for _k, g in bare])
        sm, sp95 = figures([g for _k, g in boxed])
        print(f"  transitions measured : {len(orch)}")
        print(f"  orchestrated gap     : median {om:7.2f} ms   p95 {op95:7.2f} ms")
        print(f"  bare loop gap        : median {bm:7.2f} ms   p95 {bp95:7.2f} ms")
        print(f"  bare loop, sandboxed : median {sm:7.2f} ms   p95 {sp95:7.2f} ms")
        ratio = om / bm if bm else float("inf")
        print(f"  overhead (median)    : {om - bm:7.2f} ms   ratio {ratio:.1f}x")
        print(f"  over sandboxed loop  : {om - sm:7.2f} ms")
        print(
            f"  engine per job       : {found.cpu_ms_per_job:7.2f} ms CPU (this process), "
            f"{found.statements_per_job:.1f} SQL statements"
        )
        # Per kind: each against the bare loops' gap between the same two agents (the
        # same scripts, so the same process start-up), medians of each.
        bare_kinds, boxed_kinds = by_kind(bare), by_kind(boxed)
        print(
            f"  {'per kind':<44} {'n':>4} {'median':>9} {'p95':>9} {'bare':>8} "
            f"{'over bare':>9} {'over boxed':>10}"
        )
        for kind, values in by_kind(orch).items():
            km, kp95 = figures(values)
            kb, _ = figures(bare_kinds.get(kind, [g for _k, g in bare]))
            ks, _ = figures(boxed_kinds.get(kind, [g for _k, g in boxed]))
            print(
                f"  {kind:<44} {len(values):>4} {km:6.2f} ms {kp95:6.2f} ms {kb:5.2f} ms "
                f"{km - kb:6.2f} ms {km - ks:7.2f} ms"
            )

    if "throughput" in only:
        print(
            f"== throughput ({args.tasks} tasks x {len(STAGES)} stages, {args.parallel} parallel)"
        )
        root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
        with fresh_database(args.database_url, root) as db_url:
            tps, jobs = bench_throughput(args.tasks, args.parallel, db_url)
        shutil.rmtree(root, ignore_errors=True)
        print(f"  tasks per second     : {tps:.2f}   ({jobs} jobs)")

    if "workers" in only:
        counts = [int(n) for n in args.workers.split(",")]
        backends: list[tuple[str, str | None]] = [("sqlite", None)]
        if args.database_url:
            backends.append(("postgresql", args.database_url))
        print(
            f"== workers: orch worker processes on one database. Overhead: "
            f"{args.transitions} transitions one job at a time; throughput: "
            f"{args.worker_tasks} tasks over {args.repos} repos, {args.parallel} slots in all"
        )
        print(
            f"  {'backend':<10} {'workers':>7} {'overhead median':>15} {'p95':>9} "
            f"{'tasks/s':>8} {'vs 1 worker':>11}"
        )
        for name, url in backends:
            first: float | None = None
            for n in counts:
                serial, tps = bench_workers(
                    n, args.transitions, args.worker_tasks, args.parallel, args.repos, url
                )
                first = first or tps
                gm, gp = figures(serial)
                print(
                    f"  {name:<10} {n:>7} {gm:>12.2f} ms {gp:>6.1f} ms "
                    f"{tps:>8.2f} {tps / first:>10.2f}x",
                    flush=True,
                )
        if bm:
            print(f"  (bare loop gap, same agents: median {bm:.2f} ms, p95 {bp95:.2f} ms)")

    if "wake" in only and args.database_url:
        print(f"== wake-up: a task filed by another process to its first job ({backend})")
        for listen in (True, False):
            lat = bench_wake(args.wake_samples, args.database_url, listen)
            wm, wp = figures(lat)
            label = "LISTEN/NOTIFY on " if listen else "off (1 s poll)   "
            print(f"  {label}: median {wm:7.1f} ms   p95 {wp:7.1f} ms   ({len(lat)} tasks)")

    if "idle" in only:
        print(f"== idle CPU ({args.idle_s:g} s, one worker, nothing to do)")
        root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
        with fresh_database(args.database_url, root) as db_url:
            cpu = bench_idle(args.idle_s, db_url)
        shutil.rmtree(root, ignore_errors=True)
        print(f"  CPU                  : {cpu * 100:.2f} %")


if __name__ == "__main__":
    main()
