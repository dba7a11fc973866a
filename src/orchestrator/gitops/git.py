"""The one helper every git call goes through: argv only, a timeout on every call.

Also the plain pieces every git caller shares: the pathspec of a task's change (by-products
left out) and how a reason names paths.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from orchestrator.masking import without_secrets

DEFAULT_GIT_TIMEOUT_S = 60.0

# Git must never wait for a person: no editor, no pager, no credential prompt.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    "GIT_ASKPASS": "true",
}


# Every git call runs with these, whatever a repository's config says (``-c`` outranks every
# config file, and git hands it on to the git processes it starts, such as upload-pack):
# no hook, no fsmonitor command, no signing or signature checking (so no gpg.program), no
# `ext::` transport, and the `file` transport only where a person asked for it (never for
# a submodule). A task's code can plant any of these wherever it can write; the sandbox
# keeps it away from every config the orchestrator's git calls read, and this keeps git
# from running what got there anyway.
SAFE_SETTINGS = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "log.showSignature=false",
    "merge.verifySignatures=false",
    "protocol.ext.allow=never",
    "protocol.file.allow=user",
)
SAFE_CONFIG = tuple(arg for setting in SAFE_SETTINGS for arg in ("-c", setting))
# The programs a fetch and a push start on the other side are git's own, never a
# `remote.<name>.uploadpack` / `receivepack` from a config (on a local remote they would
# run here, as the orchestrator).
UPLOAD_PACK = "--upload-pack=git-upload-pack"
RECEIVE_PACK = "--receive-pack=git-receive-pack"


def git_environment() -> dict[str, str]:
    """Our environment without the orchestrator's settings and secrets (``masking``'s rule).

    Git runs hooks (post-checkout on `worktree add`, say) from the managed repository;
    they must not see the API token or the database URL.
    """
    # Every git call asks, and filtering ~40 names costs ~0.1 ms: the answer is kept with
    # the environment it was made from (os.environ's own bytes, compared whole).
    global _ENV_SEEN
    raw = getattr(os.environ, "_data", None)
    key = tuple(raw.items()) if isinstance(raw, dict) else None
    kept = _ENV_SEEN
    if key is not None and kept is not None and kept[0] == key:
        return dict(kept[1])
    made = {k: v for k, v in without_secrets(os.environ).items() if not k.startswith("ORCH_")}
    if key is not None:
        _ENV_SEEN = (key, made)
    return dict(made)


# (os.environ as bytes, git_environment() made from it)
_ENV_SEEN: tuple[tuple[object, ...], dict[str, str]] | None = None


@dataclass(frozen=True)
class GitResult:
    """What a git call did. ``timed_out`` is an infra condition, not an error of the code."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def __bool__(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def git(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout_s: float = DEFAULT_GIT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    errors: str = "strict",
) -> GitResult:
    """Run ``git <args>`` in ``cwd`` with a timeout; never raises for a failing git.

    ``errors``: how bytes of the output that are not UTF-8 are decoded: ``strict`` (a
    caller that parses the output and has no name in it), ``surrogateescape`` for names
    that are matched or go back to the file system (as ``os.fsdecode`` reads a name),
    ``replace`` for output read only to be shown. Git prints a path as its bytes (always
    with ``-z``; without it, when ``core.quotePath`` is false), and a task's files are
    named by the agent. Output is read as ``text=True`` reads it (a ``\\r`` is a line
    break), but for ``surrogateescape``: its names are exact, a ``\\r`` in one included.
    Git's stderr is only ever shown, and names files in its warnings as their bytes: it
    is always decoded with ``replace``."""

    argv = ("git", *SAFE_CONFIG, *args)
    full_env = {**git_environment(), **_GIT_ENV, **(env or {})}
    data = None if input_text is None else input_text.encode()
    try:
        done = _run(argv, cwd, full_env, data, timeout_s)
    except OSError as exc:
        return GitResult(argv, -1, "", f"git could not start: {exc}")
    if done.returncode is None:
        out = done.stdout.decode(errors="replace")
        return GitResult(argv, -1, out, f"git timed out after {timeout_s:g}s", timed_out=True)
    return GitResult(
        argv, done.returncode, _text(done.stdout, errors), _text(done.stderr, "replace")
    )


@dataclass(frozen=True)
class _Done:
    returncode: int | None  # None: timed out (and killed)
    stdout: bytes
    stderr: bytes


def _run(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], data: bytes | None, timeout_s: float
) -> _Done:
    """``subprocess.run(argv, input=data, capture_output=True, timeout=timeout_s)``, but the
    child's exit is waited for on a pidfd (Linux): ``subprocess`` waits with a timeout by
    polling, sleeping 1, 2, 4 ... ms between looks, and a git that has closed its output
    is often not yet a process that can be reaped at the first look. That sleep came with
    a quarter to half of all git calls, on calls of ~2 ms. No input: stdin is /dev/null,
    so a git that reads it ends instead of waiting on a terminal.

    Git runs in a process group of its own, and a git that is stopped is stopped with the
    programs it started (a fetch's transport helper and ``index-pack``, an alias's shell):
    killed alone, they ran on, orphaned. A Ctrl-C reaches it through this call, which
    kills it, not through the terminal."""
    deadline = time.monotonic() + timeout_s
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with proc:
        try:
            out, err, ended = _exchange(proc, data, deadline)
            exited = ended and _exited(proc, deadline)
        except BaseException:
            # subprocess.run's rule, a Ctrl-C included: kill, then reap. Popen's __exit__
            # alone only waits, for ever (or 0.25 s on a KeyboardInterrupt, leaving git on).
            _kill_group(proc)
            proc.wait()
            raise
        if exited:
            return _Done(proc.wait(), out, err)
        _kill_group(proc)
        proc.wait()
        return _Done(None, out, err)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to git's process group: git and what it started. Sent before git is
    reaped, so the group's id (git's pid) is no one else's yet."""
    with contextlib.suppress(ProcessLookupError):  # the group is empty already
        os.killpg(proc.pid, signal.SIGKILL)


def _exchange(
    proc: subprocess.Popen[bytes], data: bytes | None, deadline: float
) -> tuple[bytes, bytes, bool]:
    """Write ``data`` to the child's stdin and read its stdout and stderr to their ends, as
    ``communicate`` does: what it wrote to each, and False when the deadline came first."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out: [], err: []}
    view = memoryview(data or b"")
    sent = 0
    with selectors.PollSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            if view:
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                if key.fd in chunks:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        chunks[key.fd].append(chunk)
                    else:
                        sel.unregister(key.fd)
                    continue
                assert proc.stdin is not None
                try:
                    # At most PIPE_BUF bytes: a write the pipe said it has room for.
                    sent += os.write(key.fd, view[sent : sent + select.PIPE_BUF])
                except BrokenPipeError:
                    sent = len(view)  # it stopped reading: what it did is in its output
                if sent >= len(view):
                    sel.unregister(key.fd)
                    proc.stdin.close()
        ended = not sel.get_map()
    return b"".join(chunks[out]), b"".join(chunks[err]), ended


def _exited(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the child exits by the deadline (it can then be reaped at once)."""
    left = max(0.0, deadline - time.monotonic())
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here: subprocess's own wait
        try:
            proc.wait(left)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        waiter = select.poll()
        waiter.register(pidfd, select.POLLIN)
        # poll's timeout is whole ms: rounded up, so that a deadline is never cut short.
        return bool(waiter.poll(math.ceil(left * 1000)))
    finally:
        os.close(pidfd)


def _text(raw: bytes, errors: str) -> str:
    """Git's output as ``text=True`` read it (UTF-8, universal newlines), or exactly as
    ``os.fsdecode`` reads a name (``surrogateescape``)."""
    text = raw.decode("utf-8", errors)
    if errors == "surrogateescape":
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


_A = TypeVar("_A")
_B = TypeVar("_B")


def at_once(first: Callable[[], _A], second: Callable[[], _B]) -> tuple[_A, _B]:
    """``(first(), second())``, run at the same time: two git calls that only read and do
    not depend on each other cost one process's wait, not two (each is mostly git's own
    start-up, a few milliseconds). ``second`` runs on a thread of its own; both have ended
    when this returns, and an exception of either is raised here."""
    got: list[_B] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            got.append(second())
        except BaseException as exc:  # handed to the caller below
            failed.append(exc)

    thread = threading.Thread(target=run, name="git-at-once", daemon=True)
    thread.start()
    try:
        one = first()
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return one, got[0]


def is_git_repo(path: Path) -> bool:
    """Whether ``path`` is the top of a git work tree (or a bare repository)."""
    if not path.is_dir():
        return False
    res = git(["rev-parse", "--is-inside-work-tree", "--show-toplevel"], path, timeout_s=15)
    if not res:
        return False
    lines = res.stdout.split()
    return len(lines) >= 2 and Path(lines[1]).resolve() == path.resolve()


def current_branch(path: Path) -> str | None:
    """The branch HEAD points at, or None when detached."""
    res = git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, timeout_s=15)
    return res.stdout.strip() if res else None


def branch_exists(path: Path, branch: str) -> bool:
    """Whether ``refs/heads/<branch>`` exists in the repository at ``path``."""
    return bool(
        git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], path, timeout_s=15)
    )


def rev_parse(path: Path, rev: str) -> str | None:
    """The full SHA ``rev`` names in the repository at ``path``, or None."""
    res = git(["rev-parse", "--verify", "--quiet", rev], path)
    return res.stdout.strip() or None if res else None


def rev_parse_branch(path: Path, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at, or None."""
    return rev_parse(path, f"refs/heads/{branch}^{{commit}}")


# What running a suite leaves behind that is never part of a task's change: bytecode, the
# pytest cache, coverage data. Our runners switch them off; these pathspecs are the second
# line, so that a repo without a .gitignore neither commits them as the agent's work nor
# counts them as a dirty worktree.
BYPRODUCT_EXCLUDES = (
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/*.py[co]",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/.coverage",
    ":(exclude,glob)**/.coverage.*",
)
CHANGE_PATHSPEC = (".", *BYPRODUCT_EXCLUDES)
# How many paths a reason names before it says "and N more".
_NAMED_PATHS = 10


def shown(name: str) -> str:
    """A file name as a reason shows it: bytes that are not UTF-8 (read as surrogates,
    ``os.fsdecode``'s way) as U+FFFD, and a character that is not printable (a line break,
    an escape, a bidirectional override) as its escape.

    A task's files are named by the agent: a surrogate cannot be written as UTF-8 (to a
    file, a row, a response), and a line break in a name would start a line of its own in
    a reason. Only for showing: a name to be matched or found again is kept as it is."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def name_paths(paths: Sequence[str]) -> str:
    """``a, b, c`` (at most ten, then how many more), each as ``shown``."""
    listed = ", ".join(shown(p) for p in paths[:_NAMED_PATHS])
    more = len(paths) - _NAMED_PATHS
    return f"{listed} and {more} more" if more > 0 else listed
