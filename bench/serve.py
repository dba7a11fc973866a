"""How long `orch serve` takes to answer once spawned, and to exit once sent SIGTERM.

    python bench/serve.py [--runs 10] [--compare SRC]

Each run spawns `orch serve --port P` as a fresh process, asks ``GET /health`` every 2 ms
until it answers 200 ("up": spawn to first answer), then sends SIGTERM and waits for the
process to exit ("stop": signal to exit, which must be 0). Three kinds, interleaved so that
a noisy neighbour slows all of them alike, beside ``python -c pass`` in the same run:

- on a home made by ``orch init`` (migrated, as the API tests start it), the scheduler on;
- the same with ``--no-scheduler``;
- on a new, empty home each run: the first start, which makes and migrates the database.

``cpu`` is the CPU time (user + system) the whole process used, start to exit: on a busy
machine the wall time waits for a core, the CPU time much less so. The children import this
checkout's code (``PYTHONPATH=src``) with their bytecode cached, as bench/cli.py runs them;
``--compare SRC`` also times each kind with another checkout's code, interleaved with this
one's: before and after in the same run.

No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli import SRC, child_env, orch_argv, run_once

POLL_S = 0.002


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    """Whether ``GET /health`` on ``port`` answers 200 now."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def serve_once(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """Seconds from spawn to the first answer of /health, from SIGTERM to exit, and the CPU
    seconds the server used in all. A server that exits early or not with 0 stops the
    bench, with its output."""
    port = free_port()
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*orch_argv(), "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        while not answers(port):
            if proc.poll() is not None:
                out.seek(0)
                msg = f"orch serve exited {proc.returncode}: {out.read().decode()}"
                raise SystemExit(msg)
            time.sleep(POLL_S)
        up = time.perf_counter() - start
        signalled = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        _pid, status, usage = os.wait4(proc.pid, 0)
        down = time.perf_counter() - signalled
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
        if proc.returncode != 0:
            out.seek(0)
            msg = f"orch serve exited {proc.returncode} on SIGTERM: {out.read().decode()}"
            raise SystemExit(msg)
    return up, down, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--compare", type=Path, metavar="SRC")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bench-serve-") as scratch:
        tmp = Path(scratch)
        srcs = {"": SRC}
        if args.compare is not None:
            srcs[" (cmp)"] = args.compare.resolve()
        home = tmp / "home"
        run_once([*orch_argv(), "init"], child_env(home), tmp)
        # (label, serve's arguments, a new home each run?)
        kinds = [
            ("serve", [], False),
            ("serve --no-scheduler", ["--no-scheduler"], False),
            ("serve, new home", [], True),
        ]
        measured = [
            (label + tag, extra, new, src)
            for label, extra, new in kinds
            for tag, src in srcs.items()
        ]
        fresh = iter(range(1_000_000))

        def env_for(new: bool, src: Path) -> dict[str, str]:
            return child_env(tmp / f"new-{next(fresh)}" if new else home, src)

        for _label, extra, new, src in measured:  # warm the caches and .pyc files
            serve_once(extra, env_for(new, src), tmp)
        run_once([sys.executable, "-c", "pass"], child_env(home), tmp)
        figures: dict[str, dict[str, list[float]]] = {
            label: {"up": [], "stop": [], "cpu": []} for label, *_ in measured
        }
        python: list[float] = []
        for _ in range(args.runs):
            python.append(run_once([sys.executable, "-c", "pass"], child_env(home), tmp)[0])
            for label, extra, new, src in measured:
                up, down, cpu = serve_once(extra, env_for(new, src), tmp)
                for key, value in (("up", up), ("stop", down), ("cpu", cpu)):
                    figures[label][key].append(value * 1000)
        print(f"`orch` as {' '.join(orch_argv())}; {args.runs} runs each, interleaved; ms")
        if args.compare is not None:
            print(f"(cmp): the same with PYTHONPATH={args.compare}")
        print(f"python -c pass: median {statistics.median(python) * 1000:.1f}")
        print(
            f"{'kind':<28} {'up med':>8} {'up min':>8} {'stop med':>9} {'stop min':>9} "
            f"{'cpu med':>8}"
        )
        for label, *_ in measured:
            got = figures[label]
            print(
                f"{label:<28} {statistics.median(got['up']):8.1f} {min(got['up']):8.1f} "
                f"{statistics.median(got['stop']):9.1f} {min(got['stop']):9.1f} "
                f"{statistics.median(got['cpu']):8.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
