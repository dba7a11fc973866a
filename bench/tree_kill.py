"""Tree-kill benchmark: how fast and how completely a timed-out run is cleaned up.

    python bench/tree_kill.py [--runs 100] [--grace 0.2] [--timeout 0.3]

Rotates four adversarial programs (a child ignoring SIGTERM, a setsid'd grandchild, a
double-forked daemon, a plain hang), each run with a short timeout through
``proc_group.run``, and measures the time from the timeout firing to the last descendant
confirmed dead (goal: within grace + 50 ms) and the orphans left (goal: 0). Then a baseline
in the same process: plain ``subprocess.run(timeout=...)`` on the same programs, with its
orphan count; the bench kills those leftovers with ``kill_marked`` so it leaves nothing.

Orphans are counted independently of the marker: every program writes the pid of each
process it creates to a pid file, and the bench checks each of those pids after the run.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.proc_group import MARKER_ENV, ExecuteRequest, find_marked, kill_marked, run

PROGS = Path(__file__).resolve().parent.parent / "tests" / "integration" / "progs"
HANG = (
    "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()} hang\\n'); time.sleep(3600)"
)


@dataclass(frozen=True)
class Program:
    name: str
    args: tuple[str, ...]
    expected_pids: int  # how many pids it announces once fully up

    def argv(self, pidfile: Path) -> list[str]:
        return [sys.executable, *self.args, str(pidfile)]


PROGRAMS = (
    Program("ignore_term", (str(PROGS / "ignore_term.py"),), 2),
    Program("setsid_grandchild", (str(PROGS / "setsid_grandchild.py"),), 2),
    Program("double_fork", (str(PROGS / "double_fork.py"),), 2),
    Program("plain_hang", ("-c", HANG), 1),
)


@dataclass
class Stats:
    runs: int = 0
    ready: int = 0  # reached its adversarial state before the timeout
    orphans: int = 0  # announced pids still alive after run() returned
    marked_left: int = 0  # processes still carrying the marker after run() returned
    uncertain: int = 0
    swept: int = 0
    latencies_s: list[float] = field(default_factory=list)  # timeout fired -> all dead
    returned_s: list[float] = field(default_factory=list)  # timeout due -> run() returned
    cleaned_after: int = 0  # baseline: leftovers the bench had to kill


def _alive(pid: int) -> bool:
    """Alive and not a zombie (zombies reparented to a non-reaping PID 1 run no code)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _announced(pidfile: Path) -> list[int]:
    try:
        return [int(line.split()[0]) for line in pidfile.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def _env(marker: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", MARKER_ENV: marker}


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bench_tree_kill(
    prog: Program, stats: Stats, tmp: Path, i: int, timeout_s: float, grace_s: float
) -> None:
    marker = uuid.uuid4().hex
    pidfile = tmp / f"tk-{i}.pids"
    spawned: list[float] = []
    req = ExecuteRequest(
        argv=prog.argv(pidfile),
        cwd=tmp,
        env=_env(marker),
        log_path=tmp / f"tk-{i}.log",
        timeout_s=timeout_s,
        grace_s=grace_s,
        marker=marker,
    )
    outcome = run(req, on_start=lambda _pid, _pgid: spawned.append(time.monotonic()))
    returned = time.monotonic()
    pids = _announced(pidfile)
    stats.runs += 1
    stats.ready += len(pids) >= prog.expected_pids
    stats.orphans += sum(_alive(pid) for pid in pids)
    stats.marked_left += len(find_marked(marker))
    stats.uncertain += outcome.termination_uncertain
    stats.swept += outcome.swept
    if outcome.kill_latency_s is not None:
        stats.latencies_s.append(outcome.kill_latency_s)
    if spawned:
        stats.returned_s.append(returned - (spawned[0] + timeout_s))
    stats.cleaned_after += kill_marked(marker)  # should be 0; never leave anything behind


def bench_baseline(prog: Program, stats: Stats, tmp: Path, i: int, timeout_s: float) -> None:
    marker = uuid.uuid4().hex
    pidfile = tmp / f"bl-{i}.pids"
    # On timeout subprocess.run SIGKILLs the direct child only: that is the baseline.
    with (
        (tmp / f"bl-{i}.log").open("ab") as log,
        contextlib.suppress(subprocess.TimeoutExpired),
    ):
        subprocess.run(
            prog.argv(pidfile),
            cwd=tmp,
            env=_env(marker),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    pids = _announced(pidfile)
    stats.runs += 1
    stats.ready += len(pids) >= prog.expected_pids
    stats.orphans += sum(_alive(pid) for pid in pids)
    stats.marked_left += len(find_marked(marker))
    stats.cleaned_after += kill_marked(marker)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:7.1f}"


def _print_tree_kill(results: dict[str, Stats], grace_s: float) -> None:
    goal = grace_s + 0.05
    head = (
        f"{'program':<18} {'runs':>4} {'ready':>5} {'med_ms':>7} {'p95_ms':>7} {'max_ms':>7} "
        f"{'p95/grace':>9} {'in_goal':>7} {'ret_p95':>7} {'swept':>5} {'uncert':>6} {'orphans':>7}"
    )
    print(head)
    print("-" * len(head))
    total = Stats()
    for name, st in [*results.items(), ("ALL", total)]:
        if name != "ALL":
            for attr in ("runs", "ready", "orphans", "marked_left", "uncertain", "swept"):
                setattr(total, attr, getattr(total, attr) + getattr(st, attr))
            total.latencies_s += st.latencies_s
            total.returned_s += st.returned_s
            total.cleaned_after += st.cleaned_after
        lat = st.latencies_s
        p95 = _pct(lat, 0.95)
        in_goal = sum(v <= goal for v in lat)
        print(
            f"{name:<18} {st.runs:>4} {st.ready:>5} "
            f"{_ms(statistics.median(lat) if lat else math.nan)} {_ms(p95)} "
            f"{_ms(max(lat) if lat else math.nan)} {p95 / grace_s if lat else math.nan:>9.2f} "
            f"{in_goal:>3}/{len(lat):<3} {_ms(_pct(st.returned_s, 0.95))} {st.swept:>5} "
            f"{st.uncertain:>6} {st.orphans + st.marked_left:>7}"
        )
    print(
        f"goal: timeout -> last descendant dead within grace + 50 ms = {goal * 1000:.0f} ms; "
        f"orphans 0 (found {total.orphans} announced alive, {total.marked_left} marked left; "
        f"bench clean-up had to kill {total.cleaned_after})"
    )


def _print_baseline(results: dict[str, Stats]) -> None:
    head = f"{'program':<18} {'runs':>4} {'ready':>5} {'orphans':>7} {'killed_after':>12}"
    print(head)
    print("-" * len(head))
    total = Stats()
    for name, st in results.items():
        total.runs += st.runs
        total.ready += st.ready
        total.orphans += st.orphans
        total.cleaned_after += st.cleaned_after
        print(f"{name:<18} {st.runs:>4} {st.ready:>5} {st.orphans:>7} {st.cleaned_after:>12}")
    print(
        f"{'ALL':<18} {total.runs:>4} {total.ready:>5} {total.orphans:>7} {total.cleaned_after:>12}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="tree-kill runs (default 100)")
    parser.add_argument("--grace", type=float, default=0.2, help="grace_s, TERM->KILL (0.2)")
    parser.add_argument("--timeout", type=float, default=0.3, help="timeout_s per run (0.3)")
    parser.add_argument(
        "--baseline-runs", type=int, default=None, help="subprocess.run runs (default: --runs)"
    )
    args = parser.parse_args(argv)
    baseline_runs = args.runs if args.baseline_runs is None else args.baseline_runs

    tk: dict[str, Stats] = {p.name: Stats() for p in PROGRAMS}
    bl: dict[str, Stats] = {p.name: Stats() for p in PROGRAMS}
    with tempfile.TemporaryDirectory(prefix="tree-kill-bench-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.monotonic()
        for i in range(args.runs):
            prog = PROGRAMS[i % len(PROGRAMS)]
            bench_tree_kill(prog, tk[prog.name], tmp, i, args.timeout, args.grace)
        t1 = time.monotonic()
        for i in range(baseline_runs):
            prog = PROGRAMS[i % len(PROGRAMS)]
            bench_baseline(prog, bl[prog.name], tmp, i, args.timeout)
        t2 = time.monotonic()

    print(
        f"\nproc_group.run tree kill: {args.runs} runs, timeout {args.timeout:g}s, "
        f"grace {args.grace:g}s ({t1 - t0:.1f}s wall)"
    )
    print("latency = Outcome.kill_latency_s: timeout fired -> group gone and sweep clean;")
    print("ret_p95 = p95 of (run() returned - (spawn + timeout)), measured by the bench\n")
    _print_tree_kill(tk, args.grace)
    print(
        f"\nbaseline subprocess.run(timeout=...): {baseline_runs} runs ({t2 - t1:.1f}s wall); "
        "orphans = announced pids alive after it returned\n"
    )
    _print_baseline(bl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
