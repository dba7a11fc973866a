"""A real `orch serve` process on a free loopback port, and a repo of fake agents it runs.

Shared by the API, schema and browser acceptance tests. The fake agent is
tests/integration/agents/fake_agent.py: a test holds a job by naming it in the plan with
``"hold": true`` and releases it with ``release(task, stage)``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from orchestrator import repo_ops
from orchestrator.config import load_settings
from orchestrator.store import make_engine, migrate

ORCH = Path(sys.executable).with_name("orch")
FAKE = Path(__file__).resolve().parents[1] / "integration" / "agents" / "fake_agent.py"
STAGES = ("development", "testing", "deploy-staging")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(home: Path, db_url: str, **extra: str) -> dict[str, str]:
    """Our environment without any ORCH_*, then a home, a database and fast timings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
    }
    env.update(
        ORCH_HOME=str(home),
        ORCH_DATABASE_URL=db_url,
        ORCH_POLL_INTERVAL_S="0.2",
        ORCH_HEARTBEAT_INTERVAL_S="0.5",
        ORCH_JOB_LEASE_S="5",
        ORCH_KILL_GRACE_S="0.5",
        **extra,
    )
    return env


def wait_for(
    what: Callable[[], bool], deadline_s: float = 120, why: str = "", poll_s: float = 0.1
) -> None:
    end = time.monotonic() + deadline_s
    while not what():
        if time.monotonic() > end:
            pytest.fail(f"the condition was not reached: {why}")
        time.sleep(poll_s)


class Server:
    """`orch serve` as a user runs it; ``client`` talks to it over loopback."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str],
        *,
        scheduler: bool = True,
        name: str = "serve",
        args: tuple[str, ...] = (),
    ) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        argv = [str(ORCH), "serve", "--port", str(self.port), *args]
        if not scheduler:
            argv.append("--no-scheduler")
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        # Looked for often: a refused connection costs next to nothing, and every test of
        # the API, the schema and the dashboard waits for a start-up or two.
        wait_for(self._up, 90, f"{self.url}/health answers (log: {self.log_path})", 0.02)
        # The client sends the token as a user would: the home's file, which this serve
        # made if missing. With ORCH_API_TOKEN set, a test sends that one itself.
        if "ORCH_API_TOKEN" not in env and "--insecure-no-token" not in args:
            token = (Path(env["ORCH_HOME"]) / "api-token").read_text().strip()
            self.client.headers["Authorization"] = f"Bearer {token}"

    def dashboard_link(self) -> str:
        """The dashboard's link as `orch dashboard` prints it (`orch serve` writes it to a
        terminal only), as a user copies it: opened in a browser, it gives the browser the
        session that reads."""
        argv = [str(ORCH), "dashboard", "--port", str(self.port)]
        shown = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert re.fullmatch(r"http://\S+", shown.stdout.strip()), shown.stdout
        return shown.stdout.strip()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"orch serve exited {self.proc.returncode}: {self.output()}")
        try:
            return self.client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; its exit code."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            self.log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.client.close()
        self.log.close()


class FakeRepo:
    """A git repo registered with fake `command:` agents at every stage, and their plan."""

    def __init__(self, tmp: Path, db_url: str, repo: Path, plan: dict[str, Any]) -> None:
        self.home = tmp / "home"
        self.db_url = db_url
        self.plan = tmp / "plan" / "plan.json"
        self.plan.parent.mkdir(parents=True, exist_ok=True)
        self.set_plan(plan)
        agent = (
            f"command:{sys.executable} {FAKE} {self.plan} {{task}} {{stage}} "
            f"{{artifact_dir}} {{worktree}}"
        )
        self.engine = make_engine(db_url)
        # A database copied from the migrated template: one plain read finds it current
        # (Alembic's upgrade, a no-op here, took ~10 ms of every test).
        migrate.ensure_current(self.engine)
        self.settings = load_settings(home=self.home, database_url=db_url)
        repo_ops.add_repo(
            self.engine,
            "demo",
            repo,
            repo_ops.RepoInput(
                stages=list(STAGES),
                agents=[f"{s}={agent}" for s in STAGES],
                # The merge gate re-tests with the repo's test command: one that passes.
                test_cmd=f"{sys.executable} -c pass",
                # The fake agents read their plan and write their logs beside it.
                sandbox_rw=[str(self.plan.parent)],
            ),
        )

    def set_plan(self, plan: dict[str, Any]) -> None:
        self.plan.write_text(json.dumps(plan))

    def release(self, task: str, stage: str, attempt: int = 1) -> None:
        (self.plan.parent / f"RELEASE-{task}-{stage}-{attempt}").write_text("go")

    def started(self, task: str, stage: str) -> bool:
        log = self.plan.parent / "STARTS.log"
        return log.exists() and f"{task}:{stage}:" in log.read_text()

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def close(self) -> None:
        self.engine.dispose()
