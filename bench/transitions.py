"""Orchestration overhead per stage transition, throughput, and idle CPU.

    python bench/transitions.py [--transitions 500] [--tasks 1000] [--parallel 8] [--idle-s 10]

1. Overhead: tasks go one at a time through development → testing → deploy-staging →
   deploy → post-deploy-monitor with no-op agents (``sh`` writing the artifact). For each
   transition: the previous job's process exit to the next job's process start, read from
   timestamps the agents themselves write. Baseline, in the same process: the same agent
   commands run back to back by a bare loop (subprocess.run). Printed as median and p95,
   and the overhead as the difference and the ratio.
2. Throughput: ``--tasks`` tasks through the same pipeline with ``--parallel`` jobs at once.
3. Idle CPU: a worker with nothing to do, CPU seconds per wall second.

No asserts: figures to read. The database is SQLite unless --database-url is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import itertools

from orchestrator import ops
from orchestrator.config import load_settings
from orchestrator.engine.worker import Worker
from orchestrator.store import make_engine, upgrade

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


def setup(root: Path, db_url: str | None, parallel: int, stamps: Path) -> tuple[object, object]:
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
    repo = root / "repo"
    make_repo(repo)
    agents = []
    for stage in STAGES:
        script = agent_script(stage, stamps).replace("'", "'\\''")
        agents.append(f"{stage}=command:sh -c '{script}'")
    ops.add_repo(engine, "bench", repo, ops.RepoInput(stages=STAGES, agents=agents))
    return settings, engine


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
    rows = sorted((start, end) for task_rows in per_task.values() for _s, start, end in task_rows)
    return [start2 - end1 for (_b1, end1), (start2, _e2) in itertools.pairwise(rows)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_overhead(transitions: int, db_url: str | None) -> tuple[list[float], list[float]]:
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        stamps = root / "stamps.log"
        settings, engine = setup(root, db_url, 1, stamps)
        n_tasks = max(1, transitions // (len(STAGES) - 1))
        for i in range(n_tasks):
            ops.add_task(engine, settings, "bench", f"t{i}")  # type: ignore[arg-type]
        Worker(settings, engine).run(until_idle=True)  # type: ignore[arg-type]
        orch = gaps(read_stamps(stamps))

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
        bare = gaps(read_stamps(bare_stamps))
        engine.dispose()  # type: ignore[attr-defined]
        return orch, bare
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_throughput(tasks: int, parallel: int, db_url: str | None) -> tuple[float, int]:
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        stamps = root / "stamps.log"
        settings, engine = setup(root, db_url, parallel, stamps)
        for i in range(tasks):
            ops.add_task(engine, settings, "bench", f"t{i}")  # type: ignore[arg-type]
        worker = Worker(settings, engine)  # type: ignore[arg-type]
        start = time.perf_counter()
        done = threading.Event()

        def progress() -> None:
            while not done.wait(5):
                print(f"  ... {worker.jobs_finished} jobs finished", flush=True)

        threading.Thread(target=progress, daemon=True).start()
        worker.run(until_idle=True)
        done.set()
        elapsed = time.perf_counter() - start
        engine.dispose()  # type: ignore[attr-defined]
        return tasks / elapsed, worker.jobs_finished
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_idle(seconds: float, db_url: str | None) -> float:
    root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        settings, engine = setup(root, db_url, 1, root / "stamps.log")
        worker = Worker(settings, engine)  # type: ignore[arg-type]
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
        engine.dispose()  # type: ignore[attr-defined]
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu / wall
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transitions", type=int, default=500)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = p.parse_args()
    backend = "postgresql" if args.database_url else "sqlite"

    print(f"== overhead per transition ({backend}, {args.transitions} transitions)")
    orch, bare = bench_overhead(args.transitions, args.database_url)
    om, op95 = statistics.median(orch) * 1e3, pct(orch, 0.95) * 1e3
    bm, bp95 = statistics.median(bare) * 1e3, pct(bare, 0.95) * 1e3
    print(f"  transitions measured : {len(orch)}")
    print(f"  orchestrated gap     : median {om:7.2f} ms   p95 {op95:7.2f} ms")
    print(f"  bare loop gap        : median {bm:7.2f} ms   p95 {bp95:7.2f} ms")
    print(
        f"  overhead (median)    : {om - bm:7.2f} ms   ratio {om / bm if bm else float('inf'):.1f}x"
    )

    print(f"== throughput ({args.tasks} tasks x {len(STAGES)} stages, {args.parallel} parallel)")
    tps, jobs = bench_throughput(args.tasks, args.parallel, args.database_url)
    print(f"  tasks per second     : {tps:.2f}   ({jobs} jobs)")

    print(f"== idle CPU ({args.idle_s:g} s, one worker, nothing to do)")
    print(f"  CPU                  : {bench_idle(args.idle_s, args.database_url) * 100:.2f} %")


if __name__ == "__main__":
    main()
