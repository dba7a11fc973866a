"""How long `orch` takes to answer, beside `python -c pass` and `git status` in the same run.

    python bench/cli.py [--runs 10] [--imports 0] [--compare SRC]

Makes its own state home (``orch init``) and a small git repo registered as ``demo`` in a
temp directory, then times each command ``--runs`` times as a fresh process, the commands
interleaved so that a noisy neighbour slows all of them alike, and prints the median and
the fastest run in ms beside the goal of issue 19 (``orch --help`` 150 ms; ``orch status``,
``orch task list`` and ``orch task add`` 300 ms on SQLite). The children import this
checkout's code (``PYTHONPATH=src``), with their bytecode cached as an installed `orch`
has it (``PYTHONDONTWRITEBYTECODE`` is dropped: the warm-up run writes it; with it, every
run compiled orch's own modules again, ~25 ms). Three anchors time the libraries alone that
a command's own help, a DB command and one that draws a table import (``FLOORS``): what no
change to orch's own code can go below. `orch --help` imports none of them
(``orchestrator.cli.commands``): its floor is `python -c pass`.

``--compare SRC`` also times each `orch` command with another checkout's code
(``PYTHONPATH=SRC``, e.g. ``../main/src``), interleaved with this one's: before and after
in the same run. ``--imports N`` also prints, per command, the N slowest top-level imports as
``python -X importtime`` reports them (cumulative ms): where the time goes.

No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ORCH_SCRIPT = Path(sys.executable).with_name("orch")

# (label, argv after `orch`, goal in ms or None for an anchor)
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("orch --help", ["--help"], 150.0),
    ("orch status", ["status"], 300.0),
    ("orch task list", ["task", "list"], 300.0),
    ("orch task add", ["task", "add", "demo", "bench task"], 300.0),
]

# Anchors: the libraries alone, what `orch` cannot go below. A command's --help (`orch task
# --help`) renders with typer's rich help; a DB command needs SQLAlchemy with its SQLite
# dialect and typer (its settings are read without pydantic when the environment holds
# nothing to doubt: config.read_plainly), and one that draws a table (`orch status`,
# `orch task list`) rich too.
FLOORS: list[tuple[str, str]] = [
    ("floor: cmd help libs", "import typer.rich_utils"),
    ("floor: DB cmd libs", "import sqlalchemy.dialects.sqlite, typer"),
    ("floor: + rich table", "import sqlalchemy.dialects.sqlite, typer, rich.console, rich.table"),
]


def orch_argv() -> list[str]:
    """The installed `orch` script when there is one (what a user runs), else the module."""
    if ORCH_SCRIPT.exists():
        return [str(ORCH_SCRIPT)]
    return [sys.executable, "-m", "orchestrator"]


def child_env(home: Path, src: Path = SRC) -> dict[str, str]:
    drop = ("ORCH_", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(ORCH_HOME=str(home), PYTHONPATH=str(src))
    return env


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Seconds from spawn to exit, and the CPU seconds (user + system) the child used: on a
    busy machine the wall time waits for a core, the CPU time much less so. A failing
    command stops the bench."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    proc.stderr.close()
    if proc.returncode != 0:
        msg = f"{argv} exited {proc.returncode}: {err.strip()}"
        raise SystemExit(msg)
    return took, usage.ru_utime + usage.ru_stime


def make_setup(tmp: Path) -> tuple[dict[str, str], Path]:
    """A home made by `orch init` and a one-commit git repo registered as `demo`."""
    home, repo = tmp / "home", tmp / "repo"
    env = child_env(home)
    repo.mkdir()
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run([*git, *args], cwd=repo, check=True, env=env)
    run_once([*orch_argv(), "init"], env, tmp)
    run_once([*orch_argv(), "repo", "add", "demo", str(repo)], env, tmp)
    return env, repo


def top_imports(argv: list[str], env: dict[str, str], cwd: Path, n: int) -> list[str]:
    """The ``n`` slowest top-level imports of one run of ``argv`` (a Python command)."""
    script = argv[0]
    head = [sys.executable, "-X", "importtime"]
    full = [*head, script, *argv[1:]] if script != sys.executable else [*head, *argv[1:]]
    proc = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    rows: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|", 2)
        if cumulative.strip().isdigit() and not name.startswith("  "):  # top level only
            rows.append((int(cumulative), name.strip()))
    rows.sort(reverse=True)
    return [f"{us / 1000:7.1f} ms  {name}" for us, name in rows[:n]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--imports", type=int, default=0, metavar="N")
    parser.add_argument("--compare", type=Path, metavar="SRC")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bench-cli-") as scratch:
        tmp = Path(scratch)
        env, repo = make_setup(tmp)
        orch = orch_argv()
        envs = {"": env}
        if args.compare is not None:
            envs[" (cmp)"] = child_env(tmp / "home", args.compare.resolve())
        measured: list[tuple[str, list[str], float | None, Path, dict[str, str]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], None, tmp, env),
            *((label, [sys.executable, "-c", code], None, tmp, env) for label, code in FLOORS),
            ("git status", ["git", "status"], None, repo, env),
            *(
                (label + tag, [*orch, *cmd], goal, tmp, cmd_env)
                for label, cmd, goal in COMMANDS
                for tag, cmd_env in envs.items()
            ),
        ]
        for _label, argv, _goal, cwd, cmd_env in measured:  # warm the caches and .pyc files
            run_once(argv, cmd_env, cwd)
        wall: dict[str, list[float]] = {label: [] for label, *_ in measured}
        cpu: dict[str, list[float]] = {label: [] for label, *_ in measured}
        for _ in range(args.runs):
            for label, argv, _goal, cwd, cmd_env in measured:
                took, used = run_once(argv, cmd_env, cwd)
                wall[label].append(took * 1000)
                cpu[label].append(used * 1000)
        base = statistics.median(wall["python -c pass"])
        print(f"`orch` as {' '.join(orch)}; {args.runs} runs each, interleaved; ms")
        if args.compare is not None:
            print(f"(cmp): the same command with PYTHONPATH={args.compare}")
        print(
            f"{'command':<22} {'median':>8} {'min':>8} {'-python':>8} {'cpu med':>8} "
            f"{'goal':>5}  verdict (median)"
        )
        for label, _argv, goal, _cwd, _env in measured:
            med = statistics.median(wall[label])
            verdict = "" if goal is None else ("ok" if med <= goal else "OVER")
            print(
                f"{label:<22} {med:8.1f} {min(wall[label]):8.1f} {med - base:8.1f} "
                f"{statistics.median(cpu[label]):8.1f} {goal or 0:5.0f}  {verdict}"
            )
        if args.imports:
            for label, argv, goal, cwd, cmd_env in measured:
                if goal is not None:
                    print(f"\n{label}: slowest top-level imports")
                    print("\n".join(top_imports(argv, cmd_env, cwd, args.imports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
