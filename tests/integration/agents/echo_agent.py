"""An agent that records how it was started, then does its stage: a real child process.

argv: FIELD=VALUE ... (one element per template field, e.g. ``task={task}``)

It writes what it saw (its argv, its cwd, the ORCH_* environment) as JSON to
``<artifact_dir>/runs/echo-<stage>-<attempt>.json``, inside the job's own output folder
(the one place besides the worktree an agent may write), so the run leaves no file outside
the orchestrator's home. At development it adds ``<task>.txt`` to
the worktree, so the branch has a diff; at every stage it writes the stage's PASS artifact.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PASS = {
    "analysis": ("03-analysis.md", {"analysis_status": "READY"}),
    "development": ("10-dev-report.md", {"dev_status": "DONE"}),
    "testing": ("13-test-report.md", {"result": "PASSED", "status": "PASS", "failed": "0"}),
    "deploy-staging": ("15-staging-log.md", {"staging_status": "PASSED"}),
    "deploy": ("17-deploy-log.md", {"deploy_status": "SUCCEEDED"}),
    "post-deploy-monitor": ("18-monitor-report.md", {"monitor_status": "HEALTHY"}),
}


def main() -> int:
    fields = dict(arg.split("=", 1) for arg in sys.argv[1:])
    artifact_dir = Path(fields["artifact_dir"])
    stage = fields["stage"]
    attempt = os.environ.get("ORCH_ATTEMPT", "1")
    seen = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("ORCH_")},
    }
    record = artifact_dir / "runs" / f"echo-{stage}-{attempt}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(seen))
    if stage == "development":
        (Path(fields["worktree"]) / f"{fields['task']}.txt").write_text("work\n")
    name, keys = PASS[stage]
    lines = ["---", *(f"{k}: {v}" for k, v in keys.items()), "---", "", f"# {stage}", ""]
    (artifact_dir / name).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
