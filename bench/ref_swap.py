"""A workspace branch moved without git (``gitops.workspace_refs.cas``) against
``git update-ref <ref> <new> <old>`` (``gitops.merge.cas_ref``), in the same process.

    python bench/ref_swap.py [--moves 300]

A throwaway repository with two commits; one branch moved back and forth between them,
each way in turn (swap, then git, then swap ...), so both see the same machine. Printed:
the median and p95 of each and their ratio. No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transitions import figures

from orchestrator.gitops import merge, workspace_refs

REF = "refs/heads/orch/BENCH-1"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=300, help="moves of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ref-swap-") as tmp:
        repo = Path(tmp) / "ws"
        _git(Path(tmp), "init", "-q", "--template=", "-b", "main", str(repo))
        for n in (1, 2):
            _git(repo, "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-q",
                 "--allow-empty", "-m", f"c{n}")  # fmt: skip
        first, second = _git(repo, "rev-parse", "HEAD~1"), _git(repo, "rev-parse", "HEAD")
        _git(repo, "update-ref", REF, first)
        now = first
        took: dict[str, list[float]] = {"swap": [], "git update-ref": []}
        for _ in range(args.moves):
            for name, move in (("swap", workspace_refs.cas), ("git update-ref", merge.cas_ref)):
                new = second if now == first else first
                start = time.perf_counter()
                done = move(repo, REF, new, now)
                took[name].append(time.perf_counter() - start)
                if done.status != "ok":
                    raise SystemExit(f"{name}: {done.detail}")
                now = new
        if _git(repo, "rev-parse", REF) != now:
            raise SystemExit("the branch is not where the last move put it")
    print(f"== a workspace branch moved {args.moves} times each way")
    medians = {}
    for name, values in took.items():
        medians[name], p95 = figures(values)
        print(f"  {name:<16} median {medians[name]:6.3f} ms   p95 {p95:6.3f} ms")
    print(f"  ratio            git / swap {medians['git update-ref'] / medians['swap']:.1f}x")


if __name__ == "__main__":
    main()
