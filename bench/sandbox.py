"""What the sandbox costs: at the start of every job, and over a whole ``orch demo``.

    python bench/sandbox.py [--runs 50] [--demo-runs 1] [--json]

1. Start cost: a tiny Python program run ``--runs`` times through ``proc_group.run`` bare and
   inside the sandbox a real suite job gets (``sandbox.for_job`` with Settings in a temp
   home, a temp git repo as repo_path, its worktree and the job's out dir writable), bare
   and sandboxed alternating so drift hits both. The program's first statement reads
   CLOCK_MONOTONIC (system-wide on Linux; bubblewrap makes no time namespace) and writes
   it to a file in the out dir; the bench reads the same clock just before
   ``proc_group.run`` and just after it returns. Printed for ``python -S`` and the full
   interpreter: median and p95 ms of start -> first instruction and of start -> run()
   returned (exit, reap, sweep), the ratio sandboxed/bare and the extra ms (on medians).
2. ``orch demo --json`` as a subprocess with ORCH_SANDBOX=on and ORCH_SANDBOX=off,
   ``--demo-runs`` each, alternating: the demo's own ``seconds`` and ``ok``, and the ratio.

Exits 2, printing no figures, when ``sandbox.probe()`` says bubblewrap cannot run here;
exits 1 when a demo run failed (its time is then no figure). No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator import sandbox
from orchestrator.config import load_settings
from orchestrator.proc_group import ExecuteRequest, run

CLOCK = time.CLOCK_MONOTONIC
# The clock is read by the first statement that does anything (``time`` is built in).
CHILD = (
    "import time; t = time.clock_gettime(time.CLOCK_MONOTONIC)\n"
    "import sys; open(sys.argv[1], 'w').write(repr(t))"
)
INTERPRETERS = (("python -S", ("-S",)), ("python", ()))
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}


def _git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost")
    env.update(GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _once(
    argv: list[str], cwd: Path, stamp: Path, log: Path, box: sandbox.Sandbox | None
) -> tuple[float, float]:
    """(start -> first instruction, start -> run() returned), in seconds."""
    stamp.unlink(missing_ok=True)
    request = ExecuteRequest(
        argv=[*argv, str(stamp)], cwd=cwd, env=ENV, log_path=log, timeout_s=60, sandbox=box
    )
    t0 = time.clock_gettime(CLOCK)
    outcome = run(request)
    t1 = time.clock_gettime(CLOCK)
    if outcome.exit_code != 0 or not stamp.is_file():
        tail = log.read_text(errors="replace")[-1500:]
        msg = f"run failed ({outcome.exit_code=} {outcome.start_error=}); log {log}:\n{tail}"
        raise SystemExit(msg)
    return float(stamp.read_text()) - t0, t1 - t0


def bench_start(runs: int, tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the start-cost table, and the bubblewrap flags used (for the record)."""
    repo, home = tmp / "repo", tmp / "home"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("bench\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    worktree = home / "worktrees" / "T-1"
    _git(repo, "worktree", "add", "-q", "-b", "task/T-1", str(worktree))
    out = home / "tasks" / "T-1" / "jobs" / "1" / "out"
    out.mkdir(parents=True)
    settings = load_settings(home=home, sandbox=True)
    rows: list[dict[str, Any]] = []
    flags: list[str] = []
    for label, opts in INTERPRETERS:
        argv = [sys.executable, *opts, "-c", CHILD]
        box = sandbox.for_job(
            settings, kind="suite", repo_path=repo, argv=argv, writable=[worktree, out]
        )
        if box is None:
            raise SystemExit("for_job returned no sandbox with sandbox=True")
        flags = box.wrap(["..."], worktree)
        samples: dict[str, list[tuple[float, float]]] = {"bare": [], "sandboxed": []}
        _once(argv, worktree, out / "warm", tmp / "warm.log", None)  # page cache, not counted
        _once(argv, worktree, out / "warm", tmp / "warm.log", box)
        for _ in range(runs):
            for mode, b in (("bare", None), ("sandboxed", box)):
                samples[mode].append(_once(argv, worktree, out / mode, tmp / f"{mode}.log", b))
        for i, measure in enumerate(("first instruction", "run() returned")):
            med = {m: statistics.median(s[i] for s in v) for m, v in samples.items()}
            for mode, values in samples.items():
                vals = [s[i] for s in values]
                rows.append(
                    {
                        "interpreter": label,
                        "measure": measure,
                        "mode": mode,
                        "median_ms": med[mode] * 1000,
                        "p95_ms": _pct(vals, 0.95) * 1000,
                        "ratio": med[mode] / med["bare"],
                        "extra_ms": (med[mode] - med["bare"]) * 1000,
                    }
                )
    return rows, flags


def _demo(orch: Path, state: str, cwd: Path) -> dict[str, Any]:
    # A clean environment and a cwd without a .env: only ORCH_SANDBOX differs between runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_SANDBOX"] = state
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(orch), "demo", "--json"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {}
    seconds = data.get("seconds")
    return {
        "sandbox": state,
        "seconds": float(seconds) if isinstance(seconds, int | float) else None,
        "ok": data.get("ok") is True,
        "exit_code": proc.returncode,
        "wall_s": wall,
        "stderr_tail": "" if data else proc.stderr[-500:],
    }


def bench_demo(demo_runs: int, tmp: Path) -> list[dict[str, Any]]:
    orch = Path(sys.prefix) / "bin" / "orch"
    results = []
    for _ in range(demo_runs):
        for state in ("on", "off"):
            results.append(_demo(orch, state, tmp))
    return results


def _print_start(rows: list[dict[str, Any]], runs: int, flags: list[str]) -> None:
    print(f"\nstart cost: {runs} runs per mode through proc_group.run, bare/sandboxed alternating")
    print(f"sandbox: {' '.join(flags)}")
    print("ratio and extra_ms are sandboxed vs bare, on medians\n")
    head = (
        f"{'interpreter':<11} {'measure':<17} {'mode':<9} {'median_ms':>9} {'p95_ms':>8} "
        f"{'ratio':>6} {'extra_ms':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        tail = f"{r['ratio']:>5.2f}x {r['extra_ms']:>+8.1f}" if r["mode"] != "bare" else ""
        print(
            f"{r['interpreter']:<11} {r['measure']:<17} {r['mode']:<9} "
            f"{r['median_ms']:>9.1f} {r['p95_ms']:>8.1f} {tail}"
        )


def _demo_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    def med(state: str) -> float:
        vals = [r["seconds"] for r in results if r["sandbox"] == state and r["seconds"]]
        return statistics.median(vals) if vals else math.nan

    on, off = med("on"), med("off")
    all_ok = all(r["ok"] for r in results)
    if not all_ok or math.isnan(on):
        verdict = "not comparable: a demo run failed"
    elif on < 30:
        verdict = f"well under a minute with the sandbox ({on:.1f}s)"
    elif on < 60:
        verdict = f"under a minute with the sandbox, but not well under ({on:.1f}s)"
    else:
        verdict = f"over a minute with the sandbox ({on:.1f}s)"
    return {"on_s": on, "off_s": off, "ratio": on / off, "all_ok": all_ok, "verdict": verdict}


def _print_demo(results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"\norch demo --json, ORCH_SANDBOX on and off, {len(results) // 2} run(s) each\n")
    print(f"{'ORCH_SANDBOX':<12} {'seconds':>8} {'wall_s':>7} {'ok':>5} {'exit':>4}")
    for r in results:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        print(
            f"{r['sandbox']:<12} {secs:>8} {r['wall_s']:>7.2f} {r['ok']!s:>5} {r['exit_code']:>4}"
        )
        if r["stderr_tail"]:
            print(f"  stderr: {r['stderr_tail']}")
    print(
        f"median: on {summary['on_s']:.2f}s, off {summary['off_s']:.2f}s, "
        f"on/off {summary['ratio']:.2f}x, extra {summary['on_s'] - summary['off_s']:+.2f}s"
    )
    print(f"orch demo: {summary['verdict']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=50, help="start-cost runs per mode (50)")
    parser.add_argument("--demo-runs", type=int, default=1, help="orch demo runs per mode (1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    found = sandbox.probe()
    if not found.ok:
        print(f"sandbox unavailable, no figures: {found.detail}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "probe": found.detail}))
        return 2
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmpdir:
        rows, flags = bench_start(args.runs, Path(tmpdir))
        demos = bench_demo(args.demo_runs, Path(tmpdir))
    summary = _demo_summary(demos)
    if args.json:
        out = {"ok": True, "probe": found.detail, "runs": args.runs, "sandbox_argv": flags}
        print(json.dumps(out | {"start": rows, "demo": demos, "demo_summary": summary}, indent=2))
        return 0 if summary["all_ok"] else 1
    print(f"probe: {found.detail}")
    _print_start(rows, args.runs, flags)
    _print_demo(demos, summary)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
