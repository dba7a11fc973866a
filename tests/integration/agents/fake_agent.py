"""A fake agent the engine tests run as a real child process.

argv: PLAN TASK STAGE ARTIFACT_DIR WORKTREE

PLAN is a JSON file mapping "TASK:STAGE:ATTEMPT", "TASK:STAGE:*" or "*:STAGE:*" to an action:
  {"verdict": "PASS"|"FAIL", "hold": true, "sleep": 5, "exit": 3, "no_artifact": true,
   "contradict": true, "write": {"relative/path": "text"}}
"hold_once" holds the first run forever (until killed). "hold" waits until a file
RELEASE-<TASK>-<STAGE>-<ATTEMPT> appears next to the plan, so a
test decides the order jobs finish in (Zuul style). Every start is appended to
STARTS.log next to the plan, so a test can count how often a job really ran, and each
finished run's span to SPANS.log ("TASK STAGE START END", the agent's own clock).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ARTIFACTS = {
    "analysis": (
        "03-analysis.md",
        {"PASS": {"analysis_status": "READY"}, "FAIL": {"analysis_status": "NEEDS_INFO"}},
    ),
    "development": (
        "10-dev-report.md",
        {"PASS": {"dev_status": "DONE"}, "FAIL": {"dev_status": "FAILED"}},
    ),
    "testing": (
        "13-test-report.md",
        {
            "PASS": {"result": "PASSED", "status": "PASS", "failed": "0"},
            "FAIL": {"result": "FAILED", "status": "FAIL", "failed": "2"},
        },
    ),
    "deploy-staging": (
        "15-staging-log.md",
        {"PASS": {"staging_status": "PASSED"}, "FAIL": {"staging_status": "FAILED"}},
    ),
    "deploy": (
        "17-deploy-log.md",
        {"PASS": {"deploy_status": "SUCCEEDED"}, "FAIL": {"deploy_status": "FAILED"}},
    ),
    "post-deploy-monitor": (
        "18-monitor-report.md",
        {"PASS": {"monitor_status": "HEALTHY"}, "FAIL": {"monitor_status": "UNHEALTHY"}},
    ),
}


def main() -> int:
    plan_path, task, stage, artifact_dir, worktree = sys.argv[1:6]
    plan_file = Path(plan_path)
    attempt = os.environ.get("ORCH_ATTEMPT", "1")
    started = time.time()
    with (plan_file.parent / "STARTS.log").open("a") as fh:
        fh.write(f"{task}:{stage}:{attempt}:{os.getpid()}\n")
    plan = json.loads(plan_file.read_text())
    action = (
        plan.get(f"{task}:{stage}:{attempt}")
        or plan.get(f"{task}:{stage}:*")
        or plan.get(f"*:{stage}:{attempt}")
        or plan.get(f"*:{stage}:*")
        or {}
    )
    if action.get("hold_once"):
        # Hold the first run only (until it is killed); a re-run goes straight through.
        held = plan_file.parent / f"HELD-{task}-{stage}"
        if not held.exists():
            held.write_text(str(os.getpid()))
            while True:
                time.sleep(0.05)
    if action.get("hold"):
        release = plan_file.parent / f"RELEASE-{task}-{stage}-{attempt}"
        while not release.exists():
            time.sleep(0.02)
    if action.get("sleep"):
        time.sleep(float(action["sleep"]))
    for rel, text in action.get("write", {}).items():
        target = Path(worktree) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if stage == "development" and not action.get("write"):
        # Some change, so the branch has a diff against main.
        (Path(worktree) / f"{task}.txt").write_text(f"{task} attempt {attempt}\n")
    if not action.get("no_artifact"):
        name, verdicts = ARTIFACTS[stage]
        keys = dict(verdicts[action.get("verdict", "PASS")])
        lines = ["---", *(f"{k}: {v}" for k, v in keys.items()), "---", "", f"# {stage}", ""]
        if action.get("contradict"):
            first = next(iter(verdicts["FAIL"].items()))
            lines.append(f"{first[0]}: {first[1]}")
        (Path(artifact_dir) / name).write_text("\n".join(lines) + "\n")
    with (plan_file.parent / "SPANS.log").open("a") as fh:
        fh.write(f"{task} {stage} {started!r} {time.time()!r}\n")
    return int(action.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
