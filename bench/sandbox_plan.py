"""The engine's own share of a sandboxed job's start: working out its sandbox
(``sandbox.for_job`` and ``Sandbox.plan``, no process), with paths resolved by the kernel
(``orchestrator.realpath``) and by Python's ``os.path.realpath``, in the same process.

    python bench/sandbox_plan.py [--plans 300]

A throwaway home, a user's clone, a task's workspace borrowing the clone's objects and a
job's out folder, as a development job gets them; the agent command is ``sh``. The two
ways take turns (kernel, then Python, then kernel ...), so both see the same machine.
Printed: the median and p95 of each, their ratio, and how many paths one plan resolves.
The argv must be the same both ways, or the bench stops. No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transitions import figures

from orchestrator import realpath as realpath_module
from orchestrator import sandbox
from orchestrator.config import load_settings


def _git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@localhost"}
    subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=300, help="plans of each kind")
    args = parser.parse_args()
    if not sandbox.probe().ok:
        raise SystemExit(f"sandbox unavailable, no figures: {sandbox.probe().detail}")
    with tempfile.TemporaryDirectory(prefix="sandbox-plan-") as tmp:
        root = Path(tmp)
        clone, home = root / "clone", root / "home"
        _git(root, "init", "-q", "-b", "main", str(clone))
        _git(clone, "commit", "-q", "--allow-empty", "-m", "initial")
        workspace = home / "worktrees" / "app" / "APP-1"
        _git(root, "clone", "-q", "--shared", str(clone), str(workspace))
        out = home / "tasks" / "APP-1" / "jobs" / "1" / "out"
        out.mkdir(parents=True)
        settings = load_settings(home=home, sandbox=True)

        def plan() -> list[str]:
            box = sandbox.for_job(
                settings,
                kind="agent",
                repo_path=clone,
                argv=["sh", "-c", "true"],
                writable=[workspace, out],
                env_path=os.environ.get("PATH"),
            )
            if box is None:
                raise SystemExit("for_job returned no sandbox with sandbox=True")
            return box.plan(workspace).options()

        kernel_o_path = realpath_module._O_PATH
        ways = {"kernel": kernel_o_path, "python": None}
        argvs = {}
        for name, o_path in ways.items():
            realpath_module._O_PATH = o_path
            argvs[name] = plan()  # warm: caches of the process, page cache
        if argvs["kernel"] != argvs["python"]:
            raise SystemExit(f"the plans differ:\n{argvs['kernel']}\n{argvs['python']}")
        calls = 0
        real = os.path.realpath

        def counted(path: str, **kw: bool) -> str:
            nonlocal calls
            calls += 1
            return real(path, **kw)

        os.path.realpath = counted  # type: ignore[assignment]
        realpath_module._O_PATH = None
        plan()
        os.path.realpath = real
        took: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.plans):
            for name, o_path in ways.items():
                realpath_module._O_PATH = o_path
                start = time.perf_counter()
                plan()
                took[name].append(time.perf_counter() - start)
        realpath_module._O_PATH = kernel_o_path
    print(f"== a development job's sandbox worked out {args.plans} times each way")
    print(f"  paths resolved per plan  {calls}")
    medians = {}
    for name, values in took.items():
        medians[name], p95 = figures(values)
        print(f"  realpath by {name:<7} median {medians[name]:6.3f} ms   p95 {p95:6.3f} ms")
    print(
        f"  ratio                    python / kernel {medians['python'] / medians['kernel']:.2f}x"
    )


if __name__ == "__main__":
    main()
