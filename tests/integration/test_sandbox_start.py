"""A sandbox that failed to start is an infrastructure fault, never a red suite.

bubblewrap exits 1 with ``bwrap: ...`` on stderr when its own setup fails, before the
command ever ran: read as the command's exit, that was "pytest exit code 1: tests failed"
and a rollback to development. It is told by bubblewrap's ``--json-status-fd`` (the
``exit-code`` it writes only once the command was started), never by the log's text, which
the command writes too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import proc_group, sandbox
from orchestrator.agents.common import tool_error_of
from orchestrator.config import load_settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.runners.suite import SuiteRequest, SuiteSandbox, run_suite
from orchestrator.self_deploy import ExitStatus, map_outcome

# This Python and its venv, bound back read-only where the sandbox hides them (a clone
# under /tmp, which every sandbox mounts empty), as a job's own command is.
PYTHON = tuple(sandbox.toolchain_paths([sys.executable]))

NEEDS_BWRAP = pytest.mark.skipif(
    not sandbox.probe().ok and not os.environ.get("ORCH_TEST_REQUIRE_SANDBOX"),
    reason=f"bubblewrap cannot run here: {sandbox.probe().detail}",
)
HERE = "tests/integration/test_sandbox_start.py"
# The attack on this module's defence, for docs/security.md (test_security_doc.py).
DEFENDED = [
    {
        "attack": "a red suite (or staging command) that prints bubblewrap's own words "
        "(`bwrap: Can't mkdir ...`) and exits 1, to pass for a sandbox that failed to start: "
        "an infrastructure deferral instead of a rollback",
        "before": "no start failure was told apart: every exit 1 was the command's",
        "now": "a start failure is told by bubblewrap's `--json-status-fd` (no `exit-code` "
        "of the command), which the command cannot write to, never by the log: still a red "
        "suite, rolled back",
        "test": HERE,
    },
]
# What an attacker's command prints before it exits 1: bubblewrap's own words.
FAKE = "bwrap: Can't mkdir /srv/backup.bundle: Not a directory"


@pytest.fixture
def bundle() -> Iterator[Path]:
    """A git bundle outside /tmp (the sandbox's /tmp is a fresh one, where any path is
    free): a remote that is a file, which the sandbox hides with an empty file system
    and bubblewrap then cannot mount (``Can't mkdir ...: Not a directory``)."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="orch-sbx-", dir="/var/tmp"))
    except OSError as exc:
        pytest.skip(f"no folder outside /tmp for the bundle: {exc}")
    path = folder / "backup.bundle"
    path.write_bytes(b"# v2 git bundle\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _clone(tmp_path: Path, remote: Path | None) -> Path:
    clone = tmp_path / "clone"
    clone.mkdir()
    _git(clone, "init", "-q")
    if remote is not None:
        # `git remote add backup /srv/backup.bundle`: git fetches from a bundle file.
        _git(clone, "remote", "add", "backup", str(remote))
    return clone


def _request(tmp_path: Path, argv: list[str], clone: Path, **kw: object) -> SuiteRequest:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    (wt / "test_ok.py").write_text("def test_ok():\n    assert 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    fields: dict[str, object] = {
        "argv": argv,
        "worktree": wt,
        "timeout_s": 120.0,
        "log_path": tmp_path / "runs" / "suite.log",
        "evidence_dir": tmp_path / "runs" / "suite.out",
        "env": env,
        "settings": load_settings(home=tmp_path / "home", kill_grace_s=0.5),
        "sandbox": SuiteSandbox(repo_path=clone),
        **kw,
    }
    return SuiteRequest(**fields)  # type: ignore[arg-type]


# Without the test extras' plugins (hypothesis, schemathesis, anyio, randomly), whose imports
# cost most of a run; the suites here need none.
PYTEST = [sys.executable, "-m", "pytest", "-q", "--disable-plugin-autoload"]


@NEEDS_BWRAP
def test_a_sandbox_that_fails_to_start_is_not_a_red_suite(tmp_path: Path, bundle: Path) -> None:
    run = run_suite(_request(tmp_path, PYTEST, _clone(tmp_path, bundle)))
    assert not run
    # Not "pytest exit code 1: tests failed": a tool error the engine defers, bounded.
    assert run.kind is OutcomeKind.NOT_STARTED
    assert run.mapping.status is ExitStatus.TOOL_ERROR
    assert run.process.exit_code is None
    said = [r for r in run.reasons if "sandbox failed to start: bwrap: " in r]
    assert said, run.reasons
    assert f"Can't mkdir {bundle}: Not a directory" in said[0]
    assert not any("tests failed" in r for r in run.reasons)


@NEEDS_BWRAP
def test_a_stage_command_whose_sandbox_fails_is_a_tool_error(tmp_path: Path, bundle: Path) -> None:
    # Staging's and deploy's shape: a command judged by its exit code alone.
    argv = [sys.executable, "-c", "pass"]
    run = run_suite(_request(tmp_path, argv, _clone(tmp_path, bundle), pytest=False))
    assert run.kind is OutcomeKind.NOT_STARTED
    assert any(r.startswith("not started: sandbox failed to start: bwrap: ") for r in run.reasons)


@NEEDS_BWRAP
def test_an_agent_whose_sandbox_fails_did_not_start(tmp_path: Path, bundle: Path) -> None:
    box = sandbox.Sandbox(writable=(tmp_path,), hidden=(bundle,))
    request = proc_group.ExecuteRequest(
        argv=[sys.executable, "-c", "pass"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "agent.log",
        grace_s=0.5,
        sandbox=box,
    )
    outcome = proc_group.run(request)
    assert outcome.start_error is not None
    assert outcome.start_error.startswith("sandbox failed to start: bwrap: Can't mkdir")
    assert outcome.exit_code is None
    assert map_outcome(outcome).outcome is OutcomeKind.NOT_STARTED
    told = tool_error_of(outcome, "claude")
    assert told is not None
    assert told.outcome is OutcomeKind.NOT_STARTED
    assert "not started: sandbox failed to start" in " ".join(told.reasons)
    assert "sandbox failed to start" in request.log_path.read_text()


@NEEDS_BWRAP
@pytest.mark.parametrize("pytest_run", [True, False], ids=["test-runner", "staging"])
def test_a_command_that_fakes_a_bwrap_error_is_still_red(tmp_path: Path, pytest_run: bool) -> None:
    # The attacker: its suite is red, and it prints bubblewrap's words and exits 1, hoping
    # for an infrastructure deferral instead of a rollback.
    cheat = f"import sys, os\nsys.stderr.write({FAKE!r} + '\\n')\nsys.stderr.flush()\nos._exit(1)\n"
    # In a suite: once pytest is done (its output capture is over), on its way out.
    conftest = "import atexit\n\n\ndef _cheat():\n" + "".join(
        f"    {line}\n" for line in cheat.splitlines()
    )
    conftest += "\n\natexit.register(_cheat)\n"
    clone = _clone(tmp_path, None)
    if pytest_run:
        req = _request(tmp_path, PYTEST, clone)
        (req.worktree / "conftest.py").write_text(conftest)
        (req.worktree / "test_bad.py").write_text("def test_bad():\n    assert 1 == 2\n")
    else:
        req = _request(tmp_path, [sys.executable, "-c", cheat], clone, pytest=False)
    run = run_suite(req)
    assert FAKE in req.log_path.read_text()  # it did print bubblewrap's words
    assert not run
    assert run.kind is OutcomeKind.COMPLETED  # a verdict on the code: rolled back
    assert run.mapping.status is ExitStatus.FAIL
    assert run.process.exit_code == 1
    assert run.process.start_error is None
    assert not any("sandbox failed to start" in r for r in run.reasons)


@NEEDS_BWRAP
def test_a_bubblewrap_without_the_status_fd_runs_as_before(tmp_path: Path) -> None:
    # An old release: the real bubblewrap behind a wrapper that refuses --json-status-fd.
    real = sandbox.probe().bwrap
    assert real is not None
    old = tmp_path / "bin" / "bwrap"
    old.parent.mkdir()
    old.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "if '--json-status-fd' in sys.argv:\n"
        "    sys.stderr.write('bwrap: Unknown option --json-status-fd\\n')\n"
        "    sys.exit(1)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    old.chmod(0o755)
    found = sandbox.probe.__wrapped__(str(old))
    assert found.ok
    assert not found.json_status
    box = sandbox.Sandbox(
        writable=(tmp_path,), readonly=PYTHON, bwrap=str(old), json_status=found.json_status
    )
    argv = box.wrap(["true"], tmp_path, info_fd=9)
    assert "--info-fd" in argv
    assert "--json-status-fd" not in argv
    # Its runs are read as before: an exit is the command's, and the namespace is found.
    request = proc_group.ExecuteRequest(
        argv=[sys.executable, "-c", "raise SystemExit(3)"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "old.log",
        grace_s=0.5,
        sandbox=box,
    )
    outcome = proc_group.run(request)
    assert (outcome.exit_code, outcome.start_error) == (3, None)
    assert sandbox.probe().json_status  # this machine's bubblewrap has it
