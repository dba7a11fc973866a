"""proc_group with real processes: nothing a run started may outlive it, and the log tells all.

Each adversarial helper under ``progs/`` announces every pid it creates in a pid file, so a
test can first prove the process it is about to see killed really existed (and really escaped
the process group), and then prove it is gone. No timing thresholds: only outcome fields and
"no marked process left".
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from orchestrator import sandbox
from orchestrator.masking import mask_env
from orchestrator.proc_group import (
    MARKER_CHAIN_ENV,
    MARKER_ENV,
    ExecuteRequest,
    Outcome,
    find_marked,
    group_alive,
    kill_marked,
    kill_process_group,
    run,
    spawn,
)
from orchestrator.self_deploy import ExitStatus, map_outcome

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process groups and /proc sweep: Linux only"
)

# This Python and its venv, bound back read-only where the sandbox hides them (a clone
# under /tmp, which every sandbox mounts empty), as a job's own command is.
PYTHON = tuple(sandbox.toolchain_paths([sys.executable]))
PROGS = Path(__file__).parent / "progs"
# The helpers' runs: a Watcher's first look waits for the helper to announce its pids, and
# the run's timeout is only checked between looks, so a helper that starts slowly is still
# seen. The limit need only let that first look (~50 ms in) come before it, also on a
# loaded machine.
TIMEOUT_S = 0.5
# For a command with nothing to get ready (it only sleeps): any limit ends it the same way.
HANG_TIMEOUT_S = 0.2
GRACE_S = 0.5
READY_WAIT_S = 20.0  # generous: only bounds how long a broken test waits, never asserted


# --------------------------------------------------------------------------- helpers


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _pids(pidfile: Path) -> dict[str, int]:
    """role -> pid, from the lines the helper programs append."""
    if not pidfile.exists():
        return {}
    out: dict[str, int] = {}
    for line in pidfile.read_text().splitlines():
        pid, role = line.split()
        out[role] = int(pid)
    return out


def _wait_for(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


class Watcher:
    """A ``poll`` hook that waits, on its first call, until the helper announced ``count``
    pids, then records what it saw: the marked pids and each announced pid's process group.
    Never stops the run itself unless ``stop_with`` is given."""

    def __init__(self, pidfile: Path, marker: str, count: int, stop_with: str | None = None):
        self.pidfile, self.marker, self.count, self.stop_with = pidfile, marker, count, stop_with
        self.marked: list[int] = []
        self.roles: dict[str, int] = {}
        self.pgrps: dict[str, int] = {}

    def __call__(self) -> str | None:
        if not self.marked:
            # proc_group checks the timeout between calls of its hook: while this waits, the
            # run goes on, so the helper is seen before any timeout however slowly it starts.
            _wait_for(lambda: len(_pids(self.pidfile)) >= self.count, "the helper's pids")
            self.roles = _pids(self.pidfile)
            self.marked = find_marked(self.marker)
            for role, pid in self.roles.items():
                st = _stat(pid)
                if st is not None:
                    self.pgrps[role] = st[2]
        return self.stop_with if self.marked else None

    def assert_saw_all(self) -> None:
        assert self.roles, "the helper never became ready before the run ended"
        assert set(self.roles.values()) <= set(self.marked), (self.roles, self.marked)


@pytest.fixture
def marker() -> Iterator[str]:
    """A fresh marker; whatever carries it is killed at teardown, even when the test failed."""
    value = uuid.uuid4().hex
    yield value
    kill_marked(value)


def _request(tmp_path: Path, argv: Sequence[str], marker: str, **kw: object) -> ExecuteRequest:
    params: dict[str, object] = {
        "argv": argv,
        "cwd": tmp_path,
        "env": _env(),
        "log_path": tmp_path / "logs" / "run.log",
        "marker": marker,
    }
    params.update(kw)
    return ExecuteRequest(**params)  # type: ignore[arg-type]


def _prog(name: str, *args: str) -> list[str]:
    return [sys.executable, str(PROGS / name), *args]


def _assert_timeout_cleaned(
    outcome: Outcome, marker: str, pids: dict[str, int], timeout_s: float = TIMEOUT_S
) -> None:
    assert outcome.timed_out
    assert outcome.signal_sent_by_us
    assert not outcome.cancelled
    assert not outcome.termination_uncertain
    assert outcome.stop_reason is not None
    assert outcome.stop_reason.startswith("timeout")
    assert not outcome
    assert find_marked(marker) == []
    for role, pid in pids.items():
        assert not _alive(pid), f"{role} {pid} survived"
    for kind in ("pytest", "command"):
        mapping = map_outcome(outcome, kind=kind)
        assert mapping.status is ExitStatus.TOOL_ERROR
        assert mapping.tool_error == "timeout"
    log = outcome.log_path.read_text()
    assert f"stopping: timeout after {timeout_s:g}s" in log
    assert "timed_out=True" in log


# --------------------------------------------------------------------------- timeouts


def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)
    req = _request(
        tmp_path,
        _prog("ignore_term.py", str(pidfile)),
        marker,
        timeout_s=TIMEOUT_S,
        grace_s=0.2,  # waited in full (both ignore TERM): any grace shows the SIGKILL after it
    )
    outcome = run(req, poll=watch)

    watch.assert_saw_all()
    # Both ignore TERM: the leader can only have died of our SIGKILL.
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_code is None
    assert outcome.swept == 0  # nothing escaped: the group kill did it all
    _assert_timeout_cleaned(outcome, marker, watch.roles)


def test_setsid_grandchild_is_swept(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)
    req = _request(
        tmp_path,
        _prog("setsid_grandchild.py", str(pidfile)),
        marker,
        timeout_s=TIMEOUT_S,
        grace_s=GRACE_S,
    )
    outcome = run(req, poll=watch)

    watch.assert_saw_all()
    # It really left the group: a group kill alone would have missed it.
    assert watch.pgrps["escaped"] != outcome.pgid
    assert watch.pgrps["parent"] == outcome.pgid
    assert outcome.swept >= 1
    _assert_timeout_cleaned(outcome, marker, watch.roles)
    assert "swept 1 escaped process" in outcome.log_path.read_text()


def test_double_forked_daemon_is_swept(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)
    req = _request(
        tmp_path,
        _prog("double_fork.py", str(pidfile)),
        marker,
        timeout_s=TIMEOUT_S,
        grace_s=GRACE_S,
    )
    outcome = run(req, poll=watch)

    watch.assert_saw_all()
    assert watch.pgrps["daemon"] != outcome.pgid
    assert outcome.swept >= 1
    _assert_timeout_cleaned(outcome, marker, watch.roles)


def test_hanging_suite_times_out_as_tool_error_never_fail(tmp_path: Path, marker: str) -> None:
    started: list[tuple[int, int]] = []
    req = _request(
        tmp_path,
        [sys.executable, "-c", "import time; time.sleep(60)"],
        marker,
        timeout_s=HANG_TIMEOUT_S,
        grace_s=GRACE_S,
    )
    outcome = run(req, on_start=lambda pid, pgid: started.append((pid, pgid)))

    assert started == [(outcome.pid, outcome.pgid)]
    assert outcome.pid == outcome.pgid  # its own group, led by itself
    assert outcome.signal == signal.SIGTERM  # python's default TERM handling: it obeyed
    _assert_timeout_cleaned(outcome, marker, {}, HANG_TIMEOUT_S)
    assert outcome.kill_latency_s is not None


# --------------------------------------------------------------------------- cancel, poll


def test_cancel_event_kills_the_tree(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    cancel = threading.Event()

    def cancel_when_ready() -> None:
        _wait_for(lambda: len(_pids(pidfile)) >= 2, "setsid_grandchild to start")
        cancel.set()

    canceller = threading.Thread(target=cancel_when_ready, daemon=True)
    canceller.start()
    req = _request(
        tmp_path,
        _prog("setsid_grandchild.py", str(pidfile)),
        marker,
        timeout_s=30.0,  # a safety net only: the test fails if this, not cancel, ends it
        grace_s=GRACE_S,
    )
    outcome = run(req, cancel=cancel)
    canceller.join()

    pids = _pids(pidfile)
    assert len(pids) == 2
    assert outcome.cancelled
    assert not outcome.timed_out
    assert outcome.signal_sent_by_us
    assert outcome.stop_reason == "cancelled"
    assert find_marked(marker) == []
    assert not any(_alive(pid) for pid in pids.values())
    mapping = map_outcome(outcome, kind="pytest")
    assert mapping.status is ExitStatus.TOOL_ERROR
    assert mapping.tool_error == "crashed"
    assert any("cancel" in r for r in mapping.reasons)


def test_poll_stop_reason_is_logged_and_treated_like_cancel(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    reason = "stalled: no output for 300s"
    watch = Watcher(pidfile, marker, count=2, stop_with=reason)
    req = _request(
        tmp_path, _prog("double_fork.py", str(pidfile)), marker, timeout_s=30.0, grace_s=GRACE_S
    )
    outcome = run(req, poll=watch)

    watch.assert_saw_all()
    assert outcome.cancelled
    assert not outcome.timed_out
    assert outcome.stop_reason == reason
    assert find_marked(marker) == []
    assert not any(_alive(pid) for pid in watch.roles.values())
    assert f"stopping: {reason}" in outcome.log_path.read_text()
    mapping = map_outcome(outcome)
    assert mapping.status is ExitStatus.TOOL_ERROR
    assert any(reason in r for r in mapping.reasons)


def test_hook_that_raises_still_kills_the_tree(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)

    def broken_hook() -> str | None:
        if watch() is None and watch.marked:
            raise RuntimeError("hook bug")
        return None

    req = _request(
        tmp_path, _prog("setsid_grandchild.py", str(pidfile)), marker, timeout_s=30.0, grace_s=0.2
    )
    with pytest.raises(RuntimeError, match="hook bug"):
        run(req, poll=broken_hook)

    watch.assert_saw_all()
    assert find_marked(marker) == []
    assert not any(_alive(pid) for pid in watch.roles.values())


INNER_ORCHESTRATOR = """
import sys
from pathlib import Path
from orchestrator.proc_group import ExecuteRequest, run
prog, pidfile, log = sys.argv[1:4]
# A fresh env, as a runner would build it: the inherited marker is not passed on by the caller.
req = ExecuteRequest([sys.executable, prog, pidfile], Path(log).parent, {}, Path(log), timeout_s=60)
run(req)
"""


def test_nested_run_is_swept_by_the_outer_run(tmp_path: Path, marker: str) -> None:
    """Self-hosting: an orchestrator killed by an outer run before its own clean-up must not
    leave its children behind. They carry an inner marker, and the outer one in the chain."""
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)
    argv = [
        sys.executable,
        "-c",
        INNER_ORCHESTRATOR,
        str(PROGS / "setsid_grandchild.py"),
        str(pidfile),
        str(tmp_path / "inner" / "inner.log"),
    ]
    outcome = run(
        _request(tmp_path, argv, marker, timeout_s=TIMEOUT_S, grace_s=GRACE_S), poll=watch
    )

    watch.assert_saw_all()  # found by the OUTER marker...
    inner_log = (tmp_path / "inner" / "inner.log").read_text()
    assert f"{MARKER_ENV}={marker}" not in inner_log  # ...though their own marker differs
    chain_line = next(
        ln for ln in inner_log.splitlines() if ln.startswith(f"  {MARKER_CHAIN_ENV}=")
    )
    assert marker in chain_line.split("=", 1)[1].split(",")[:-1]  # an enclosing run's marker
    # The inner orchestrator died of TERM without cleaning up: its children, in a session of
    # their own (not the outer group), were left to the outer sweep.
    assert outcome.swept >= 2
    _assert_timeout_cleaned(outcome, marker, watch.roles)


def test_marker_chain_lists_enclosing_runs(tmp_path: Path, marker: str) -> None:
    code = f"import os; print('chain=' + os.environ[{MARKER_CHAIN_ENV!r}])"
    env = _env(**{MARKER_ENV: "outer1", MARKER_CHAIN_ENV: "outer0,outer1"})
    outcome = run(_request(tmp_path, [sys.executable, "-c", code], marker, env=env))

    assert outcome.exit_code == 0
    text = outcome.log_path.read_text()
    # Ends with these (this test itself may run under an orchestrator that adds its own).
    assert f",outer0,outer1,{marker}\n" in text or f"chain=outer0,outer1,{marker}\n" in text
    assert f"  {MARKER_ENV}={marker}\n" in text  # the run's own marker replaces the outer one


# --------------------------------------------------------------------------- normal exits


def test_daemon_left_behind_by_a_finished_run_is_swept(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    req = _request(tmp_path, _prog("double_fork.py", str(pidfile), "--exit"), marker)
    outcome = run(req)

    daemon = _pids(pidfile)["daemon"]  # it announced itself, so it existed
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert not outcome.signal_sent_by_us
    assert outcome.swept == 1
    assert not _alive(daemon)
    assert find_marked(marker) == []
    assert map_outcome(outcome).status is ExitStatus.PASS
    assert outcome  # a clean exit and a clean sweep


def test_sweep_on_exit_false_leaves_the_daemon(tmp_path: Path, marker: str) -> None:
    pidfile = tmp_path / "pids"
    req = _request(tmp_path, _prog("double_fork.py", str(pidfile), "--exit"), marker)
    outcome = run(req, sweep_on_exit=False)

    daemon = _pids(pidfile)["daemon"]
    assert outcome.exit_code == 0
    assert outcome.swept == 0
    # The counterpart of the test above: without the sweep, the daemon does survive.
    assert _alive(daemon)
    assert find_marked(marker) == [daemon]
    assert kill_marked(marker) == 1
    assert not _alive(daemon)
    assert find_marked(marker) == []


NEEDS_BWRAP = pytest.mark.skipif(
    not sandbox.probe().ok and not os.environ.get("ORCH_TEST_REQUIRE_SANDBOX"),
    reason=f"bubblewrap cannot run here: {sandbox.probe().detail}",
)


def _box(tmp_path: Path) -> sandbox.Sandbox:
    found = sandbox.probe()
    assert found.bwrap is not None, found.detail
    return sandbox.Sandbox(
        writable=(tmp_path,), readonly=(*PYTHON, PROGS), userns=found.userns, bwrap=found.bwrap
    )


@NEEDS_BWRAP
def test_a_sandboxed_run_leaves_no_daemon_and_needs_no_proc_sweep(
    tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep still works when called: only its calls are counted.
    scans: list[str] = []
    real_sweep = spawn.sweep

    def counted(mark: str, timeout_s: float) -> tuple[list[int], list[int]]:
        scans.append(mark)
        return real_sweep(mark, timeout_s)

    monkeypatch.setattr(spawn, "sweep", counted)
    pidfile = tmp_path / "pids"
    req = _request(tmp_path, _prog("double_fork.py", str(pidfile), "--exit"), marker)
    outcome = run(dataclasses.replace(req, sandbox=_box(tmp_path)))

    assert "daemon" in _pids(pidfile)  # it existed (a pid of the sandbox's namespace)
    assert outcome.exit_code == 0
    assert not outcome.termination_uncertain
    # The namespace took the daemon with it: nothing carries the marker, and no /proc
    # sweep was needed to know it (every run before this one swept after each exit).
    assert find_marked(marker) == []
    assert scans == []
    assert outcome.swept == 0


@NEEDS_BWRAP
def test_a_run_plans_its_sandbox_once_and_its_log_shows_what_ran(
    tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox's paths are looked at once per run (they were twice: for the log header
    # and again for the spawn), and the header's line is the argv bubblewrap was given.
    found = sandbox.probe()
    assert found.bwrap is not None, found.detail
    seen = tmp_path / "bwrap-argv.json"
    wrapper = tmp_path / "bin" / "bwrap"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"os.execv({found.bwrap!r}, [{found.bwrap!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    work, hidden = tmp_path / "work", tmp_path / "hidden"
    work.mkdir()
    hidden.mkdir()
    box = sandbox.Sandbox(
        writable=(work,),
        readonly=PYTHON,
        hidden=(hidden,),
        userns=found.userns,
        bwrap=str(wrapper),
        json_status=found.json_status,
    )
    looked: list[str] = []
    real_stat = os.stat

    def stat(path: object, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) in (str(work), str(hidden)):  # type: ignore[call-overload]
            looked.append(os.fspath(path))  # type: ignore[call-overload]
        return real_stat(path, *args, **kw)  # type: ignore[arg-type, call-overload]

    monkeypatch.setattr(os, "stat", stat)
    req = _request(tmp_path, [sys.executable, "-c", "pass"], marker, log_path=tmp_path / "run.log")
    outcome = run(dataclasses.replace(req, sandbox=box))
    monkeypatch.undo()

    assert outcome.exit_code == 0, (tmp_path / "run.log").read_text()
    assert sorted(looked) == sorted([str(work), str(hidden)])
    given = json.loads(seen.read_text())
    status = given.index("--json-status-fd" if found.json_status else "--info-fd")
    shown = [
        json.loads(line.removeprefix("sandbox: "))
        for line in (tmp_path / "run.log").read_text().splitlines()
        if line.startswith("sandbox: ")
    ]
    ran = [str(wrapper), *given[:status], *given[status + 2 : given.index("--")]]
    assert shown == [ran]


def _status(text: bytes) -> spawn._BwrapStatus:
    read, write = os.pipe()
    try:
        os.write(write, text)
        os.close(write)
        return spawn._read_status(read)
    finally:
        os.close(read)


def test_the_status_fd_says_whether_the_command_started() -> None:
    # --json-status-fd: JSON lines; the exit-code line only once the command was started.
    started = b'{ "child-pid": 12, "pid-namespace": 4 }\n{ "exit-code": 1 }\n'
    assert _status(started) == spawn._BwrapStatus(12, 1)
    assert _status(b'{ "child-pid": 12, "pid-namespace": 4 }\n') == spawn._BwrapStatus(12, None)
    # --info-fd: one object over several lines, never an exit code.
    assert _status(b'{\n    "child-pid": 7,\n    "mnt-namespace": 3\n}\n').child_pid == 7
    # Not bubblewrap's word: says nothing.
    assert _status(b"") == spawn._BwrapStatus()
    assert _status(b'{"child-pid": "x", "exit-code": true}\n[1]\nnot json') == spawn._BwrapStatus()


def test_namespace_gone_reads_the_init_bubblewrap_names(tmp_path: Path) -> None:
    def told(text: bytes) -> bool:
        return spawn._namespace_gone(_status(text).child_pid, 0.05)

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        exited_pid = exited.pid
        while _stat(exited_pid) is not None and _stat(exited_pid)[0] != "Z":  # type: ignore[index]
            time.sleep(0.01)
        # An init that runs on: the namespace may still hold processes, look the long way.
        assert not told(b'{"child-pid": %d}' % live.pid)
        # An init that has exited (a zombie here): its namespace went before it.
        assert told(b'{"child-pid": %d}' % exited_pid)
        # Nothing to read, or not bubblewrap's word: the long way.
        assert not told(b"")
        assert not told(b'{"child-pid": "x"}')
        assert not told(b'{"child-pid": 1}')
    finally:
        live.kill()
        live.wait()
        exited.wait()


def test_flood_of_output_completes_into_the_log(tmp_path: Path, marker: str) -> None:
    size = 50 * 1024 * 1024
    req = _request(tmp_path, _prog("flood.py", str(size)), marker, timeout_s=60.0)
    outcome = run(req)

    assert outcome.exit_code == 0
    assert not outcome.timed_out
    log = outcome.log_path
    assert log.stat().st_size > size
    with log.open("rb") as f:
        f.seek(-1000, os.SEEK_END)
        tail = f.read()
    assert b"flood: done" in tail
    assert b"[orchestrator] end: exit_code=0" in tail


# --------------------------------------------------------------------------- not started


@pytest.mark.parametrize(
    ("argv", "cwd_name", "error_part"),
    [
        (["/nonexistent/bin/no-such-tool"], None, "no-such-tool"),
        (["no-such-tool-on-path-xyz"], None, "no-such-tool-on-path-xyz"),
        ([sys.executable, "-c", "pass"], "missing-dir", "cwd is not a directory"),
        ([], None, "empty argv"),
        ("python -c pass", None, "not a string"),
    ],
)
def test_not_started_is_a_value(
    tmp_path: Path, marker: str, argv: list[str] | str, cwd_name: str | None, error_part: str
) -> None:
    cwd = tmp_path / cwd_name if cwd_name else tmp_path
    outcome = run(_request(tmp_path, argv, marker, cwd=cwd))

    assert outcome.start_error is not None
    assert error_part in outcome.start_error
    assert outcome.exit_code is None
    assert outcome.pid is None
    assert not outcome
    mapping = map_outcome(outcome, kind="pytest")
    assert mapping.status is ExitStatus.TOOL_ERROR
    assert mapping.tool_error == "not-started"
    assert "not started:" in outcome.log_path.read_text()


# --------------------------------------------------------------------------- the log


def test_log_header_masks_secrets_and_retries_append(tmp_path: Path, marker: str) -> None:
    env = _env(
        API_TOKEN="tok-value-1",
        DATABASE_URL="postgresql://u:pw-value-2@h/db",
        MY_CUSTOM="custom-value-3",
        PLAIN="visible-value",
    )
    argv = [sys.executable, "-c", "print('hello from child')"]
    req = _request(tmp_path, argv, marker, env=env, secret_names=frozenset({"MY_CUSTOM"}))
    first = run(req)
    second = run(req)

    assert first.exit_code == 0
    assert second.exit_code == 0
    text = req.log_path.read_text()
    for secret in ("tok-value-1", "pw-value-2", "custom-value-3"):
        assert secret not in text
    assert "  API_TOKEN=****\n" in text
    assert "  DATABASE_URL=****\n" in text
    assert "  MY_CUSTOM=****\n" in text
    assert "  PLAIN=visible-value\n" in text
    assert f"  {MARKER_ENV}={marker}\n" in text
    assert f"cwd: {tmp_path}\n" in text
    assert '"-c", "print(\'hello from child\')"]' in text
    assert text.count("===== orchestrator run ") == 2  # appended, not overwritten
    assert text.count("hello from child\n") == 2
    assert text.count("[orchestrator] end: exit_code=0") == 2
    header_env = text.split("env:\n", 1)[1].split("-----", 1)[0].splitlines()
    assert header_env == sorted(header_env)


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("API_TOKEN", True),
        ("github_token", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("SSH_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("DATABASE_URL", True),
        ("ORCH_DATABASE_URL", True),
        ("EXTRA_ONE", True),
        ("PATH", False),
        ("HOME", False),
        ("DATABASE_URL_HINT", False),
    ],
)
def test_mask_env(name: str, masked: bool) -> None:
    out = mask_env({name: "value"}, ["EXTRA_ONE"])
    assert out == {name: "****" if masked else "value"}


# --------------------------------------------------------------------------- fallback


def test_fallback_without_tree_kill_times_out_but_is_uncertain(tmp_path: Path, marker: str) -> None:
    req = _request(
        tmp_path,
        [sys.executable, "-c", "import time; time.sleep(60)"],
        marker,
        timeout_s=HANG_TIMEOUT_S,
        grace_s=GRACE_S,
    )
    outcome = run(req, tree_kill=False)

    assert outcome.timed_out
    assert outcome.pgid is None
    assert outcome.termination_uncertain  # it cannot know about descendants
    assert outcome.swept == 0
    assert map_outcome(outcome, kind="pytest").tool_error == "timeout"
    assert "timed_out=True" in outcome.log_path.read_text()
    assert find_marked(marker) == []


def test_fallback_leaks_an_escaped_grandchild(tmp_path: Path, marker: str) -> None:
    """What the tree kill is for: the plain child kill misses the setsid'd grandchild."""
    pidfile = tmp_path / "pids"
    watch = Watcher(pidfile, marker, count=2)
    req = _request(
        tmp_path,
        _prog("setsid_grandchild.py", str(pidfile)),
        marker,
        timeout_s=TIMEOUT_S,
        grace_s=GRACE_S,
    )
    outcome = run(req, poll=watch, tree_kill=False)

    watch.assert_saw_all()
    assert outcome.timed_out
    assert outcome.termination_uncertain
    escaped = watch.roles["escaped"]
    assert _alive(escaped)
    assert find_marked(marker) == [escaped]
    assert kill_marked(marker) == 1
    assert not _alive(escaped)


# --------------------------------------------------------------------------- group helpers


def test_kill_process_group_sees_through_zombies(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    proc = subprocess.Popen(
        _prog("ignore_term.py", str(pidfile)), start_new_session=True, env=_env()
    )
    try:
        _wait_for(lambda: len(_pids(pidfile)) >= 2, "ignore_term to start")
        assert group_alive(proc.pid)
        # The leader is not reaped here, so it stays a zombie: the group must still count
        # as gone once nothing in it can run.
        assert kill_process_group(proc.pid, grace_s=0.2)
        assert not group_alive(proc.pid)
        assert not any(_alive(pid) for pid in _pids(pidfile).values())
    finally:
        proc.kill()
        proc.wait()


def test_group_helpers_refuse_our_own_group() -> None:
    with pytest.raises(ValueError, match="refusing"):
        group_alive(os.getpgrp())
    with pytest.raises(ValueError, match="refusing"):
        kill_process_group(0, grace_s=0)


def test_find_marked_with_unknown_or_empty_marker_is_empty() -> None:
    assert find_marked(uuid.uuid4().hex) == []
    assert find_marked("") == []
