"""The sandbox every untrusted process runs in: bubblewrap, with the job as its PID namespace.

Untrusted: every agent (an LLM may be prompt-injected or cheat) and every suite we run on a
task's code (test-runner, merge re-test, coverage, staging), since the agent wrote that code.
Inside the sandbox a process has its own PID, IPC and UTS namespaces (and a user namespace
where the kernel allows one), a read-only view of the system, a private ``/tmp``, and can
write only what the job is for: the task's workspace and the job's own folders. The
orchestrator's home (database, other tasks, logs, tokens), the user's clone, the user's
home, their runtime folder (their session's sockets) and the system's (``/run``, its
services' sockets) are hidden under empty file systems; the host's ``/proc`` is replaced by
the job's own.

Killing the job is killing its namespace: bubblewrap's init is the namespace's PID 1, and
when it dies the kernel kills everything left in the namespace, whatever it did to escape
its process group (setsid, a double fork, a renamed argv, a cleared environment).

This module only plans: ``Sandbox.wrap`` turns an argv into the bubblewrap argv. Whether
bubblewrap can run here is ``probe``'s answer, asked once per process.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Settings, sandbox_network_for
from orchestrator.errors import OrchestratorError
from orchestrator.gitops.config_read import KeptAnswers
from orchestrator.realpath import realpath

BWRAP = "bwrap"
# What a failed probe tells the user to do.
INSTALL_HINT = (
    "install bubblewrap (Debian: apt-get install bubblewrap) and allow user namespaces, "
    "or set ORCH_SANDBOX=off to run agents and suites without a sandbox (unsafe)"
)
_PROBE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Probe:
    """Whether bubblewrap works here: its path, and with a user namespace or not."""

    ok: bool
    bwrap: str | None
    userns: bool
    detail: str
    # Whether it has ``--json-status-fd`` (not the oldest releases): the channel that tells
    # a sandbox that failed to start from a command that ran and failed.
    json_status: bool = False


def _try(argv: Sequence[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    text = (done.stderr or done.stdout).strip()
    return done.returncode == 0, text.splitlines()[-1] if text else f"exit {done.returncode}"


@functools.cache
def probe(bwrap: str = BWRAP) -> Probe:
    """Can bubblewrap start a PID namespace here? Asked once per process and remembered."""
    path = shutil.which(bwrap)
    if path is None:
        return Probe(False, None, False, f"{bwrap} is not installed: {INSTALL_HINT}")
    base = [path, "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc"]
    with_user, status, why_user = _works([*base[:1], "--unshare-user", *base[1:]])
    if with_user:
        return Probe(True, path, True, f"{path}: PID and user namespaces", status)
    plain, status, why = _works(base)
    if plain:
        detail = f"{path}: PID namespace (no user namespace: {why_user})"
        return Probe(True, path, False, detail, status)
    return Probe(False, path, False, f"{path} cannot start a sandbox: {why}; {INSTALL_HINT}")


def _works(argv: Sequence[str]) -> tuple[bool, bool, str]:
    """Whether bubblewrap runs ``true`` with ``argv``: (it does, with ``--json-status-fd``,
    why not). One run where it has the option (as every current release does)."""
    ok, why = _try([argv[0], "--json-status-fd", "1", *argv[1:], "--", "true"])
    if ok:
        return True, True, why
    ok, why = _try([*argv, "--", "true"])
    return ok, False, why


@dataclass(frozen=True)
class Sandbox:
    """What one job's processes may see and write.

    ``hidden`` folders are covered by empty file systems; ``readonly`` ones are bound back
    read-only over that (a toolchain under the user's home, say; one the read-only system
    shows as it is needs no bind of its own); ``writable`` ones next, so
    a workspace inside the orchestrator's home is writable although its home is hidden;
    ``sealed`` ones last: read-only places inside a writable one (a workspace's ``.git``),
    which a writable bind made after them would cover.
    """

    writable: tuple[Path, ...]
    readonly: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    sealed: tuple[Path, ...] = ()
    network: bool = True
    userns: bool = True
    bwrap: str = BWRAP
    # ``--json-status-fd`` rather than ``--info-fd``: its ``exit-code`` says the command ran.
    json_status: bool = True

    def wrap(self, argv: Sequence[str], cwd: Path, *, info_fd: int | None = None) -> list[str]:
        """The bubblewrap argv that runs ``argv`` in ``cwd`` inside this sandbox.

        ``info_fd``: an inherited fd bubblewrap writes its JSON status to: the host pid of
        the namespace's init (``child-pid``) and, with ``json_status``, the command's
        ``exit-code``, which bubblewrap writes only when its setup finished and the command
        was started. The command inside does not get the fd."""
        return self.plan(cwd).argv(argv, info_fd=info_fd)

    def plan(self, cwd: Path) -> Plan:
        """This sandbox's bubblewrap options for a run in ``cwd``, its paths looked at once.

        A run asks once and uses the answer twice (its log header shows it, its spawn runs
        it), so the header shows exactly the mounts the run got."""
        head = [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
        out = ["--unshare-uts", "--hostname", "orch-sandbox"]
        if self.userns:
            out.append("--unshare-user")
        if not self.network:
            out.append("--unshare-net")
        # The system read-only; a fresh /dev, /proc (this namespace's only) and /tmp.
        # (/tmp here is a mount point inside the sandbox, not a file of ours.)
        out += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        # bubblewrap's /dev has /dev/tty: a job in the orchestrator's own session (tree
        # kill off: no session of its own) opened the user's terminal there, and TIOCSTI
        # typed a command into the shell that runs orch (outside any sandbox). /dev/null,
        # on a nodev bind, opens nothing: no job has a terminal to use.
        out += ["--ro-bind", "/dev/null", "/dev/tty"]
        out += ["--tmpfs", "/tmp"]  # noqa: S108
        # Each hidden place as written and where it resolves: an ORCH_HOME linked to
        # another disk lies open there when only the link (in the hidden home) is covered.
        # (Each path resolved once in this plan: a ``realpath`` is some system calls.)
        resolve = functools.cache(realpath)
        given = _existing(self.hidden)
        # (A place that is there resolves to one that is there: no second look.)
        every_hidden = _spellings(given, resolve)
        hidden = _outermost(every_hidden)
        at = _Destinations(hidden, resolve)
        for path in hidden:
            out += ["--tmpfs", at(path)]
        readonly = _existing(self.readonly)
        for path in _read_only_binds(readonly, hidden, every_hidden, resolve):
            out += ["--ro-bind", path, at(path)]
        writable = _existing(self.writable)
        for path in writable:
            out += ["--bind", path, at(path)]
        for path in _existing(self.sealed):
            out += ["--ro-bind", path, at(path)]
        # A hidden place is an empty file system, read-only once the binds inside it are
        # made: what a job writes there would only look like a write to the real place.
        for path in hidden:
            if not any(_inside(path, w) for w in writable):
                out += ["--remount-ro", at(path)]
        status = "--json-status-fd" if self.json_status else "--info-fd"
        return Plan(tuple(head), status, tuple(out), str(cwd))


class _Destinations:
    """Where a mount of ``path`` goes inside the sandbox: the path the sandbox resolves it
    to, which bubblewrap can make.

    A link on the way that the sandbox still shows (the read-only system's: ``/home`` to
    ``/var/home`` on Fedora Silverblue, an ``ORCH_HOME`` linked to another disk) is
    followed: bubblewrap cannot make a mount point through a link (``Can't mkdir``), and no
    job started. One inside a place the sandbox mounts empty (a hidden one, ``/tmp``) is
    not there in the sandbox: the path goes on from where that place was mounted, as given,
    and bubblewrap makes its folders.
    """

    def __init__(self, hidden: list[str], resolve: Callable[[str], str]) -> None:
        self.empty = {*_FRESH, *hidden}
        self.resolve = resolve

    def __call__(self, path: str) -> str:
        # The outermost empty place it lies in: the first of its folders, from the root.
        place = next((f for f in _ancestors(path)[:-1] if f in self.empty), None)
        if place is None:
            return self.resolve(path)
        return os.path.join(self.resolve(place), os.path.relpath(path, place))


@dataclass(frozen=True)
class Plan:
    """One run's bubblewrap options (``Sandbox.plan``): its paths are strings, looked at
    when the plan was made."""

    head: tuple[str, ...]  # bubblewrap and the options before the status fd
    status_flag: str  # --json-status-fd, or --info-fd (a bubblewrap without the first)
    mounts: tuple[str, ...]  # the namespaces and the mounts
    cwd: str

    def argv(self, command: Sequence[str], *, info_fd: int | None = None) -> list[str]:
        """The bubblewrap argv that runs ``command`` (see ``Sandbox.wrap``)."""
        status = [] if info_fd is None else [self.status_flag, str(info_fd)]
        return [*self.head, *status, *self.mounts, "--chdir", self.cwd, "--", *command]

    def options(self) -> list[str]:
        """Every option before the command, without the status fd: the log header's line."""
        return [*self.head, *self.mounts, "--chdir", self.cwd]


# What Path.exists() takes for "not there" (any other error is raised, as it raises it).
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in _ABSENT_ERRNOS:
            return False
        raise
    except ValueError:  # an embedded NUL, as Path.exists() answers it
        return False
    return True


def _existing(paths: Iterable[Path | str]) -> list[str]:
    """Absolute, existing, each once, in the order given (a bind needs its source)."""
    seen: set[str] = set()
    found: list[str] = []
    for raw in paths:
        path = os.path.abspath(raw)
        if path in seen or not _exists(path):
            continue
        seen.add(path)
        found.append(path)
    return found


def _root(path: str) -> str:
    # POSIX keeps exactly two leading slashes as a root of their own (as pathlib does).
    return "//" if path.startswith("//") and not path.startswith("///") else "/"


def _ancestors(path: str) -> list[str]:
    """The root, each folder on the way, and ``path`` itself: every ``place`` that
    ``_inside(path, place)`` holds for, of an absolute, normalized path (as ``abspath`` and
    ``realpath`` give them). A plan asks "does it lie in one of these places" some hundreds
    of times: one look in a set per folder of the path, not a comparison per place."""
    root = _root(path)
    found = [root]
    for part in path[len(root) :].split("/"):
        if part:
            found.append(f"{found[-1]}{part}" if len(found) == 1 else f"{found[-1]}/{part}")
    return found


def _lies_in(path: str, places: set[str] | frozenset[str]) -> bool:
    """``_in_any(path, places)`` for an absolute, normalized path and places."""
    return not places.isdisjoint(_ancestors(path))


def _inside(path: str, folder: str) -> bool:
    """``Path(path).is_relative_to(folder)`` for absolute, normalized paths."""
    if path == folder:
        return True
    # The cheap test first (a plan makes some hundreds): the roots only when it passes.
    prefix = folder if folder.endswith("/") else folder + "/"
    return path.startswith(prefix) and _root(path) == _root(folder)


# Places the sandbox mounts afresh over the read-only system: what lies there on the host
# is not seen inside unless it is bound back.
_FRESH = ("/tmp", "/dev", "/proc")  # noqa: S108 (mount points inside the sandbox)


@functools.cache
def _fresh_spellings() -> tuple[str, ...]:
    """``_FRESH`` as given and resolved: system folders, resolved once per process."""
    return tuple(_spellings(list(_FRESH)))


def _spellings(paths: list[str], resolve: Callable[[str], str] = realpath) -> list[str]:
    """Each path as given and resolved (a place may be reached through a link), once."""
    return list(dict.fromkeys([*paths, *map(resolve, paths)]))


def _read_only_binds(
    readonly: list[str],
    hidden: list[str],
    every_hidden: list[str],
    resolve: Callable[[str], str] = realpath,
) -> list[str]:
    """The read-only places to bind back, in the order given.

    Only where the sandbox does not show them: a place that lies in a hidden place or in
    one mounted afresh is bound as given; one that only resolves there (a link from outside
    into a hidden place), by the path it resolves to, which the link then shows. Elsewhere
    the read-only system shows a place as it is, and a bind would only cost bubblewrap a
    mount at every job's start (a few tenths of a millisecond each). Never one that is or
    holds (as given or resolved) a hidden place or one mounted afresh: a bind of ``~``
    would show again all that the hidden home keeps (``~/.ssh``, the orchestrator's home
    and its token). Nor one inside a place bound already, which shows it."""
    real = {path: resolve(path) for path in every_hidden}
    fresh = list(_fresh_spellings())
    unseen = {*fresh, *hidden, *(real[path] for path in hidden)}
    # Every place that is or holds one kept out (each of their folders): a path among them
    # is one ``_holds`` would refuse.
    holders = {f for place in (*fresh, *every_hidden, *real.values()) for f in _ancestors(place)}
    chosen: list[str] = []
    for path in readonly:
        resolved = resolve(path)
        if path in holders or resolved in holders:
            continue
        target = path if _lies_in(path, unseen) else resolved
        if _lies_in(target, unseen) and not _lies_in(target, set(chosen)):
            chosen.append(target)
    return chosen


def _in_any(path: str, places: list[str]) -> bool:
    """Whether ``path`` lies in one of ``places``."""
    return any(_inside(path, place) for place in places)


def _holds(spelled: list[str], places: list[str]) -> bool:
    """Whether a path (its spellings) is, or holds, one of ``places``."""
    return any(_inside(place, p) for place in places for p in spelled)


def _outermost(paths: list[str]) -> list[str]:
    """Leave out a place inside another one: the outer empty file system hides it already,
    and bubblewrap cannot remount it read-only once the outer one has covered its mount
    (the default home, ``~/.orchestrator``, lies inside the user's home)."""
    return [p for p in paths if not any(p != q and _inside(p, q) for q in paths)]


def _paths(value: object) -> list[Path]:
    """A repo option's list of paths (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [Path(p) for p in value if isinstance(p, str) and p]


def toolchain_paths(argv: Sequence[str], env_path: str | None = None) -> list[Path]:
    """Folders a command needs to run, to bind read-only when they lie in a hidden place:
    the install prefix of its executable (a venv and the Python it links to), and the
    orchestrator's own Python and code (runners default to ``sys.executable -m pytest``).

    The executable's own folder comes after its prefix, and the executable after that: each
    is bound only when the wider one is not (an executable in ``~/bin``, whose prefix is the
    user's home, never bound back; one in the home itself)."""
    # The orchestrator's own code too (an editable install lives outside the venv): the
    # self-hosting staging command runs `python -m orchestrator...`.
    package = Path(realpath(__file__)).parent
    found: list[Path] = [Path(sys.prefix), Path(sys.base_prefix), package.parent]
    if argv:
        exe = argv[0]
        located = exe if os.sep in exe else shutil.which(exe, path=env_path)
        if located:
            as_given = Path(os.path.abspath(located))
            # e.g. <venv>/bin/python -> <venv>; resolved, ~/.pyenv/versions/3.11.7
            for spelled in (as_given, Path(realpath(as_given))):
                found += [spelled.parent.parent, spelled.parent, spelled]
    return found


def sandbox_state(settings: Settings) -> tuple[str, str]:
    """``on``, ``off`` or ``unavailable``, and why: what ``/status``, ``orch status`` and
    the dashboard show."""
    if not settings.sandbox:
        return "off", "ORCH_SANDBOX=off: agents and suites run without a sandbox"
    found = probe()
    return ("on" if found.ok else "unavailable"), found.detail


class SandboxUnavailable(OrchestratorError):
    """Untrusted code must not start: the sandbox cannot run here (and is not switched off)."""


def for_job(
    settings: Settings,
    *,
    kind: str,
    repo_path: Path,
    argv: Sequence[str],
    writable: Sequence[Path],
    readonly: Sequence[Path] = (),
    env_path: str | None = None,
    options: Mapping[str, object] | None = None,
) -> Sandbox | None:
    """The sandbox of one process of a job, or None when it runs bare (``ORCH_SANDBOX=off``,
    or a deploy without ``ORCH_SANDBOX_DEPLOY``). Raises ``SandboxUnavailable`` when it
    should be sandboxed and cannot be: fail closed, never a silent bare run. The repo's
    ``options`` may add paths (``sandbox_ro``, ``sandbox_rw``: the user's own settings).

    Hidden: the orchestrator's home (database, tasks, logs), the user's clone, every remote
    of it that is a local path, the user's home, their runtime folder (their session's
    sockets) and the system's (``/run``: its services' sockets). Read-only again over that:
    the command's toolchain, the object store a workspace borrows from the user's clone
    (its history; nothing in the sandbox can write an object, a ref, a hook or a config
    there), ``readonly``, and what the job runs with from ``/run`` (``_seen_in_run``).
    Writable: ``writable`` only, except each workspace's own ``.git``, which is sealed
    read-only: the agent edits files, the orchestrator commits them.
    """
    if not settings.sandbox or (kind == "deploy" and not settings.sandbox_deploy):
        return None
    found = probe()
    if not found.ok or found.bwrap is None:
        raise SandboxUnavailable(found.detail)
    opts = options or {}
    hidden = (settings.home, repo_path, *local_remotes(repo_path), *_home(), *_runtime_dirs())
    return Sandbox(
        writable=(*writable, *_paths(opts.get("sandbox_rw"))),
        readonly=(
            *toolchain_paths(argv, env_path),
            *_borrowed_store(repo_path, writable),
            *readonly,
            *_paths(opts.get("sandbox_ro")),
            *(Path(p.strip()) for p in settings.sandbox_ro.split(",") if p.strip()),
            *_seen_in_run(env_path, hidden),
        ),
        hidden=hidden,
        # A workspace's `.git` (a folder; a `git worktree`'s `.git` file in an earlier
        # release) names where git reads config, hooks and refs from: a job that rewrote it
        # would send the orchestrator's own git calls to a place the job controls. Never a
        # `.git` that is a link: a job can plant one in its other folders (a suite's evidence
        # folder, which the coverage gate's next run gets), and bubblewrap follows it on the
        # host for the source and in the sandbox for the target: `../../../../..` bound the
        # host's home on the empty one. (No process writes those folders between this plan
        # and the start: the job's run before has ended with its namespace.)
        sealed=tuple(
            w / ".git" for w in writable if (w / ".git").exists() and not (w / ".git").is_symlink()
        ),
        network=sandbox_network_for(settings.sandbox_network, kind),
        userns=found.userns,
        bwrap=found.bwrap,
        json_status=found.json_status,
    )


# The system's runtime folder: where its services keep their sockets. A socket on a
# read-only mount still takes connections, so the read-only system is no cover for them:
# PostgreSQL's (peer authentication lets in any process of the database's owner), the system
# D-Bus and systemd's own (``systemd-run`` as root starts a command outside any sandbox),
# Docker's (a container with the host's ``/``). ``/var/run`` is a link to it.
SYSTEM_RUNTIME = "/run"
# Where the system's configuration lies; a link there may name a file in SYSTEM_RUNTIME.
SYSTEM_CONFIG = "/etc"


def _home() -> list[Path]:
    """The user's home, unless it is the system's root: a user without a home gets
    ``HOME=/`` (Docker's ``--user`` that ``/etc/passwd`` does not name, every container on
    OpenShift), which holds nothing of theirs, and hidden would cover the whole system (no
    command left to run: no job started)."""
    home = Path.home()
    return [] if realpath(home) == "/" else [home]


def _runtime_dirs() -> list[Path]:
    """The system's runtime folder (``/run``), which holds the user's (``/run/user/<uid>``),
    and the user's runtime folder where ``XDG_RUNTIME_DIR`` puts it elsewhere: the sockets
    of their session, an SSH agent, gpg-agent, the D-Bus session bus (through which
    ``systemd-run --user`` starts a command outside any sandbox).

    Not a ``XDG_RUNTIME_DIR`` that is or holds ``/tmp`` (some containers set ``/tmp``): the
    sandbox's own ``/tmp`` would be covered again, and read-only. One named through a link
    is hidden where it resolves (the link, on the read-only system, leads there in the
    sandbox too): ``/var/run/user/<uid>`` was a mount through ``/var/run``'s absolute link,
    which bubblewrap cannot make, and no job started."""
    found = [Path(SYSTEM_RUNTIME), Path(f"/run/user/{os.getuid()}")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and not _holds(_spellings([os.path.abspath(runtime)]), list(_FRESH)):
        found.append(Path(realpath(runtime)))
    return found


def _seen_in_run(env_path: str | None, hidden: Sequence[Path]) -> list[Path]:
    """What a job runs with from the hidden ``/run``, to bind back read-only: the folders of
    its ``PATH`` that lie there (NixOS keeps every system command in
    ``/run/current-system/sw/bin``), and the system's files that a link in ``/etc`` reaches
    through it (``/etc/resolv.conf`` under systemd-resolved or resolvconf: without it no
    name resolves), at the path it enters ``/run`` by. Folders and regular files only, never
    a socket; never one in (as written or resolved) another of the ``hidden`` places (the
    user's runtime folder; a clone on a disk udisks mounted in ``/run/media/<user>``): what
    hiding ``/run`` took away, not what they hide."""
    run = realpath(SYSTEM_RUNTIME)
    others = _other_hidden(tuple(map(str, hidden)), run)
    folders = _path_folders_in_run(env_path or "", run, others)
    files = [
        f
        for f in _system_files_in_run(SYSTEM_CONFIG, run)
        if not any(_in_any(p, list(others)) for p in (f, realpath(f)))
    ]
    return [Path(p) for p in (*folders, *files)]


@functools.lru_cache(maxsize=16)
def _other_hidden(hidden: tuple[str, ...], run: str) -> tuple[str, ...]:
    """The ``hidden`` places but ``run`` itself, as given and resolved: the orchestrator's
    own (trusted) settings, resolved once per process."""
    spelled = _spellings([os.path.abspath(p) for p in hidden])
    return tuple(p for p in spelled if p not in (run, SYSTEM_RUNTIME))


@functools.lru_cache(maxsize=16)
def _path_folders_in_run(env_path: str, run: str, others: tuple[str, ...]) -> tuple[str, ...]:
    """The folders of a ``PATH`` that lie in ``run`` (as written or resolved), outside the
    ``others`` hidden places. The ``PATH`` is the orchestrator's own or one its
    (trusted) settings give jobs: resolved once per process, since each ``realpath`` is a
    walk of ``lstat`` calls (a bind is of the folder as written: a link there that moves
    is followed)."""
    found = []
    for entry in dict.fromkeys(env_path.split(os.pathsep)):
        if not os.path.isabs(entry):
            continue
        spelled = [os.path.abspath(entry), realpath(entry)]
        in_run = _inside(spelled[0], SYSTEM_RUNTIME) or _inside(spelled[1], run)
        hidden = any(_in_any(p, list(others)) for p in spelled)
        if in_run and not hidden and os.path.isdir(spelled[1]):
            found.append(entry)
    return tuple(found)


# How long after a change of a folder its mtime is trusted to show the next one: a change
# within the clock's tick after a look leaves the mtime as it was (two seconds: FAT's
# granularity, and some hundred ticks of the kernel's clock).
_SETTLED_NS = 2 * 10**9


def _system_files_in_run(config: str, run: str) -> list[str]:
    """Where the links directly in ``config`` reach ``run`` (``_entry_into``), when a regular
    file is there now: the system's (trusted) files.

    What the links are is looked at again only when ``config`` changed (a link added,
    replaced or removed changes its mtime); whether a file is there, at every plan (a stat
    each). An answer kept for the process's life left every job without a resolver when
    the orchestrator started before the resolver wrote its file, or ran on while the user
    switched to systemd-resolved."""
    try:
        stamp = os.stat(config)
    except OSError:
        return []
    if time.time_ns() - stamp.st_mtime_ns < _SETTLED_NS:
        # Changed just now: a change still within this tick would not show in the mtime
        # (as git looks again at a file its index calls racily clean).
        entries = _links_into(config, run)
    else:
        entries = _kept_links_into(config, run, (stamp.st_dev, stamp.st_ino, stamp.st_mtime_ns))
    return [entry for entry in entries if os.path.isfile(entry)]


def _links_into(config: str, run: str) -> tuple[str, ...]:
    """Where each link directly in ``config`` enters ``run``, if it does."""
    try:
        names = os.listdir(config)
    except OSError:
        return ()
    found = []
    for name in sorted(names):
        path = os.path.join(config, name)
        if os.path.islink(path):
            entry = _entry_into(path, run)
            if entry is not None:
                found.append(entry)
    return tuple(found)


@functools.lru_cache(maxsize=4)
def _kept_links_into(config: str, run: str, stamp: tuple[int, int, int]) -> tuple[str, ...]:
    """``_links_into``, kept while ``config``'s ``stamp`` (device, inode, mtime) is the same."""
    return _links_into(config, run)


# As the kernel does: past this many links a path does not resolve (ELOOP).
_MAX_LINKS = 40


def _entry_into(path: str, folder: str) -> str | None:
    """The path by which resolving ``path`` first enters ``folder`` (a resolved path), with
    the rest of ``path`` after it; None if it never does.

    That path, not the file the links end at, is what the sandbox must show when ``folder``
    is hidden: resolving ``path`` there enters the empty ``folder`` there, and no link of the
    host's is found in it. Fedora's toolbox links ``/etc/resolv.conf`` to
    ``/run/host/etc/resolv.conf``, the host's own link to its resolver's file: that file,
    bound back alone, left the job's ``/etc/resolv.conf`` naming nothing."""
    done = "/"
    todo = path.split("/")[::-1]  # the next part last
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            done = os.path.dirname(done)
            continue
        step = os.path.join(done, part)
        if _inside(step, folder):
            # In the sandbox's empty folder, bubblewrap makes the bind's folders: no links.
            entry = os.path.normpath(os.path.join(step, *reversed(todo)))
            return entry if _inside(entry, folder) else None
        if not os.path.islink(step):
            done = step
            continue
        links += 1
        try:
            target = os.readlink(step)
        except OSError:
            return None
        if links > _MAX_LINKS:
            return None
        todo += target.split("/")[::-1]
        if target.startswith("/"):
            done = "/"
    return None


def _borrowed_store(repo_path: Path, writable: Sequence[Path]) -> list[Path]:
    """The user's clone's object store, when a workspace among ``writable`` borrows it.

    Only that store, never another place an alternates file names: a workspace's ``.git``
    is the orchestrator's (sealed in every run), but a job's other writable folders are the
    untrusted code's, and the next run may get the same one (the coverage gate's report
    runs in its suite's evidence folder). An alternates file the suite planted there named
    ``~/.ssh`` and the API token, and the next run saw both."""
    # Imported here: `orch status` imports this module and needs no git.
    from orchestrator.gitops.worktrees import borrowed_stores, git_dir_path

    named = [alt for w in writable for alt in borrowed_stores(w)]
    if not named:
        return []
    # As the workspace was made: the path git gives, resolved (nothing a job can relink).
    store = git_dir_path(repo_path, "objects")
    return [store] if store in named else []


def local_remotes(repo_path: Path) -> list[Path]:
    """The remotes of the user's clone that are folders here (``/srv/git/x.git``,
    ``file:///...``): hidden, so no sandboxed process can push to them with the user's own
    file permissions (what a credential is for a remote on this machine).

    Every sandboxed job asks, so git's answer is kept with the bytes of every config file
    it read (``gitops.config_read``) and given again only while those bytes are the same:
    a remote added since, in any of them, is a change of bytes and so a new ``git config``.
    """
    return list(_REMOTES.ask(repo_path, lambda: _ask_remotes(repo_path)))


def _ask_remotes(repo_path: Path) -> tuple[tuple[Path, ...], bool]:
    from orchestrator.gitops import git as gitcmd  # here: `orch status` needs no git

    res = gitcmd.git(
        ["config", "--get-regexp", r"^remote\..*\.(url|pushurl)$"], repo_path, timeout_s=15
    )
    found: list[Path] = []
    for line in res.stdout.splitlines():
        _, _, url = line.partition(" ")
        url = url.strip()
        if url.startswith("file://"):
            url = url.removeprefix("file://")
        if url.startswith("/"):
            found.append(Path(url))
    # Exit 1 is "no such key": an answer too. Anything else (a timeout, a refused repo) is
    # asked again next time.
    return tuple(found), res.returncode in (0, 1) and not res.timed_out


_REMOTES: KeptAnswers[tuple[Path, ...]] = KeptAnswers()


__all__ = [
    "BWRAP",
    "INSTALL_HINT",
    "Plan",
    "Probe",
    "Sandbox",
    "SandboxUnavailable",
    "for_job",
    "local_remotes",
    "probe",
    "sandbox_state",
    "toolchain_paths",
]
