"""The git work inside each kind of transition: calls, their time, and the gap they sit in.

    python bench/git_calls.py [--tasks 20] [--database-url postgresql://...] [--trace]

Tasks go one at a time (each alone in the database's queue) through the no-op pipeline of
``bench/transitions.py``: development -> testing -> deploy-staging (with the merge gate;
its re-test is the repo's ``python -c pass``) -> deploy -> post-deploy-monitor. Every call
through ``gitops.git.git`` is counted (wrapped at the module attribute, which every git
caller goes through) and laid on the gap it falls in, read from the agents' own stamps.

Printed per kind of transition: the median gap, the bare loop's median gap (the same agent
commands back to back by subprocess.run, in this process), the median number of git calls
and the median milliseconds spent in them, then the git calls of one such gap by
subcommand (with ``--trace``, each call of that gap in order, with the orchestrator
functions it came from). The merge gate's own cost is in ``bench/merge_gate.py``. No
asserts: figures to read.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transitions import STAGES, agent_script, fresh_database, read_stamps, setup

from orchestrator import task_ops
from orchestrator.engine.worker import Worker
from orchestrator.gitops import git as gitcmd


class GitCounter:
    """Wraps ``gitops.git.git``: (start, seconds, what) of every call while installed."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str]] = []
        # id(call) -> the orchestrator functions it came from (``--trace``)
        self.where: dict[int, str] = {}
        self._real = gitcmd.git

    def __enter__(self) -> GitCounter:
        real = self._real

        def counted(args: Sequence[str], cwd: Path, **kw: Any) -> gitcmd.GitResult:
            t0 = time.time()
            res = real(args, cwd, **kw)
            call = (t0, time.time() - t0, describe(args))
            self.calls.append(call)
            self.where[id(call)] = callers()
            return res

        gitcmd.git = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *_: object) -> None:
        gitcmd.git = self._real


def callers() -> str:
    """The orchestrator functions a git call came from, innermost first (gitops.git left
    out). Read off the frames' code objects: ``traceback.extract_stack`` reads each frame's
    source line too, ~0.3 ms a call, which the timed gaps would count as the engine's."""
    names: list[str] = []
    frame = sys._getframe(1)
    while frame is not None and len(names) < 4:
        path = frame.f_code.co_filename
        if "/orchestrator/" in path and not path.endswith("gitops/git.py"):
            names.append(f"{Path(path).stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(names)


def describe(args: Sequence[str]) -> str:
    """``rev-parse --verify`` / ``status`` / ``log``: the subcommand and its first flag."""
    rest = list(args)
    while rest and rest[0] == "-c":  # per-call config before the subcommand
        rest = rest[2:]
    if not rest:
        return "?"
    flag = next((a for a in rest[1:] if a.startswith("--")), "")
    return f"{rest[0]} {flag}".strip() if rest[0] == "rev-parse" else rest[0]


def run_pipeline(
    tasks: int, db_url: str, root: Path
) -> tuple[dict[str, list[Any]], list[Any], dict[int, str]]:
    """``tasks`` tasks, one at a time; their stamps and the git calls made meanwhile.

    Each task's rows start with ("filed", t, t): the worker starting on it, so the first
    gap is the first job's start-up (its workspace made, the worker's start-up sweep)."""
    stamps = root / "stamps" / "stamps.log"
    settings, engine, _ = setup(root, db_url, 1, stamps)
    filed: dict[str, float] = {}
    with GitCounter() as counter:
        for i in range(tasks):
            key = task_ops.add_task(engine, settings, "bench", f"t{i}").task.key
            filed[key] = time.time()
            Worker(settings, engine).run(until_idle=True)
    engine.dispose()
    per_task = read_stamps(stamps)
    for key, rows in per_task.items():
        rows.insert(0, ("filed", filed[key], filed[key]))
    return per_task, counter.calls, counter.where


def per_kind(
    per_task: Mapping[str, list[tuple[str, float, float]]], calls: Sequence[Any]
) -> dict[str, list[tuple[float, list[Any]]]]:
    """{"a->b": [(gap seconds, git calls in the gap)]}, within each task."""
    out: dict[str, list[tuple[float, list[Any]]]] = collections.defaultdict(list)
    for rows in per_task.values():
        for (s1, _b1, end1), (s2, start2, _e2) in itertools.pairwise(rows):
            inside = [c for c in calls if end1 <= c[0] < start2]
            out[f"{s1}->{s2}"].append((start2 - end1, inside))
    return out


def bare_gaps(tasks: int, root: Path) -> list[float]:
    """The same agent commands back to back (transitions.py's baseline)."""
    stamps, work = root / "bare.log", root / "bare"
    work.mkdir()
    env = {**os.environ, "ORCH_ARTIFACT_DIR": str(work)}
    for i in range(tasks):
        env["ORCH_TASK"] = f"B-{i}"
        for stage in STAGES:
            subprocess.run(["sh", "-c", agent_script(stage, stamps)], cwd=work, env=env, check=True)
    gaps = []
    for rows in read_stamps(stamps).values():
        gaps += [b[1] - a[2] for a, b in itertools.pairwise(rows)]
    return gaps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--database-url", default=None, help="a PostgreSQL server (default: SQLite)")
    p.add_argument("--trace", action="store_true", help="list one gap's calls and callers")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orch-bench-git-"))
    try:
        with fresh_database(args.database_url, root) as db_url:
            per_task, calls, where = run_pipeline(args.tasks, db_url, root)
        bare = statistics.median(bare_gaps(args.tasks, root)) * 1e3
    finally:
        shutil.rmtree(root, ignore_errors=True)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"== git inside transitions ({backend}, {args.tasks} tasks one at a time)")
    print(f"  bare loop gap, median: {bare:.2f} ms (same agents, same process)")
    print(f"  {'transition':<38} {'gap ms':>8} {'over bare':>9} {'git calls':>9} {'git ms':>7}")
    kinds = per_kind(per_task, calls)
    for kind, rows in kinds.items():
        gap = statistics.median(g for g, _ in rows) * 1e3
        n = statistics.median(len(c) for _, c in rows)
        ms = statistics.median(sum(d for _, d, _ in c) for _, c in rows) * 1e3
        print(f"  {kind:<38} {gap:8.2f} {gap - bare:9.2f} {n:9.0f} {ms:7.2f}")
    for kind, rows in kinds.items():
        _gap, sample = rows[len(rows) // 2]
        counts = collections.Counter(what for _, _, what in sample)
        listed = ", ".join(f"{n}x {what}" for what, n in counts.most_common())
        print(f"  {kind}: {listed or 'none'}")
        if args.trace:
            for call in sample:
                _t0, took, what = call
                print(f"      {took * 1e3:6.2f} ms  {what:<24} {where[id(call)]}")


if __name__ == "__main__":
    main()
