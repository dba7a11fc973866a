"""What waiting for git's exit costs: the helper's pidfd wait beside subprocess.run's poll.

    python bench/git_wait.py [--calls 300]

Runs ``git rev-parse HEAD`` in a fresh repository ``--calls`` times each way, interleaved
in one process: through ``gitops.git.git`` (reads the pipes, then waits on a pidfd) and
through ``subprocess.run(..., capture_output=True, timeout=60)`` with the same argv and
environment (what the helper did before: its wait polls with waitpid and sleeps 1, 2,
4 ... ms while the child is not yet reapable). Prints the median, mean and p90 of each,
and how many times the baseline slept (``time.sleep`` counted in ``subprocess``).

No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from orchestrator.gitops import git as gitcmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bench-git-wait-") as tmp:
        repo = Path(tmp)
        ident = ["-c", "user.name=b", "-c", "user.email=b@localhost"]
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run(
            ["git", "-C", str(repo), *ident, "commit", "-q", "--allow-empty", "-m", "x"], check=True
        )
        argv = ["git", *gitcmd.SAFE_CONFIG, "rev-parse", "HEAD"]
        env = {**gitcmd.git_environment(), **gitcmd._GIT_ENV}
        slept = [0]
        real_sleep = time.sleep

        def counting(seconds: float) -> None:
            slept[0] += 1
            real_sleep(seconds)

        def baseline() -> None:
            subprocess.run(argv, cwd=repo, env=env, capture_output=True, timeout=60, check=True)

        def helper() -> None:
            assert gitcmd.git(["rev-parse", "HEAD"], repo)

        took: dict[str, list[float]] = {"subprocess.run(timeout=)": [], "gitops.git.git": []}
        subprocess.time.sleep = counting  # type: ignore[attr-defined]
        try:
            for _ in range(args.calls):
                for label, fn in zip(took, (baseline, helper), strict=True):
                    start = time.perf_counter()
                    fn()
                    took[label].append((time.perf_counter() - start) * 1000)
        finally:
            subprocess.time.sleep = real_sleep  # type: ignore[attr-defined]
    print(f"git rev-parse HEAD, {args.calls} calls each way, interleaved; ms")
    print(f"{'way':<26} {'median':>7} {'mean':>7} {'p90':>7}")
    for label, values in took.items():
        med, mean = statistics.median(values), statistics.mean(values)
        p90 = sorted(values)[int(0.9 * len(values))]
        print(f"{label:<26} {med:7.2f} {mean:7.2f} {p90:7.2f}")
    print(f"the baseline slept {slept[0]} times in {args.calls} calls (the helper never does)")


if __name__ == "__main__":
    main()
