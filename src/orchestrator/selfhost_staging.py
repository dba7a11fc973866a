"""The self-hosting staging suite: run the orchestrator of a task's worktree, smoke it, stop it.

``python -m orchestrator.selfhost_staging`` is the default staging command of a repo added
with ``--self-hosting`` (``orch repo add orchestrator . --self-hosting``). The staging-runner
runs it in the task's worktree. It:

1. starts ``python -m orchestrator serve --no-scheduler`` with ``PYTHONPATH=<worktree>/src``,
   so the code under test is the worktree's, on a free loopback port, with a fresh temporary
   ``ORCH_HOME`` and its own SQLite database (never the production one);
2. checks that the instance really imports the worktree's code and really uses that home;
3. runs the read-only smoke: ``GET /health``, ``/status`` and ``/queue`` (its ``serial_gate``
   field included) answer 200 with the fields a monitor relies on (with the API token the
   smoke gave the instance: its reads need one);
4. stops it with SIGTERM (it must stop by itself within the grace) and removes the home.

It never touches the production process or its database. Exit 0: the smoke passed; 1: it
failed (the reasons and the instance's log tail are printed); 2: a usage error.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator import proc_group
from orchestrator.runners.base import log_tail
from orchestrator.runners.loopback import http_get, json_object, parse_loopback_url

STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0
_POLL_S = 0.1

# Every response the smoke reads, and the fields it must hold.
SMOKE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/health", ("status", "database")),
    ("/status", ("version", "uptime_s", "settings", "kill_switches", "tasks", "serial_gate")),
    (
        "/queue",
        (
            "queued",
            "running",
            "deferred",
            "blocked",
            "serial_gate",
            "test_runner",
            "staging_runner",
            "merge_gate",
        ),
    ),
)

_WHERE_IS_THE_CODE = (
    "import pathlib, sys, orchestrator\n"
    "pathlib.Path(sys.argv[1]).write_text(str(pathlib.Path(orchestrator.__file__).resolve()))\n"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def staging_env(src: Path, home: Path, port: int, token: str) -> dict[str, str]:
    """The instance's environment: ours without any ORCH_* or Python path, then its own,
    with ``token`` as its API token (its reads need it)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORCH_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        PYTHONPATH=str(src),
        PYTHONDONTWRITEBYTECODE="1",
        ORCH_HOME=str(home),
        # Empty: SQLite under ORCH_HOME, whatever a .env file might say.
        ORCH_DATABASE_URL="",
        ORCH_API_HOST="127.0.0.1",
        ORCH_API_PORT=str(port),
        ORCH_API_TOKEN=token,
        ORCH_ALERT_WEBHOOK_URL="",
    )
    return env


def check_fields(path: str, body: bytes, fields: Sequence[str]) -> list[str]:
    """Problems with one smoke response's JSON body (empty: it is fine)."""
    data = json_object(body)
    if data is None:
        return [f"{path}: the body is not a JSON object"]
    problems = [f"{path}: no field {name!r}" for name in fields if name not in data]
    if path == "/health" and data.get("status") != "ok":
        problems.append(f"{path}: status is {data.get('status')!r}, not 'ok'")
    if "serial_gate" in fields and not isinstance(data.get("serial_gate"), dict):
        problems.append(f"{path}: serial_gate is not an object (repo -> holder)")
    return problems


def check_home(status_body: bytes, home: Path) -> list[str]:
    """The instance must say it uses the staging home: the smoke talked to it, not another."""
    settings = (json_object(status_body) or {}).get("settings")
    shown = settings.get("home") if isinstance(settings, dict) else None
    if shown != str(home):
        return [f"/status shows home {shown!r}, not the staging home {home}"]
    return []


class Instance:
    """The staging server, run through proc_group in a thread until ``stop``."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.cancel = threading.Event()
        self.outcome: proc_group.Outcome | None = None
        request = proc_group.ExecuteRequest(
            argv=argv,
            cwd=cwd,
            env=env,
            log_path=log_path,
            # A bound on the whole run, should the smoke itself hang.
            timeout_s=STARTUP_TIMEOUT_S + 10 * REQUEST_TIMEOUT_S + STOP_GRACE_S,
            grace_s=STOP_GRACE_S,
        )
        self.thread = threading.Thread(
            target=self._run, args=(request,), name="staging-instance", daemon=True
        )

    def _run(self, request: proc_group.ExecuteRequest) -> None:
        self.outcome = proc_group.run(request, cancel=self.cancel)

    def start(self) -> None:
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> proc_group.Outcome | None:
        self.cancel.set()
        self.thread.join()
        return self.outcome


def wait_until(ready: Callable[[], bool], alive: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``ready`` until it holds, the process dies, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return False
        time.sleep(_POLL_S)
    return False


def smoke(worktree: Path, *, keep: bool = False, out: Callable[[str], None] = print) -> int:
    """Start the worktree's orchestrator, smoke it, stop it; 0 when everything held."""
    src = worktree / "src"
    if not (src / "orchestrator" / "__init__.py").is_file():
        out(f"error: {worktree} is not an orchestrator work tree (no src/orchestrator)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="orch-staging-"))
    home = tmp / "home"
    problems: list[str] = []
    instance: Instance | None = None
    try:
        port = free_port()
        # The instance's token is the smoke's own: given, never read back from a file the
        # instance (the code under test) wrote.
        token = secrets.token_urlsafe(32)
        env = staging_env(src, home, port, token)
        out(f"staging: the orchestrator of {worktree} on 127.0.0.1:{port}, home {home}")
        where = tmp / "code-path"
        check = proc_group.run(
            proc_group.ExecuteRequest(
                argv=[sys.executable, "-c", _WHERE_IS_THE_CODE, str(where)],
                cwd=tmp,
                env=env,
                log_path=tmp / "code-path.log",
                timeout_s=60,
            )
        )
        code = where.read_text() if where.exists() else ""
        if not check or not Path(code).is_relative_to(src.resolve()):
            problems.append(f"the instance would not run the work tree's code (imports {code!r})")
            return _report(problems, tmp / "code-path.log", out)
        out(f"ok: code from {Path(code).parent}")

        argv = [sys.executable, "-m", "orchestrator", "serve", "--no-scheduler"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        instance = Instance(argv, tmp, env, tmp / "serve.log")
        instance.start()
        base = f"http://127.0.0.1:{port}"
        health, why = parse_loopback_url(base + "/health")
        assert health is not None, why

        def up() -> bool:
            return http_get(health, REQUEST_TIMEOUT_S).code == 200

        if not wait_until(up, instance.running, STARTUP_TIMEOUT_S):
            problems.append(f"the instance did not answer {base}/health in time (or exited)")
            return _report(problems, instance.log_path, out, instance)
        bodies: dict[str, bytes] = {}
        for path, fields in SMOKE:
            url, why = parse_loopback_url(base + path)
            assert url is not None, why
            probe = http_get(url, REQUEST_TIMEOUT_S, {"Authorization": f"Bearer {token}"})
            if probe.code != 200:
                problems.append(f"GET {path}: {probe.code or probe.error}, expected 200")
                continue
            bodies[path] = probe.body
            found = check_fields(path, probe.body, fields)
            problems += found
            if not found:
                out(f"ok: GET {path} ({probe.latency_s * 1000:.0f} ms)")
        problems += check_home(bodies.get("/status", b""), home)
        return _report(problems, instance.log_path, out, instance)
    finally:
        if instance is not None and instance.running():
            instance.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _report(
    problems: list[str],
    log_path: Path,
    out: Callable[[str], None],
    instance: Instance | None = None,
) -> int:
    if instance is not None:
        outcome = instance.stop()
        if outcome is None:
            problems.append("the instance's supervisor ended without an outcome")
        elif outcome.timed_out:
            problems.append("the instance ran into the staging suite's own time limit")
        elif outcome.exit_code != 0:
            how = f"signal {outcome.signal}" if outcome.signal else f"exit {outcome.exit_code}"
            problems.append(f"the instance did not stop cleanly on SIGTERM ({how})")
        else:
            out("ok: stopped cleanly on SIGTERM")
    if not problems:
        out("staging smoke: PASSED")
        return 0
    for p in problems:
        out(f"FAILED: {p}")
    out("----- the instance's log (tail) -----")
    out(log_tail(log_path, 60))
    out("staging smoke: FAILED")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m orchestrator.selfhost_staging [--worktree DIR] [--keep]``."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.selfhost_staging",
        description="Start the orchestrator of a work tree on a free loopback port, run the "
        "read-only smoke against /health, /status and /queue, then stop it.",
    )
    parser.add_argument("--worktree", type=Path, default=None, help="Default: the current dir.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home.")
    args = parser.parse_args(argv)
    worktree = (args.worktree or Path.cwd()).resolve()
    return smoke(worktree, keep=args.keep, out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
