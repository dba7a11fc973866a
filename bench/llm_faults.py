"""Model-API faults end to end: the real pinned CLIs, the real engine, a model server on
127.0.0.1 that fails on cue.

    python bench/llm_faults.py [--backends claude,codex] [--faults ok,outage,...]

For each backend and fault, a fresh home, database and repo with ``--tasks`` tasks (three
for the outage, one otherwise) whose developer is the backend; a worker runs them until
every task is done or blocked (or ``--deadline-s``). The faults:

- ``ok``: no fault (the baseline of the seconds column);
- ``outage``: every agent request answers 529 for ``--outage-s`` seconds, then the server
  is fine again (three tasks at once);
- ``credentials``: 401 until the backend is paused, then the key is "fixed" and
  ``orch backend resume`` is run;
- ``refused``: 400 (a request the server refuses);
- ``mid-run``: the first call answered, then 529 for ``--outage-s`` seconds;
- ``loop``: the agent reads a file forever, against a task budget of $0.01.

Printed per run: the tasks' final states, developer and infra retries spent (goal 0 for
infra faults), the model calls the server answered, recorded tokens against the server's
count of billed tokens (goal: equal), recorded cost, seconds and seconds against the ``ok``
run of the same backend. No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import fake_model_server as F  # noqa: E402
from agent_server import AgentServer  # noqa: E402

from orchestrator import backend_ops, repo_ops, task_ops  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.worker import Worker  # noqa: E402
from orchestrator.store import alert_rows, breakers, queries  # noqa: E402
from orchestrator.store.bootstrap import open_engine  # noqa: E402

CLI_DIR = ROOT / ".agent-clis" / "node_modules" / ".bin"
KEY = "sk-orch-bench-not-a-real-key"
FAULTS = ("ok", "outage", "credentials", "refused", "mid-run", "loop")
# Only loopback: anything else goes to a proxy port nothing listens on.
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def _repo(where: Path) -> Path:
    repo = where / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "README.md").write_text("# bench\n")
    git("add", "README.md")
    git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "init")
    return repo


def run_one(backend: str, fault: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"orch-bench-{backend}-{fault}-"))
    server = AgentServer().start()
    names = (
        ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]
        if backend == "claude"
        else ["OPENAI_BASE_URL", "OPENAI_API_KEY"]
    )
    os.environ.update(OFFLINE)
    os.environ.update(
        {
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": KEY,
            "OPENAI_BASE_URL": server.openai_base_url,
            "OPENAI_API_KEY": KEY,
        }
    )
    n = 3 if fault == "outage" else 1
    st = load_settings(
        home=tmp / "home",
        claude_command=str(CLI_DIR / "claude"),
        codex_command=str(CLI_DIR / "codex"),
        claude_max_retries=0,
        codex_max_retries=0,
        max_parallel_jobs=n,
        max_parallel_jobs_per_repo=n,
        infra_retry_backoff_s=0.5,
        backend_probe_first_s=1.0,
        poll_interval_s=0.2,
        agent_stall_timeout_s=30,
        llm_budget_per_task_usd=0.01 if fault == "loop" else 10.0,
    )
    engine = open_engine(st)
    repo_ops.add_repo(
        engine,
        "bench",
        _repo(tmp),
        repo_ops.RepoInput(
            agent_env=[*names, *OFFLINE],
            agents=(f"development={backend}",),
            test_cmd=f"{sys.executable} -c pass",
            stages=["development", "testing", "deploy-staging"],
        ),
    )
    keys = [task_ops.add_task(engine, st, "bench", f"Task {i}", "Do.").task.key for i in range(n)]
    if fault == "outage":
        server.fault = F.http_error(529, "bench outage")
        threading.Timer(args.outage_s, lambda: setattr(server, "fault", None)).start()
    elif fault == "credentials":
        server.fault = F.http_error(401, "bench: invalid key")
    elif fault == "refused":
        server.fault = F.http_error(400, "bench: a request the server refuses")
    elif fault == "mid-run":
        server.fault_after = 1
        server.fault = F.http_error(529, "bench outage after a first answer")
        threading.Timer(args.outage_s, lambda: setattr(server, "fault", None)).start()
    elif fault == "loop":
        server.loop = True

    def states() -> list[str]:
        with engine.connect() as conn:
            return [t.state for t in (queries.get_task(conn, k) for k in keys) if t is not None]

    worker = Worker(st, engine)
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.monotonic()
    thread.start()
    resumed = False
    while time.monotonic() - started < args.deadline_s:
        if all(s in ("done", "blocked") for s in states()):
            break
        if fault == "credentials" and not resumed:
            with engine.connect() as conn:
                row = breakers.get(conn, backend)
            if row is not None and row.state.paused:
                server.fault = None
                backend_ops.resume_backend(engine, backend)
                resumed = True
        time.sleep(0.1)
    seconds = time.monotonic() - started
    worker.stop(drain=True)
    thread.join(60)
    with engine.connect() as conn:
        tasks = [t for t in (queries.get_task(conn, k) for k in keys) if t is not None]
        jobs = [j for t in tasks for j in queries.list_jobs(conn, task_id=t.id)]
        alerts = [a.kind for a in alert_rows.list_alerts(conn)]
    engine.dispose()
    billed = server.billed()
    calls = len(server.scripted_requests())
    server.stop()
    return {
        "backend": backend,
        "fault": fault,
        "states": dict(Counter(t.state for t in tasks)),
        "dev_retries": sum(t.developer_retries for t in tasks),
        "infra_retries": sum(t.infra_retries for t in tasks),
        "calls": calls,
        "recorded": (
            sum(j.tokens_in or 0 for j in jobs),
            sum(j.tokens_out or 0 for j in jobs),
        ),
        "billed": billed,
        "cost_usd": sum(j.cost_usd or 0.0 for j in jobs),
        "alerts": dict(Counter(alerts)),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="claude,codex")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        if not (CLI_DIR / backend).exists():
            print(f"{backend}: not installed at {CLI_DIR} (scripts/install-agent-clis.sh)")
            continue
        base: float | None = None
        for fault in args.faults.split(","):
            r = run_one(backend, fault, args)
            if fault == "ok":
                base = r["seconds"]
            r["ratio"] = r["seconds"] / base if base else None
            rows.append(r)
            print(_line(r), flush=True)
    print()
    print("goals: infra faults spend 0 developer retries; recorded tokens equal billed tokens")


def _line(r: dict[str, Any]) -> str:
    states = ",".join(f"{k}={v}" for k, v in sorted(r["states"].items()))
    alerts = ",".join(f"{k}={v}" for k, v in sorted(r["alerts"].items())) or "-"
    same = "equal" if tuple(r["recorded"]) == tuple(r["billed"]) else "DIFFER"
    ratio = f"{r['ratio']:.1f}x ok" if r["ratio"] else "-"
    return (
        f"{r['backend']:6} {r['fault']:11} states {states:18} dev-retries {r['dev_retries']} "
        f"infra-retries {r['infra_retries']} calls {r['calls']:3} "
        f"tokens recorded {r['recorded'][0]}/{r['recorded'][1]} billed "
        f"{r['billed'][0]}/{r['billed'][1]} ({same}) ${r['cost_usd']:.4f} "
        f"alerts {alerts} {r['seconds']:.1f}s ({ratio})"
    )


if __name__ == "__main__":
    main()
