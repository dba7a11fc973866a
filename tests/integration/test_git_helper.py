"""``gitops.git.git``, the one helper every git call goes through: what it hands git and
takes back, its timeout, and that it waits for git's exit without sleeping."""

from __future__ import annotations

import errno
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gitops import git as gitcmd


def alias(command: str) -> list[str]:
    """Args that make git run ``command`` in a shell, as the alias ``x``."""
    return ["-c", f"alias.x=!{command}", "x"]


def test_input_and_output_larger_than_a_pipe_go_both_ways_at_once(
    make_repo: Callable[..., Path],
) -> None:
    # tee echoes its input on stdout and stderr as it reads it: writing all of the input
    # before reading, or reading one pipe to its end before the other, would block for ever.
    repo = make_repo()
    text = "".join(f"line {i:07d} of the input\n" for i in range(40_000))  # ~1 MiB
    res = gitcmd.git(alias("tee /dev/stderr"), repo, input_text=text, timeout_s=60)
    assert res, res.stderr[-200:]
    assert res.stdout == text
    assert res.stderr == text


def test_without_input_git_reads_an_empty_stdin(make_repo: Callable[..., Path]) -> None:
    # Not the orchestrator's own stdin (a terminal when `orch` runs in one): git ends.
    res = gitcmd.git(alias("wc -c"), make_repo(), timeout_s=60)
    assert (bool(res), res.stdout.strip()) == (True, "0")


def test_a_git_that_does_not_end_times_out_with_what_it_printed(
    make_repo: Callable[..., Path],
) -> None:
    res = gitcmd.git(alias("echo partial; exec sleep 5"), make_repo(), timeout_s=0.5)
    assert res.timed_out
    assert not res
    assert res.stdout == "partial\n"
    assert res.stderr == "git timed out after 0.5s"


def test_a_process_that_closes_its_output_but_runs_on_is_killed_at_the_deadline(
    tmp_path: Path,
) -> None:
    argv = ["sh", "-c", "exec >&- 2>&-; exec sleep 5"]
    done = gitcmd._run(argv, tmp_path, {"PATH": "/usr/bin:/bin"}, None, 0.5)
    assert done.returncode is None  # timed out; _run killed and reaped it


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie waiting for whoever reaps orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    # SIGKILL is delivered at once, but the state in /proc follows a moment later.
    end = time.monotonic() + seconds
    while not _gone(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("output", ["kept", "closed"])
def test_a_timeout_kills_what_git_started_too(
    output: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    """Git starts programs of its own (a fetch's ``index-pack`` and transport helper, an
    alias's shell). A timeout that killed git alone left them running, orphaned: with its
    output kept, such a child also held the pipes open until the deadline. Git runs in a
    process group of its own, and the whole group is killed."""
    pid_file = tmp_path / "child.pid"
    redirect = "exec >/dev/null 2>&1; " if output == "closed" else ""
    res = gitcmd.git(
        alias(f"{redirect}sleep 60 & echo $! > {pid_file}; wait"), make_repo(), timeout_s=1.0
    )
    assert res.timed_out
    child = int(pid_file.read_text())
    try:
        assert _wait_gone(child), "the child git started outlived git's timeout"
    finally:
        if not _gone(child):  # the code before the fix left it running
            os.kill(child, signal.SIGKILL)


def test_an_exception_kills_what_git_started_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "child.pid"
    reads = [0]
    real = selectors.PollSelector.select

    class InterruptedOnceStarted(selectors.PollSelector):
        def select(self, timeout: float | None = None) -> list[Any]:
            reads[0] += 1
            if pid_file.exists() and pid_file.read_text().strip():
                raise KeyboardInterrupt
            return real(self, min(timeout or 0.05, 0.05))

    monkeypatch.setattr(selectors, "PollSelector", InterruptedOnceStarted)
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    with pytest.raises(KeyboardInterrupt):
        gitcmd._run(argv, tmp_path, {"PATH": "/usr/bin:/bin"}, None, 30)
    child = int(pid_file.read_text())
    try:
        assert _wait_gone(child), "the child outlived the interrupted call"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("raised", [KeyboardInterrupt, RuntimeError])
def test_an_exception_while_git_runs_kills_and_reaps_it(
    raised: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (or any exception) while the pipes are read: git is killed and reaped, as
    ``subprocess.run`` did. Popen's own ``__exit__`` only waits: for ever on an exception,
    0.25 s on a KeyboardInterrupt, and then leaves git running."""
    started: list[subprocess.Popen[bytes]] = []

    class Recorded(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    class Interrupted(selectors.PollSelector):
        def select(self, timeout: float | None = None) -> list[Any]:
            raise raised

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(selectors, "PollSelector", Interrupted)
    try:
        with pytest.raises(raised):
            gitcmd._run(["sh", "-c", "exec sleep 5"], tmp_path, {"PATH": "/usr/bin:/bin"}, None, 60)
        assert [p.returncode for p in started] == [-signal.SIGKILL]
    finally:
        for proc in started:  # the code before the fix left it running
            proc.kill()
            proc.wait()


def test_without_a_pidfd_the_exit_and_the_deadline_hold_all_the_same(
    make_repo: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel without pidfd_open (before 5.3, or a seccomp filter): subprocess's wait."""

    def unavailable(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open")

    monkeypatch.setattr(os, "pidfd_open", unavailable)
    repo = make_repo()
    assert gitcmd.git(["rev-parse", "--verify", "HEAD"], repo)
    failed = gitcmd.git(["rev-parse", "--verify", "--quiet", "nope"], repo)
    assert (failed.returncode, failed.timed_out) == (1, False)
    argv = ["sh", "-c", "exec >&- 2>&-; exec sleep 5"]
    assert gitcmd._run(argv, tmp_path, {"PATH": "/usr/bin:/bin"}, None, 0.5).returncode is None


def test_a_git_call_waits_for_its_exit_without_sleeping(
    make_repo: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """subprocess's wait with a timeout polls, sleeping 1, 2, 4 ... ms between looks; a
    git that has closed its output is often not yet reapable at the first look, and a
    quarter to half of all git calls slept so (measured: 48 to 106 sleeps in 200 calls of
    `rev-parse HEAD`). The helper waits on a pidfd: no sleep at all."""
    repo = make_repo()
    slept: list[float] = []
    real_sleep = time.sleep

    def counting(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(subprocess.time, "sleep", counting)  # type: ignore[attr-defined]
    results: list[Any] = [gitcmd.git(["rev-parse", "HEAD"], repo) for _ in range(100)]
    assert all(results)
    assert slept == []
