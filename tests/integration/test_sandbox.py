"""The sandbox against a hostile agent: each escape succeeds bare and is stopped inside it.

The agent is a real child process (``agents/hostile_agent.py``) run as the development agent
of a real pipeline: real git, a real SQLite file in the orchestrator's home, the real
worker. Each attack runs twice: with ``ORCH_SANDBOX=off`` (what every release before the
sandbox did: it succeeds, which shows the test can fail) and with the sandbox on (it is
stopped). ``ATTACKS`` is the source of the sandbox's table in ``docs/security.md``
(``test_security_doc.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from orchestrator import repo_ops, sandbox, task_ops
from orchestrator.config import Settings, load_settings
from orchestrator.engine.worker import Worker
from orchestrator.store import queries

try:
    from security_doc import Attack
    from test_engine import STAGES, Harness
except ImportError:  # imported as tests.integration.test_sandbox
    from tests.integration.security_doc import Attack
    from tests.integration.test_engine import STAGES, Harness

# This Python and its venv, bound back read-only where the sandbox hides them (a clone
# under /tmp, which every sandbox mounts empty), as a job's own command is.
PYTHON = tuple(sandbox.toolchain_paths([sys.executable]))
HOSTILE = Path(__file__).parent / "agents" / "hostile_agent.py"
ORCH = Path(sys.executable).with_name("orch")
TOKEN = "orch-api-token-the-agent-must-not-see"

# CI installs bubblewrap and sets ORCH_TEST_REQUIRE_SANDBOX=1: there a missing bubblewrap
# fails these tests instead of skipping them.
NEEDS_BWRAP = pytest.mark.skipif(
    not sandbox.probe().ok and not os.environ.get("ORCH_TEST_REQUIRE_SANDBOX"),
    reason=f"bubblewrap cannot run here: {sandbox.probe().detail}",
)


ATTACKS = [
    Attack(
        "db",
        "open `<ORCH_HOME>/orchestrator.db` and set every repo's test command to `true`",
        "the database is changed: a change that fails its tests would merge",
        "the database is not there (the orchestrator's home is an empty folder); the test "
        "command is unchanged",
    ),
    Attack(
        "task",
        "rewrite another task's `00-task.md` and its patch (a backdoor)",
        "the other task's prompt and patch are the attacker's",
        "no other task's folder is there; both files are unchanged",
    ),
    Attack(
        "environ",
        "read every `/proc/<pid>/environ` for `ORCH_API_TOKEN`",
        "the token is read from the orchestrator's own process",
        "the job's `/proc` shows only its own processes: no token",
    ),
    Attack(
        "hook",
        "plant hooks (`reference-transaction`, `post-checkout`, `pre-push`, `pre-commit`, "
        "`prepare-commit-msg`, `commit-msg`, `post-commit`, `pre-rebase`, `post-rewrite`), a "
        "`core.hooksPath` folder and a `core.fsmonitor` command in its workspace's git dir "
        "and the user's clone; the task then commits, rebases, merges and pushes",
        "planted in both; none of them runs: every git call of the orchestrator has "
        "`core.hooksPath=/dev/null` and `core.fsmonitor=false`",
        "its workspace's `.git` is read-only and the user's clone is not there: nothing is "
        "planted, nothing runs",
    ),
    Attack(
        "gitconfig",
        "plant a filter and a diff driver (picked by `* filter=evil diff=evil` in the "
        "tree's `.gitattributes`), `gpg.program` with `commit.gpgSign`, and "
        "`remote.origin.uploadpack`/`receivepack`, in both configs",
        "planted; the signing program, upload-pack and receive-pack never run (signing is "
        "off and git's own pack programs are named in every call), but the orchestrator's "
        "`git add` runs the clean filter: only the sandbox stops that",
        "nothing is planted; the tree's `.gitattributes` picks no driver (each workspace's "
        "own `info/attributes` says `* !filter !diff !merge`): nothing runs",
    ),
    Attack(
        "gitdir",
        "point its workspace's `.git` at a git dir of its own with that filter and signing "
        "program (escaped the sandbox before this release: the worktree's `.git` file was "
        "writable)",
        "swapped; the clean filter runs in the orchestrator's next `git add`",
        "the workspace's `.git` is sealed read-only after the workspace is bound: it cannot "
        "be renamed or rewritten; nothing runs",
    ),
    Attack(
        "refs",
        "make a commit and `git update-ref refs/heads/main` to it in the user's clone",
        "main holds a commit no suite ran on",
        "the user's clone is not there: main moves only by the merge gate",
    ),
    Attack(
        "branch",
        "point another task's `orch/<KEY>` at a commit of its own",
        "the other task's branch is the attacker's",
        "the user's clone is not there (the workspace holds only its own branch): unchanged",
    ),
    Attack(
        "push",
        "push a commit of its own to the remote's main (a local path, with the user's own "
        "file access)",
        "the remote's main holds a commit no suite ran on",
        "every local remote of the user's clone is hidden (and no SSH agent, credential "
        "helper or token reaches the sandbox): the push fails; the task lands normally",
    ),
    Attack(
        "rewind",
        "move the user's main back one commit before the first merge",
        "the merge gate refuses to build on it: the task is blocked with the alert "
        "`main-rewound` (main as registered is the first record) and main is not moved",
        "the user's clone is not there: main is as the user left it",
    ),
    Attack(
        "daemon",
        "double fork, `setsid`, exec with a cleared environment and the name `[kworker/0:1]`",
        "the daemon outlives the job (no marker to sweep it by, not in the job's group)",
        "the job is its PID namespace: the daemon dies with the job",
    ),
]


@pytest.fixture
def box(tmp_path: Path, make_repo: Any, migrated_sqlite_at: Any) -> Iterator[Harness]:
    home = tmp_path / "home"
    home.mkdir()
    files = {"README.md": "demo\n"}
    db_url = migrated_sqlite_at(home / "orchestrator.db")
    harness = Harness(tmp_path, db_url, make_repo(files=files))
    yield harness
    harness.stop()
    harness.engine.dispose()
    _kill_daemons(tmp_path)


def _kill_daemons(tmp_path: Path) -> None:
    """The bare runs' daemons: found by their command line, killed (they hold no marker)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"--daemon-body" in cmdline and str(tmp_path).encode() in cmdline:
            os.kill(int(entry.name), signal.SIGKILL)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _with_remote(h: Harness) -> Path:
    """A bare repository as the user's `origin`, holding main."""
    remote = h.tmp / "remote.git"
    _git(h.tmp, "clone", "-q", "--bare", str(h.repo_path), str(remote))
    _git(h.repo_path, "remote", "add", "origin", str(remote))
    _git(h.repo_path, "fetch", "-q", "origin")
    return remote


def _run(
    h: Harness,
    mode: str,
    *,
    sandboxed: bool,
    extra: tuple[str, ...] = (),
    remote: str | None = None,
    own_process: bool = False,
) -> tuple[str, str]:
    """File a task whose developer is the hostile agent in ``mode``; run it; (key, loot).

    ``own_process``: the worker runs as ``orch run --until-idle``, a process of its own
    whose environment holds the API token; else the same worker in this process, with the
    settings that command reads (its start-up is not what these attacks are about)."""
    h.settings = load_settings(**{**asdict(h.settings), "sandbox": sandboxed})
    loot = h.tmp / "loot"
    loot.mkdir(exist_ok=True)
    hostile = (
        f"command:{sys.executable} {HOSTILE} {mode} {loot} {h.settings.home} "
        f"{{artifact_dir}} {{worktree}} {' '.join(extra)}"
    ).strip()
    specs = [f"development={hostile}", *(f"{s}={h.agent()}" for s in STAGES[1:])]
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        repo_ops.RepoInput(
            stages=STAGES,
            agents=specs,
            test_cmd=f"{sys.executable} -c pass",
            remote=remote,
            sandbox_rw=[str(loot), str(h.plan_path.parent)],
        ),
    )
    key = h.add_task("hostile")
    if not own_process:
        settings = load_settings(
            home=h.settings.home,
            database_url=h.settings.effective_database_url,
            sandbox=sandboxed,
            poll_interval_s=0.2,
        )
        Worker(settings, h.engine).run(until_idle=True)
        return key, (loot / mode).read_text().strip()
    # The worker as a user runs it: its own process, the API token in its environment from
    # the start (what /proc/<pid>/environ shows), like `orch serve` holds it.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
    }
    env.update(
        ORCH_HOME=str(h.settings.home),
        ORCH_DATABASE_URL=h.settings.effective_database_url,
        ORCH_API_TOKEN=TOKEN,
        ORCH_SANDBOX="on" if sandboxed else "off",
        ORCH_POLL_INTERVAL_S="0.2",
    )
    done = subprocess.run(
        [str(ORCH), "run", "--until-idle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return key, (loot / mode).read_text().strip()


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_the_database_is_out_of_reach(box: Harness, sandboxed: bool) -> None:
    key, got = _run(box, "db", sandboxed=sandboxed)
    with box.engine.connect() as conn:
        repo = queries.get_repo(conn, "demo")
    assert repo is not None
    if not sandboxed:
        assert got.startswith("got:"), got
        assert repo.test_cmd == ["true"]
        return
    assert got.startswith("denied:"), got
    assert repo.test_cmd == [sys.executable, "-c", "pass"]
    assert box.task(key).state == "done"


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_another_tasks_folder_is_out_of_reach(
    box: Harness, make_repo: Any, sandboxed: bool
) -> None:
    repo_ops.add_repo(
        box.engine,
        "victim",
        make_repo(files={"README.md": "victim\n"}),
        repo_ops.RepoInput(agents=["development=manual"], prefix="VIC"),
    )
    patch = b"--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n victim\n+hello\n"
    victim = task_ops.add_task(box.engine, box.settings, "victim", "innocent", "body", patch)
    task_md = (victim.folder / "00-task.md").read_text()
    _key, got = _run(box, "task", sandboxed=sandboxed, extra=(victim.task.key,))
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "hijacked" in (victim.folder / "00-task.md").read_text()
        return
    assert got.startswith("denied:"), got
    assert (victim.folder / "00-task.md").read_text() == task_md
    assert victim.patch is not None
    assert victim.patch.read_bytes() == patch


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_the_orchestrators_environment_is_out_of_reach(box: Harness, sandboxed: bool) -> None:
    _key, got = _run(box, "environ", sandboxed=sandboxed, own_process=True)
    if not sandboxed:
        assert TOKEN in got, got
        return
    assert got.startswith("denied:"), got
    assert TOKEN not in got


def _lock_free(path: Path) -> bool:
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_a_daemon_dies_with_its_job(box: Harness, sandboxed: bool) -> None:
    key, got = _run(box, "daemon", sandboxed=sandboxed)
    loot = box.tmp / "loot"
    # The agent waited until its daemon held the lock before it ended the job.
    assert got.startswith("got:"), got
    assert (loot / "daemon.started").exists()
    assert box.task(key).state == "done"
    if not sandboxed:
        assert not _lock_free(loot / "daemon.lock")  # it outlived the job
        return
    box.wait_for(lambda: _lock_free(loot / "daemon.lock"))


def _ran(h: Harness) -> list[str]:
    """What of the planted programs ran (each touches loot/<name>-ran)."""
    return sorted(p.name.removesuffix("-ran") for p in (h.tmp / "loot").glob("*-ran"))


def _main_log(cwd: Path, rev: str = "main") -> list[str]:
    return _git(cwd, "log", "--format=%s", rev).splitlines()


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_hooks_never_run(box: Harness, sandboxed: bool) -> None:
    # Every hook the pipeline could trigger (a commit, a rebase, the update of main, the
    # push to the remote, the next checkout), a core.hooksPath and a core.fsmonitor, in
    # the workspace's git dir and the user's.
    remote = _with_remote(box)
    key, got = _run(box, "hook", sandboxed=sandboxed, extra=(str(box.repo_path),), remote="origin")
    assert box.task(key).state == "done"  # committed, rebased, merged, pushed
    assert _main_log(remote)[0].startswith(key)  # the push ran too
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "user's clone" in got, got
    else:
        assert got.startswith("denied:"), got
        assert not (box.repo_path / ".git" / "hooks" / "reference-transaction").exists()
    # Planted or not, nothing of it ever ran inside the orchestrator's git calls.
    assert _ran(box) == []


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_config_programs_never_run(box: Harness, sandboxed: bool) -> None:
    # Filter and diff drivers picked by the tree's own .gitattributes, a signing program,
    # and the remote's upload-pack and receive-pack, in both configs.
    remote = _with_remote(box)
    key, got = _run(
        box, "gitconfig", sandboxed=sandboxed, extra=(str(box.repo_path),), remote="origin"
    )
    assert box.task(key).state == "done"
    assert _main_log(remote)[0].startswith(key)
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "user's clone" in got, got
        # Bare, the agent rewrote its workspace's own config and attributes: the
        # orchestrator's `git add` runs its clean filter. Only the sandbox stops that;
        # nothing else it planted ran.
        ran = _ran(box)
        assert "filter-clean" in ran, ran
        assert not {"gpg-program", "uploadpack", "receivepack", "diff-external"} & set(ran), ran
        return
    assert got.startswith("denied:"), got
    assert _ran(box) == []


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_the_workspace_git_dir_cannot_be_swapped(box: Harness, sandboxed: bool) -> None:
    key, got = _run(box, "gitdir", sandboxed=sandboxed)
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "filter-clean" in _ran(box)  # bare: nothing stops it
        assert "gpg-program" not in _ran(box)  # signing is off in every git call
        return
    assert got.startswith("denied:"), got
    assert _ran(box) == []
    assert box.task(key).state == "done"


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_main_moves_only_through_the_merge_gate(box: Harness, sandboxed: bool) -> None:
    key, got = _run(box, "refs", sandboxed=sandboxed, extra=(str(box.repo_path),))
    log = _main_log(box.repo_path)
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "untested" in log  # an untested commit is on main
        return
    assert got.startswith("denied:"), got
    assert box.task(key).state == "done"
    assert "untested" not in log
    message = _git(box.repo_path, "log", "-1", "--format=%B", "main")
    assert f"Orch-Task: {key}" in message  # main's tip is the merge gate's commit


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_another_tasks_branch_cannot_be_moved(box: Harness, sandboxed: bool) -> None:
    _git(box.repo_path, "branch", "orch/OTHER-1", "main")
    before = _git(box.repo_path, "rev-parse", "orch/OTHER-1")
    _key, got = _run(box, "branch", sandboxed=sandboxed, extra=(str(box.repo_path), "OTHER-1"))
    after = _git(box.repo_path, "rev-parse", "orch/OTHER-1")
    if not sandboxed:
        assert got.startswith("got:"), got
        assert after != before
        return
    assert got.startswith("denied:"), got
    assert after == before


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_the_remote_is_out_of_reach(box: Harness, sandboxed: bool) -> None:
    remote = _with_remote(box)
    key, got = _run(box, "push", sandboxed=sandboxed, extra=(str(remote),), remote="origin")
    log = _main_log(remote)
    if not sandboxed:
        assert got.startswith("got:"), got
        assert "untested" in log  # on the remote's main, with the user's own access
        return
    assert got.startswith("denied:"), got
    assert box.task(key).state == "done"
    assert "untested" not in log
    assert log[0].startswith(key)


@NEEDS_BWRAP
@pytest.mark.parametrize("sandboxed", [False, True], ids=["bare", "sandboxed"])
def test_a_rewound_main_is_never_built_on(box: Harness, sandboxed: bool) -> None:
    (box.repo_path / "second.txt").write_text("kept\n")
    _git(box.repo_path, "add", "second.txt")
    _git(box.repo_path, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "second")
    key, got = _run(box, "rewind", sandboxed=sandboxed, extra=(str(box.repo_path),))
    task = box.task(key)
    if not sandboxed:
        # Rewound before the first merge: main no longer holds what the user registered.
        assert got.startswith("got:"), got
        assert task.state == "blocked", task
        assert "main-rewound" in [a.kind for a in box.alerts()]
        assert _main_log(box.repo_path) == ["initial commit"]  # the gate did not move it
        return
    assert got.startswith("denied:"), got
    assert task.state == "done"
    assert "second" in _main_log(box.repo_path)


def test_no_sandbox_no_untrusted_job(
    box: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fail closed: bubblewrap missing and ORCH_SANDBOX not off. The agent never starts.
    missing = sandbox.Probe(False, None, False, f"bwrap is not installed: {sandbox.INSTALL_HINT}")
    monkeypatch.setattr(sandbox, "probe", lambda bwrap="bwrap": missing)
    box.add_repo()
    key = box.add_task()
    box.run_until_idle()
    task = box.task(key)
    assert (task.stage, task.state) == ("development", "blocked")
    assert any("apt-get install bubblewrap" in r for r in task.reasons), task.reasons
    assert [a.kind for a in box.alerts()] == ["sandbox-unavailable"]
    assert box.starts() == []  # the fake agent never ran
    (job,) = box.jobs(key)
    assert job.outcome == "not-started"
    # What a human sees: orch status names the state and the fix.
    from typer.testing import CliRunner

    from orchestrator.cli import app

    env = {"ORCH_HOME": str(box.settings.home), "ORCH_DATABASE_URL": box.settings.database_url}
    shown = CliRunner().invoke(app, ["status"], env=env)
    assert "sandbox unavailable" in shown.output, shown.output
    off = CliRunner().invoke(app, ["status", "--json"], env={**env, "ORCH_SANDBOX": "off"})
    assert '"state": "off"' in off.output, off.output


SPY = """
import os, sys
from pathlib import Path
Path(sys.argv[1]).write_text(os.environ.get("MODEL_CREDS_FOR_TEST", "<none>"))
if len(sys.argv) > 2:  # as the developer: a change and its report
    Path("spy.txt").write_text("change")
    Path(sys.argv[2], "10-dev-report.md").write_text("---\\ndev_status: DONE\\n---\\n")
"""


def test_suites_never_get_the_agents_keys(box: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repo names a key for its agents. The suite is the agent's code too: it must not
    # see it (the test-runner, the merge re-test), while the agent does. Its name is one
    # the masking rule does not know for a secret: the repo naming it says it is one.
    monkeypatch.setenv("MODEL_CREDS_FOR_TEST", "sk-agent-only")
    spy = box.plan_path.parent / "spy.py"
    spy.write_text(SPY)
    seen_by = box.plan_path.parent
    specs = [
        f"development=command:{sys.executable} {spy} {seen_by / 'agent.txt'} {{artifact_dir}}",
        "testing=test-runner",
        f"deploy-staging={box.agent()}",
    ]
    repo_ops.add_repo(
        box.engine,
        "demo",
        box.repo_path,
        box.repo_input(
            stages=STAGES,
            agents=specs,
            agent_env=["MODEL_CREDS_FOR_TEST"],
            test_cmd=f"{sys.executable} {spy} {seen_by / 'suite.txt'}",
        ),
    )
    key = box.add_task()
    box.run_until_idle()
    assert (seen_by / "agent.txt").read_text() == "sk-agent-only"
    assert (seen_by / "suite.txt").read_text() == "<none>"  # the test-runner, the re-test
    assert box.task(key).state == "done"
    # The job logs (read without a token through the API) show the key masked.
    logs = sorted((box.settings.tasks_dir / key / "runs").glob("*.log"))
    agent_log = next(p for p in logs if "-development-" in p.name).read_text()
    assert "  MODEL_CREDS_FOR_TEST=****\n" in agent_log
    for log in logs:
        assert "sk-agent-only" not in log.read_text(), log.name


@NEEDS_BWRAP
def test_a_job_runs_with_the_orchestrators_home_inside_the_users(tmp_path: Path) -> None:
    """The default layout (``~/.orchestrator``, the clone under ``~``): the job runs, sees
    its workspace and cannot see the home around it."""
    user = tmp_path / "user"
    home, clone = user / ".orchestrator", user / "src" / "app"
    work = home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    clone.mkdir(parents=True)
    (home / "orchestrator.db").write_text("secret")
    box = sandbox.Sandbox(writable=(work,), readonly=PYTHON, hidden=(home, clone, user))
    code = "import os; open('out', 'w').write(str(os.path.exists('../../../orchestrator.db')))"
    proc = subprocess.run(
        box.wrap([sys.executable, "-c", code], work),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (work / "out").read_text() == "False"


# The attack on the toolchain's binds, for docs/security.md (test_security_doc.py).
DEFENDED = [
    {
        "attack": "an agent whose executable lives in `~/bin` (npm's prefix set to `~`) reads "
        "`~/.ssh` and the orchestrator's API token",
        "before": "read both: the executable's install prefix, the home itself, was bound "
        "back read-only over the hidden home",
        "now": "only `~/bin` is bound back; a place that is or holds a hidden one never is",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "a suite plants in its evidence folder, which the coverage gate's next run "
        "(`coverage json`) gets too, a `.git/objects/info/alternates` naming `~/.ssh` and the "
        "API token, or a `.git` that links to the home five folders up (`../../../../..`)",
        "before": "the next run read both: every writable folder's alternates were bound back "
        "read-only as the object store a workspace borrows, and its `.git` was sealed "
        "through the link, which bubblewrap followed on the host (the home) and in the "
        "sandbox (the empty home)",
        "now": "only the user's clone's own object store is bound back, and only when a "
        "workspace borrows it; a `.git` that is a link is never sealed",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "connect to the user's SSH agent in their runtime folder "
        "(`/run/user/<uid>`, beside the D-Bus session bus that `systemd-run --user` uses)",
        "before": "reached: the read-only system showed the folder, and a socket on a "
        "read-only mount still takes connections",
        "now": "the runtime folder is hidden like the home: no socket there",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "connect to a socket of the system's services in `/run`: PostgreSQL's "
        "(peer authentication lets in any process of the database's owner, and the "
        "orchestrator's own database holds the verdicts), the system D-Bus (`systemd-run` "
        "as root), Docker's (a container with the host's `/`)",
        "before": "reached: the read-only system showed `/run`, and a socket on a read-only "
        "mount still takes connections",
        "now": "`/run` is hidden: only the folders of the job's `PATH` that lie there and the "
        "files that links in `/etc` name there (`resolv.conf`) are bound back, read-only",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "read the API token and the database where an `ORCH_HOME` linked to another "
        "disk really lies (`~/.orchestrator` -> `/data/orchestrator`)",
        "before": "read both: the home was hidden, and the link with it, but the folder it "
        "names lay open on the read-only system",
        "now": "each hidden place is hidden as written and where it resolves",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "type a command into the user's terminal with `TIOCSTI`, as a job in the "
        "orchestrator's own session (`ORCH_SUBPROCESS_TREE_KILL_ENABLED=off`, `orch serve` "
        "started from a shell)",
        "before": "typed: bubblewrap's `/dev/tty` opened the user's terminal, and its shell "
        "ran the command outside any sandbox (where `dev.tty.legacy_tiocsti` allows it)",
        "now": "the sandbox's `/dev/tty` is `/dev/null` on a bind without devices: it opens "
        "no terminal",
        "test": "tests/integration/test_sandbox.py",
    },
    {
        "attack": "read the user's clone, kept on a disk udisks mounted in "
        "`/run/media/<user>`, through a folder of it that the user's `PATH` names (direnv's "
        "`PATH_add bin`, an activated venv)",
        "before": "read: every folder of the job's `PATH` in `/run` was bound back read-only, "
        "the hidden clone's too",
        "now": "only what hiding `/run` took away is bound back: never a folder (or an `/etc` "
        "file) that lies in another hidden place",
        "test": "tests/integration/test_sandbox.py",
    },
]


def _user_and_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Path]:
    """A user's home (``HOME``, under ``tmp_path``), the orchestrator's home beside it, and a
    task's workspace there."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    settings = load_settings(home=tmp_path / "orch")
    work = settings.home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    return settings, work


def _job_output(
    settings: Settings,
    repo: Path,
    work: Path,
    code: str,
    *,
    kind: str = "agent",
    options: dict[str, Any] | None = None,
    env_path: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """What ``code`` prints as a job in the sandbox ``for_job`` makes for it (with
    ``env_path``, the job's ``PATH`` too)."""
    argv = [sys.executable, "-c", code]
    box = sandbox.for_job(
        settings,
        kind=kind,
        repo_path=repo,
        argv=argv,
        writable=[work],
        env_path=env_path,
        options=options,
    )
    assert box is not None
    env = None if env_path is None else {**os.environ, "PATH": env_path}
    return subprocess.run(
        box.wrap(argv, work), capture_output=True, text=True, timeout=60, check=False, env=env
    )


def _read_or_error(*paths: Path) -> str:
    """A job's code that prints each file's text, or the error reading it raised."""
    lines = ["for path in %r:" % [str(p) for p in paths]]
    lines += [
        "    try:\n        print(open(path).read(), end='')",
        "    except OSError as exc:\n        print(type(exc).__name__)",
    ]
    return "\n".join(lines)


def _connect_or_error(*sockets: str) -> str:
    """A job's code that connects to each socket and prints ``reached``, or the error the
    connection raised."""
    lines = ["import socket", f"for name in {list(sockets)!r}:"]
    lines += [
        "    s = socket.socket(socket.AF_UNIX)",
        "    try:\n        s.connect(name); print('reached')",
        "    except OSError as exc:\n        print(type(exc).__name__)",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _listening(path: str | Path) -> Iterator[None]:
    """A Unix socket at ``path`` that takes connections while the block runs (an SSH
    agent's, a bus's, a resolver's), for ``_connect_or_error`` to try."""
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        yield


def _home_with_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Settings, dict[Path, str]]:
    """The default layout under ``tmp_path/user`` (``HOME``, the orchestrator's home in it),
    with the two secrets an attacker wants there: an SSH key and the API token."""
    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    settings = load_settings(home=user / ".orchestrator")
    secrets = {user / ".ssh" / "id_ed25519": "PRIVATE KEY", settings.home / "api-token": "T0KEN"}
    for path, text in secrets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return user, settings, secrets


@NEEDS_BWRAP
@pytest.mark.parametrize("where", ["bin/agent", "agent"])
def test_an_agent_installed_in_the_users_home_cannot_read_that_home(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An agent CLI in ``~/bin`` (npm's prefix set to ``~``, say). Its install prefix, the
    user's home, was bound back read-only over the hidden home: the agent read ``~/.ssh``
    and the orchestrator's API token. Now the sandbox binds only ``~/bin``: the agent runs
    and the home stays hidden. One in the home itself (``~/agent``) gets its own file: its
    folder is the home, and without that file it could not start."""
    user, settings, secrets = _home_with_secrets(tmp_path, monkeypatch)
    work = settings.home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    agent = user / where
    agent.parent.mkdir(exist_ok=True)
    # The attacker: reads each path it is given into its workspace.
    agent.write_text('#!/bin/sh\nfor f in "$@"; do cat "$f" >> loot 2>&1; done\necho ran >> loot\n')
    agent.chmod(0o755)
    argv = [str(agent), *map(str, secrets)]
    box = sandbox.for_job(settings, kind="agent", repo_path=make_repo(), argv=argv, writable=[work])
    assert box is not None
    proc = subprocess.run(
        box.wrap(argv, work), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loot = (work / "loot").read_text()
    assert loot.endswith("ran\n"), loot  # the agent ran from the home
    for text in secrets.values():
        assert text not in loot


@NEEDS_BWRAP
@pytest.mark.parametrize("plant", ["alternates", "git-link"])
def test_a_suite_cannot_choose_what_the_next_run_in_its_folder_sees(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """A suite (the agent's code) writes its evidence folder, and the coverage gate's next
    run (``coverage json``, which imports the worktree's code) gets that same folder. What
    the suite planted there chose what that run saw: an alternates file naming ``~/.ssh``
    and the API token (bound back as the object store a workspace borrows), or a ``.git``
    that links to the home five folders up (sealed as a workspace's ``.git`` is: bubblewrap
    followed the link on the host and in the sandbox, and bound the host's home on the
    empty one the sandbox shows there). The next run read both secrets either way. Now only
    the clone's own object store is bound, and a ``.git`` that is a link is never sealed."""
    user, settings, secrets = _home_with_secrets(tmp_path, monkeypatch)
    work = settings.home / "worktrees" / "app" / "APP-1"
    evidence = settings.home / "tasks" / "APP-1" / "runs" / "coverage.out"
    for folder in (work, evidence):
        folder.mkdir(parents=True)
    repo = make_repo(user / "src" / "app")
    # The workspace borrows the clone's store, as the orchestrator makes it: still seen.
    store = (repo / ".git" / "objects").resolve()
    (work / ".git" / "objects" / "info").mkdir(parents=True)
    (work / ".git" / "objects" / "info" / "alternates").write_text(f"{store}\n")
    names = "".join(f"{p}\n" for p in (user / ".ssh", settings.home / "api-token"))
    planting = {
        "alternates": f"import os; d = {str(evidence / '.git' / 'objects' / 'info')!r}; "
        f"os.makedirs(d); open(d + '/alternates', 'w').write({names!r})",
        "git-link": f"import os; os.symlink('../../../../..', {str(evidence / '.git')!r})",
    }
    read = (
        f"import os\nfor p in {list(map(str, secrets))!r}:\n"
        "    print(open(p).read() if os.path.exists(p) else 'hidden')\n"
        f"print(os.path.isdir({str(store)!r}))"
    )
    for code in (planting[plant], read):
        argv = [sys.executable, "-c", code]
        box = sandbox.for_job(
            settings, kind="suite", repo_path=repo, argv=argv, writable=[work, evidence]
        )
        assert box is not None
        proc = subprocess.run(
            box.wrap(argv, work), capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
    assert os.path.lexists(evidence / ".git")  # planted
    assert proc.stdout == "hidden\nhidden\nTrue\n"  # what the next run read


@NEEDS_BWRAP
def test_the_users_session_sockets_are_out_of_reach(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's runtime folder (``XDG_RUNTIME_DIR``, ``/run/user/<uid>``) holds the
    sockets of their session: an SSH agent (gnome-keyring's, systemd's), gpg-agent, the
    D-Bus session bus (through which ``systemd-run --user`` starts a command outside any
    sandbox). The read-only system showed it, and a socket on a read-only mount still takes
    connections: the agent spoke to the user's SSH agent. Now that folder is hidden."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    # Outside /tmp (which the sandbox mounts afresh), as /run/user is.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
        agent = os.path.join(runtime, "ssh-agent.socket")
        with _listening(agent):
            proc = _job_output(settings, make_repo(), work, _connect_or_error(agent))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FileNotFoundError\n"


@NEEDS_BWRAP
def test_the_users_terminal_is_out_of_reach(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job started in the orchestrator's own session (``ORCH_SUBPROCESS_TREE_KILL_ENABLED``
    off: no new session per command) has the user's terminal as its controlling terminal,
    and bubblewrap's ``/dev`` has ``/dev/tty``: through it, ``TIOCSTI`` types a command
    into the shell that started ``orch serve`` (where the kernel still allows it,
    ``dev.tty.legacy_tiocsti``), which runs it outside any sandbox. The sandbox's
    ``/dev/tty`` opens no terminal now. (Where ``TIOCSTI`` is off the typing fails bare
    too; the job's ``/dev/tty`` being a terminal is checked either way.)"""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    code = (
        "import fcntl, os, termios\n"
        "try:\n    fd = os.open('/dev/tty', os.O_RDWR)\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
        "else:\n    print('a terminal' if os.isatty(fd) else 'no terminal')\n"
        "    for c in b'echo escaped\\n':\n"
        "        try:\n            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))\n"
        "        except OSError:\n            pass\n"
    )
    argv = [sys.executable, "-c", code]
    box = sandbox.for_job(settings, kind="agent", repo_path=make_repo(), argv=argv, writable=[work])
    assert box is not None
    master, terminal = os.openpty()

    def in_the_users_terminal() -> None:
        # The orchestrator's session, whose controlling terminal is the user's.
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.run(
            box.wrap(argv, work),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            preexec_fn=in_the_users_terminal,
        )
        os.set_blocking(terminal, False)
        try:
            typed = os.read(terminal, 100)
        except BlockingIOError:
            typed = b""
    finally:
        os.close(master)
        os.close(terminal)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, typed) == ("PermissionError\n", b"")


def _system_runtime_folder() -> Iterator[Path]:
    """A folder of our own in the system's ``/run``, where the system's services keep their
    sockets: only a user who may write there (root, as CI runs) can play that attack."""
    if not os.access("/run", os.W_OK):
        pytest.skip("/run is not writable here: the system's sockets cannot be played")
    folder = Path(tempfile.mkdtemp(prefix="orch-test-", dir="/run"))
    try:
        yield folder
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        folder.rmdir()


system_runtime = pytest.fixture(_system_runtime_folder)


@NEEDS_BWRAP
def test_the_systems_sockets_are_out_of_reach(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, system_runtime: Path
) -> None:
    """The system's services keep their sockets in ``/run``: PostgreSQL's (which lets in,
    by peer authentication, any process of the database's owner: the orchestrator's own
    database, where an agent would write its verdicts), the system D-Bus (``systemd-run``
    as root starts a command outside any sandbox), Docker's (a container with the host's
    ``/``). The read-only system showed them, and a socket on a read-only mount still takes
    connections. Now ``/run`` is hidden: no socket there, unless the user names its folder
    for the repo (``--sandbox-ro``), as a suite that needs its database server's would."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    bus = str(system_runtime / "system_bus_socket")
    with _listening(bus):
        seen = []
        # The user may name such a folder for a repo whose suite needs its server there.
        for options in ({}, {"sandbox_ro": [str(system_runtime)]}):
            code = _connect_or_error(bus)
            proc = _job_output(settings, make_repo(), work, code, options=options)
            assert proc.returncode == 0, proc.stderr
            seen.append(proc.stdout)
    assert seen == ["FileNotFoundError\n", "reached\n"]


@NEEDS_BWRAP
def test_what_a_job_needs_from_run_is_still_seen(
    tmp_path: Path,
    make_repo: Any,
    monkeypatch: pytest.MonkeyPatch,
    system_runtime: Path,
    system_config: Path,
) -> None:
    """Hiding ``/run`` must not take away what a job runs with: a ``PATH`` folder there
    (NixOS keeps every system command in ``/run/current-system/sw/bin``) and a file of the
    system's that a link in ``/etc`` names there (``/etc/resolv.conf`` under
    systemd-resolved: without it no name resolves, and no agent reaches its model's API).
    Both are bound back read-only; a socket beside them is not."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    tools = system_runtime / "current-system" / "sw" / "bin"
    tools.mkdir(parents=True)
    (tools / "orch-tool").write_text("#!/bin/sh\necho tool ran\n")
    (tools / "orch-tool").chmod(0o755)
    resolve = system_runtime / "resolve"
    resolve.mkdir()
    (resolve / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    with _listening(resolve / "io.systemd.Resolve"):
        # The system's `/etc` (trusted) names the file through a link.
        etc = system_config
        (etc / "resolv.conf").symlink_to(resolve / "stub-resolv.conf")
        path = f"{tools}:/usr/bin:/bin"
        code = (
            "import subprocess\n"
            "print(subprocess.run(['orch-tool'], capture_output=True, text=True).stdout, end='')\n"
            f"print(open({str(etc / 'resolv.conf')!r}).read(), end='')\n"
            + _connect_or_error(str(resolve / "io.systemd.Resolve"))
        )
        proc = _job_output(settings, make_repo(), work, code, env_path=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tool ran\nnameserver 127.0.0.53\nFileNotFoundError\n"


@NEEDS_BWRAP
def test_a_path_folder_in_run_inside_the_users_clone_stays_hidden(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, system_runtime: Path
) -> None:
    """udisks mounts an external disk under ``/run/media/<user>``: a clone kept there lies in
    ``/run``, and so do its folders that the user's ``PATH`` names (direnv's ``PATH_add
    bin``, an activated venv). The ``PATH`` folders in ``/run`` are bound back to give a job
    what hiding ``/run`` took away; but the clone's were never seen (the clone is hidden),
    and the job listed the clone's ``bin`` and read it. A ``PATH`` folder in another hidden
    place stays hidden; one in ``/run`` outside them is still seen."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    clone = make_repo(
        system_runtime / "media" / "alice" / "disk" / "app",
        files={"bin/release": "#!/bin/sh\necho the user's own script\n"},
    )
    tools = system_runtime / "current-system" / "sw" / "bin"
    tools.mkdir(parents=True)
    (tools / "orch-tool").write_text("#!/bin/sh\necho tool ran\n")
    path = f"{clone / 'bin'}:{tools}:/usr/bin:/bin"
    code = (
        "import os\n"
        f"for folder in {[str(clone / 'bin'), str(tools)]!r}:\n"
        "    try:\n        print(sorted(os.listdir(folder)))\n"
        "    except OSError as exc:\n        print(type(exc).__name__)"
    )
    proc = _job_output(settings, clone, work, code, env_path=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FileNotFoundError\n['orch-tool']\n"


@pytest.fixture
def system_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder that stands for the system's ``/etc`` (a test cannot change the host's own:
    its links are looked for where ``SYSTEM_CONFIG`` says). In ``/var/tmp``, which the
    read-only system shows as it is, as it shows ``/etc``: the job follows a link there as
    it would in ``/etc`` (in ``/tmp``, which the sandbox mounts afresh, the link's own path
    would be bound back, and no link followed)."""
    folder = Path(tempfile.mkdtemp(prefix="orch-test-", dir="/var/tmp"))
    monkeypatch.setattr(sandbox, "SYSTEM_CONFIG", str(folder))
    try:
        yield folder
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        folder.rmdir()


def _age(folder: Path, seconds: int) -> None:
    """Set ``folder``'s mtime ``seconds`` back: its last change was that long ago."""
    then = time.time_ns() - seconds * 10**9
    os.utime(folder, ns=(then, then))


@NEEDS_BWRAP
@pytest.mark.parametrize("chain", ["resolved", "var-run", "toolbox"])
def test_the_resolver_file_is_seen_through_any_chain_of_links(
    tmp_path: Path,
    make_repo: Any,
    monkeypatch: pytest.MonkeyPatch,
    system_runtime: Path,
    system_config: Path,
    chain: str,
) -> None:
    """``/etc/resolv.conf`` reaches its file in ``/run`` in more ways than one link:
    systemd-resolved's names it relatively (``../run/systemd/resolve/stub-resolv.conf``),
    NetworkManager's through the ``/var/run`` link, and in Fedora's toolbox (where
    Silverblue's users develop) it names ``/run/host/etc/resolv.conf``, the host's own link
    to its resolver's file. The sandbox bound back only the file the chain ends at, never
    the link in ``/run`` a job reads it through: in a toolbox no job resolved a name (no
    agent reached its model's API), which it did before ``/run`` was hidden. Only that file
    is seen, not the host's folder (the toolbox's ``/run/host`` is the host's whole ``/``)."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    host_etc = system_runtime / "host" / "etc"
    host_etc.mkdir(parents=True)
    (host_etc / "shadow").write_text("the host's secret\n")
    if chain == "toolbox":
        resolver = system_runtime / "host" / "run" / "systemd" / "resolve" / "stub-resolv.conf"
        (host_etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
        named = str(host_etc / "resolv.conf")
    else:
        resolver = system_runtime / "systemd" / "resolve" / "stub-resolv.conf"
        named = (
            os.path.relpath(resolver, system_config)
            if chain == "resolved"
            else f"/var/run/{resolver.relative_to('/run')}"
        )
    resolver.parent.mkdir(parents=True)
    resolver.write_text("nameserver 127.0.0.53\n")
    (system_config / "resolv.conf").symlink_to(named)
    code = _read_or_error(system_config / "resolv.conf", host_etc / "shadow")
    proc = _job_output(settings, make_repo(), work, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "nameserver 127.0.0.53\nFileNotFoundError\n"


@NEEDS_BWRAP
@pytest.mark.parametrize("change", ["written", "linked"])
def test_a_resolver_file_that_comes_after_the_first_job_is_seen(
    tmp_path: Path,
    make_repo: Any,
    monkeypatch: pytest.MonkeyPatch,
    system_runtime: Path,
    system_config: Path,
    change: str,
) -> None:
    """What ``/etc`` links to in ``/run`` may change while the orchestrator runs: started at
    boot before NetworkManager wrote ``/run/NetworkManager/resolv.conf`` (the link named
    nothing yet), or its user switched to systemd-resolved (``/etc/resolv.conf`` became a
    link into ``/run``). The first job's answer was kept for the process's life: every later
    job had no resolver (and no agent its model's API), as none had before ``/run`` was
    hidden."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    resolver = system_runtime / "resolve" / "stub-resolv.conf"
    resolver.parent.mkdir()
    conf = system_config / "resolv.conf"
    if change == "written":
        conf.symlink_to(resolver)
    else:
        conf.write_text("nameserver 192.0.2.1\n")
    # Each job starts a while after /etc last changed (an hour, then half an hour).
    _age(system_config, 3600)
    repo = make_repo()
    code = _read_or_error(conf)
    first = _job_output(settings, repo, work, code)
    resolver.write_text("nameserver 127.0.0.53\n")
    if change == "linked":
        (system_config / "resolv.conf.new").symlink_to(resolver)
        os.replace(system_config / "resolv.conf.new", conf)
        _age(system_config, 1800)
    second = _job_output(settings, repo, work, code)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert second.stdout == "nameserver 127.0.0.53\n", f"first job: {first.stdout!r}"


@NEEDS_BWRAP
def test_a_runtime_folder_named_through_var_run_is_hidden_and_the_job_starts(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, system_runtime: Path
) -> None:
    """``XDG_RUNTIME_DIR=/var/run/user/<uid>`` (set so by older guides and login scripts)
    names the user's runtime folder through ``/var/run``, a link to ``/run``. Hidden as
    named, it was a mount through that link, which bubblewrap cannot make ("Can't mkdir"):
    no job started. ``/run`` hides it already, by either name."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", f"/var/run/{system_runtime.name}")
    settings = load_settings(home=tmp_path / "orch")
    work = settings.home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    agent = system_runtime / "ssh-agent.socket"
    with _listening(agent):
        code = _connect_or_error(str(agent), f"/var/run/{system_runtime.name}/{agent.name}")
        proc = _job_output(settings, make_repo(), work, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FileNotFoundError\nFileNotFoundError\n"


@NEEDS_BWRAP
def test_a_runtime_folder_named_through_a_link_in_the_home_is_hidden(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``XDG_RUNTIME_DIR`` named through a link in the user's home was hidden on the
    link's path, inside the home that is hidden already: the folder the link leads to stayed
    on the read-only system, and its SSH agent took the job's connection there."""
    settings, work = _user_and_workspace(tmp_path, monkeypatch)
    # Outside /tmp (which the sandbox mounts afresh), as /run/user is.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as runtime:
        (tmp_path / "user" / ".run").symlink_to(runtime)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user" / ".run"))
        agent = os.path.join(runtime, "ssh-agent.socket")
        with _listening(agent):
            proc = _job_output(settings, make_repo(), work, _connect_or_error(agent))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FileNotFoundError\n"


@NEEDS_BWRAP
def test_a_home_that_is_the_root_leaves_the_system_seen(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose user has no home gets ``HOME=/``: Docker sets it so for a ``--user``
    that ``/etc/passwd`` does not name (OpenShift runs every container so), as systemd does
    for a service's user whose home is ``/``. Hidden like a home, ``/`` was an empty file
    system over the whole system: bubblewrap found no command to run, and no job started.
    Such a home holds nothing of the user's to hide; the sandbox's other places stay
    hidden."""
    monkeypatch.setenv("HOME", "/")
    settings = load_settings(home=tmp_path / "orch")
    work = settings.home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    (settings.home / "orchestrator.db").write_text("the orchestrator's database\n")
    code = _read_or_error(settings.home / "orchestrator.db")
    proc = _job_output(settings, make_repo(), work, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FileNotFoundError\n"


@NEEDS_BWRAP
def test_a_runtime_folder_in_tmp_leaves_the_sandboxs_tmp_writable(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some containers set ``XDG_RUNTIME_DIR=/tmp``: hidden like a runtime folder, it would
    cover the sandbox's own ``/tmp`` again, read-only, and a job could write no file there."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp/")
    settings = load_settings(home=tmp_path / "orch")
    work = settings.home / "worktrees" / "app" / "APP-1"
    work.mkdir(parents=True)
    code = "open('/tmp/scratch', 'w').write('x')"
    proc = _job_output(settings, make_repo(), work, code, kind="suite")
    assert proc.returncode == 0, proc.stderr


@NEEDS_BWRAP
def test_a_home_reached_through_a_link_still_runs_jobs_and_stays_hidden(
    make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home reached through a link the system shows (``/home`` linked to ``/var/home`` on
    Fedora Silverblue, an ``ORCH_HOME`` linked to another disk): bubblewrap cannot make a
    mount point through a link (``Can't mkdir``), and no job started. The mounts go where
    the link leads; the job runs in its workspace and the home is still hidden."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as shown:
        disk = Path(shown) / "disk"
        (disk / "user").mkdir(parents=True)
        (Path(shown) / "home").symlink_to(disk)  # absolute, as a mount point's link is
        user = Path(shown) / "home" / "user"
        monkeypatch.setenv("HOME", str(user))
        settings = load_settings(home=user / ".orchestrator")
        (user / ".ssh").mkdir()
        (user / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
        work = settings.home / "worktrees" / "app" / "APP-1"
        work.mkdir(parents=True)
        code = (
            "import os\nopen('out', 'w').write('ran')\n"
            f"print(os.path.exists({str(user / '.ssh' / 'id_ed25519')!r}))"
        )
        proc = _job_output(settings, make_repo(user / "src"), work, code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "False\n"
        assert (work / "out").read_text() == "ran"


@NEEDS_BWRAP
def test_a_home_linked_to_another_disk_is_hidden_where_it_lies(
    make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ORCH_HOME`` is ``~/.orchestrator``, a link to a folder on another disk. The sandbox
    hid the user's home, and with it the link, but the folder itself lay open on the
    read-only system: a job read the API token and the database there, by their real path.
    Each hidden place is hidden as written and where it resolves."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as shown:
        user = Path(shown) / "user"
        data = Path(shown) / "disk" / "orchestrator"
        data.mkdir(parents=True)
        user.mkdir()
        (user / ".orchestrator").symlink_to(data)
        monkeypatch.setenv("HOME", str(user))
        settings = load_settings(home=user / ".orchestrator")
        (data / "api-token").write_text("T0KEN")
        work = settings.home / "worktrees" / "app" / "APP-1"
        work.mkdir(parents=True)
        code = (
            "import os\nopen('out', 'w').write('ran')\n"
            f"p = {str(data / 'api-token')!r}\n"
            "print(open(p).read() if os.path.exists(p) else 'hidden')"
        )
        proc = _job_output(settings, make_repo(user / "src"), work, code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "hidden\n"
        assert (work / "out").read_text() == "ran"


@NEEDS_BWRAP
@pytest.mark.parametrize("clone", ["plain", "git-worktree"])
def test_a_workspace_reads_its_history_in_the_sandbox(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch, clone: str
) -> None:
    """Only the clone's own object store is bound back (as git names it, not as an
    alternates file does): a workspace still reads the history it borrows, from a clone in
    the hidden home and from one that is a ``git worktree`` of another repository (its
    objects in that repository's git dir)."""
    from orchestrator.gitops import worktrees

    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    settings = load_settings(home=user / ".orchestrator")
    repo = make_repo(user / "src" / "app")
    if clone == "git-worktree":
        _git(repo, "branch", "other")
        _git(repo, "checkout", "-q", "other")
        _git(repo, "worktree", "add", "-q", str(user / "src" / "app-main"), "main")
        repo = user / "src" / "app-main"
    made = worktrees.ensure_worktree(repo, "main", settings.home / "worktrees", "app", "APP-1")
    assert made.path is not None, made.error
    argv = ["git", "log", "--format=%s", "main"]
    box = sandbox.for_job(settings, kind="agent", repo_path=repo, argv=argv, writable=[made.path])
    assert box is not None
    proc = subprocess.run(
        box.wrap(argv, made.path), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "initial commit\n"
