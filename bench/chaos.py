"""The chaos run at a bigger size: `orch` processes kill -9-ed at random, then checked.

    python bench/chaos.py [--tasks 50] [--kills 20] [--seed N] [--database-url URL]

Prints the figures (tasks, kills, tasks done, tasks lost, duplicate merges, red commits on
main, orphan processes, ...) and the problems found, if any; exits 1 when a goal-0 figure
is not 0. SQLite in a temp dir by default; a PostgreSQL URL works too (its database must
be empty). See tests/chaos/chaos_lib.py for what is done and checked.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.chaos_lib import run_chaos


def main(argv: list[str] | None = None) -> int:
    """Run the chaos bench; 0 when every goal-0 figure is 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay-s", type=float, default=2.0)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="orch-chaos-"))
    db_url = args.database_url or f"sqlite:///{root / 'orchestrator.db'}"
    try:
        report = run_chaos(
            root / "run",
            db_url,
            tasks=args.tasks,
            kills=args.kills,
            seed=args.seed,
            max_delay_s=args.max_delay_s,
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    width = max(len(name) for name, _ in report.figures())
    for name, value in report.figures():
        print(f"{name:<{width}}  {value}")
    for line in report.blocked_why:
        print(f"  blocked: {line}")
    problems = report.problems()
    for line in problems:
        print(f"  problem: {line}")
    if args.keep:
        print(f"kept: {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
