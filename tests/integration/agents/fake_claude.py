"""Stands in for the ``claude`` CLI (ORCH_CLAUDE_COMMAND): records its argv, does the work.

It writes its argv as JSON to ``<--add-dir>/runs/claude-argv-<attempt>.json`` (the job's output
folder, which claude is given with ``--add-dir``), adds ``<ORCH_TASK>.txt`` to its cwd (the
worktree), writes a PASS ``10-dev-report.md`` and prints the result JSON claude prints. With
``--fake-cost USD`` in its command, that result says the run cost that much.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    argv = sys.argv
    cost = float(argv[argv.index("--fake-cost") + 1]) if "--fake-cost" in argv else 0.0
    artifact_dir = Path(argv[argv.index("--add-dir") + 1])
    attempt = os.environ.get("ORCH_ATTEMPT", "1")
    record = artifact_dir / "runs" / f"claude-argv-{attempt}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(argv))
    (Path.cwd() / f"{os.environ['ORCH_TASK']}.txt").write_text("work\n")
    (artifact_dir / "10-dev-report.md").write_text("---\ndev_status: DONE\n---\n\n# dev\n")
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 1,
        "result": "done",
        "total_cost_usd": cost,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
