"""The chaos run: real `orch` processes killed with SIGKILL at random moments, then checked.

A repo with a real pytest suite; each task's developer stage is the ``patch`` backend and
adds its own module and its own test (tasks never conflict). ``orch run`` / ``orch worker``
processes are started, ``kill -9``-ed after a seeded random delay, and restarted, over and
over; a final ``orch run --until-idle`` finishes the work. Then :func:`check` reads the DB,
the artifacts, ``main`` and ``/proc`` and counts what went wrong. Shared by
``tests/chaos/test_chaos.py`` and ``bench/chaos.py``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from orchestrator import repo_ops, task_ops
from orchestrator.config import load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.verdicts import parse_artifact
from orchestrator.store import make_engine, queries, upgrade

ORCH = Path(sys.executable).with_name("orch")
STAGES = ["development", "testing", "deploy-staging"]
ACTIVE_STATES = ("active", "deferred")
GIT_TIMEOUT_S = 60
PYTEST_TIMEOUT_S = 120

CORE = '"""The chaos repo\'s package."""\n\n\ndef base():\n    return 1\n'
TEST_CORE = "from pkg import base\n\n\ndef test_base():\n    assert base() == 1\n"
TEST_MATH = "def test_sum():\n    assert sum([1, 2, 3]) == 6\n"
STAGING = "import pkg\nimport sys\n\nsys.exit(0 if pkg.base() == 1 else 1)\n"
# The repo's suite needs no plugin. Its pytest is this interpreter's, whose test extras
# autoload hypothesis, schemathesis and anyio: seconds of imports on each of its ~40 runs
# (test stage, merge re-test, the red-commit check), more than the suite itself.
PYTEST_INI = "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = --disable-plugin-autoload\n"


def _git_env() -> dict[str, str]:
    # GIT_DIR and friends from an outer hook would point every call at another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="chaos",
        GIT_AUTHOR_EMAIL="chaos@localhost",
        GIT_COMMITTER_NAME="chaos",
        GIT_COMMITTER_EMAIL="chaos@localhost",
    )
    return env


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; its stdout, or an error naming the command."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=_git_env(),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}"
        raise RuntimeError(msg)
    return proc.stdout


def make_repo(root: Path) -> Path:
    """A package with a real pytest suite of a few tests, and a staging script."""
    repo = root / "chaos-repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "pkg" / "__init__.py").write_text(CORE)
    (repo / "tests" / "test_core.py").write_text(TEST_CORE)
    (repo / "tests" / "test_math.py").write_text(TEST_MATH)
    (repo / "staging.py").write_text(STAGING)
    (repo / "pytest.ini").write_text(PYTEST_INI)
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "chaos: a package and its suite")
    return repo


def added_files(n: int) -> tuple[str, str]:
    """The module and the test task ``n`` adds."""
    return f"pkg/mod_{n}.py", f"tests/test_mod_{n}.py"


def make_patches(repo: Path, count: int) -> list[bytes]:
    """One patch per task, each made by ``git diff`` in a scratch clone of ``repo``."""
    scratch = Path(tempfile.mkdtemp(prefix="chaos-scratch-"))
    clone = scratch / "clone"
    git(scratch, "clone", "-q", str(repo), str(clone))
    patches = []
    for n in range(1, count + 1):
        mod, test = added_files(n)
        (clone / mod).write_text(f"def value_{n}():\n    return {n}\n")
        (clone / test).write_text(
            f"from pkg.mod_{n} import value_{n}\n\n\ndef test_value_{n}():\n"
            f"    assert value_{n}() == {n}\n"
        )
        git(clone, "add", "-A")
        patches.append(git(clone, "diff", "--cached", "--binary").encode())
        git(clone, "reset", "-q", "--hard")
        git(clone, "clean", "-qfdx")
    return patches


@dataclass
class ChaosEnv:
    """A home on a database, the repo, the tasks, and the `orch` processes of the run."""

    root: Path
    db_url: str
    repo: Path = field(init=False)
    home: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    keys: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.logs = self.root / "orch-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
        }
        self.env.update(
            ORCH_HOME=str(self.home),
            ORCH_DATABASE_URL=self.db_url,
            ORCH_POLL_INTERVAL_S="0.2",
            ORCH_HEARTBEAT_INTERVAL_S="0.5",
            ORCH_JOB_LEASE_S="3",
            ORCH_KILL_GRACE_S="0.5",
            ORCH_INFRA_RETRY_BACKOFF_S="0.2",
            ORCH_MAX_PARALLEL_JOBS="3",
            ORCH_MAX_PARALLEL_JOBS_PER_REPO="3",
        )

    def setup(self, tasks: int) -> None:
        """Make the repo, register it, and file ``tasks`` tasks with their patches."""
        self.repo = make_repo(self.root)
        settings = load_settings(home=self.home, database_url=self.db_url)
        engine = make_engine(self.db_url)
        try:
            upgrade(engine)
            repo_ops.add_repo(
                engine,
                "chaos",
                self.repo,
                repo_ops.RepoInput(
                    stages=STAGES,
                    agents=["development=patch"],
                    staging_cmd=f"{sys.executable} staging.py",
                ),
            )
            for n, patch in enumerate(make_patches(self.repo, tasks), start=1):
                new = task_ops.add_task(engine, settings, "chaos", f"chaos task {n}", "body", patch)
                self.keys.append(new.task.key)
        finally:
            engine.dispose()

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``orch *args``; its stderr goes to a log file of its own."""
        n = len(self.procs)
        with open(self.logs / f"{n:03d}-{'-'.join(args)}.log", "wb") as err:
            proc = subprocess.Popen(
                [str(ORCH), *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.procs.append(proc)
        return proc

    def finish(self, timeout_s: float = 900) -> int:
        """The final ``orch run --until-idle``: its exit code."""
        proc = self.spawn("run", "--until-idle")
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            return -1

    def stop_all(self) -> None:
        """Kill whatever of ours still runs (only our own Popen objects, by pid)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def _running_owners(engine: sa.Engine) -> tuple[set[int], bool]:
    """The pids owning a running job, and whether any task can still move."""
    with engine.connect() as conn:
        jobs = queries.list_jobs(conn)
        moving = any(t.state in ACTIVE_STATES for t in queries.list_tasks(conn))
    pids = set()
    for j in jobs:
        if j.state == "running" and j.lease_owner:
            parts = j.lease_owner.rsplit(":", 2)
            if len(parts) == 3 and parts[1].isdigit():
                pids.add(int(parts[1]))
    return pids, moving


def chaos(env: ChaosEnv, *, kills: int, seed: int, max_delay_s: float = 2.0) -> int:
    """Kill -9 `orch` processes in the middle of jobs, restarting them; the kills done.

    Before each kill: wait until a job runs, sleep a seeded random delay, then kill a
    process that owns a running job (or any, if the job ended meanwhile). So the kills land
    in agents, in gates, in merges and in the bookkeeping after them, not only in start-up.
    """
    rng = random.Random(seed)
    engine = make_engine(env.db_url)
    live: list[subprocess.Popen[bytes]] = []
    done = 0
    try:
        while done < kills:
            live = [p for p in live if p.poll() is None]
            while len(live) < rng.choice((1, 2)):
                live.append(env.spawn(rng.choice(("run", "worker"))))
            deadline = time.monotonic() + 30
            owners, moving = _running_owners(engine)
            while not owners and moving and time.monotonic() < deadline:
                time.sleep(0.1)
                owners, moving = _running_owners(engine)
            if not moving:
                break
            time.sleep(rng.uniform(0.0, max_delay_s))
            owners, _ = _running_owners(engine)
            busy = [p for p in live if p.pid in owners]
            victim = rng.choice(busy or live)
            if victim.poll() is None:
                os.kill(victim.pid, signal.SIGKILL)
                done += 1
            victim.wait(timeout=30)
            live.remove(victim)
    finally:
        engine.dispose()
        for p in live:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
    return done


# --------------------------------------------------------------------------- /proc


def _environ(pid: int) -> dict[bytes, bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            out[name] = value
    return out


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            yield int(entry)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def orphans(home: Path, markers: set[str]) -> list[str]:
    """Live processes of this run: a job marker (``orch-job-*``) of ours, or our ORCH_HOME.

    Every ``orch-job-`` marker on the machine is looked at; one counts as ours when it is a
    marker of a job in our DB or the process works under our home (other suites may run
    on the same machine at the same time, and their processes are not our leftovers).
    """
    found = []
    home_b = str(home).encode()
    for pid in _pids():
        env = _environ(pid)
        if env is None or _zombie(pid):
            continue
        marker = env.get(b"ORCH_RUN_MARKER", b"")
        chain = env.get(b"ORCH_RUN_MARKER_CHAIN", b"").split(b",")
        job_markers = {m.decode() for m in (marker, *chain) if m.startswith(b"orch-job-")}
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        except OSError:
            cwd = b""
        if env.get(b"ORCH_HOME") == home_b:
            found.append(f"{pid}: orch process with our ORCH_HOME")
        elif job_markers and (job_markers & markers or cwd.startswith(home_b)):
            found.append(f"{pid}: job process {sorted(job_markers)}")
    return found


# --------------------------------------------------------------------------- the checks


@dataclass
class Report:
    """The figures of a chaos run and what was wrong, named."""

    tasks: int
    kills: int
    done: int = 0
    blocked: int = 0
    blocked_why: list[str] = field(default_factory=list)
    # Blocked tasks one of whose jobs was recovered from a killed worker: a kill must not
    # cost a task its budget (see docs/reliability.md, kill-after-patch-commit).
    blocked_after_kill: list[str] = field(default_factory=list)
    # Jobs a kill interrupted and a later worker took back: the kills really hit work.
    jobs_recovered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_merges: list[str] = field(default_factory=list)
    missing_merges: list[str] = field(default_factory=list)
    red_commits: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> list[tuple[str, int | str]]:
        """The lines bench/chaos.py prints."""
        return [
            ("tasks", self.tasks),
            ("kills", self.kills),
            ("jobs recovered after a kill", self.jobs_recovered),
            ("tasks done", self.done),
            ("tasks blocked (with reasons)", self.blocked),
            ("  of which blocked after a kill (engine bug)", len(self.blocked_after_kill)),
            ("tasks lost (goal 0)", len(self.lost)),
            ("duplicate merges (goal 0)", len(self.duplicate_merges)),
            ("missing merges of done tasks (goal 0)", len(self.missing_merges)),
            ("red commits on main (goal 0)", len(self.red_commits)),
            ("orphan processes (goal 0)", len(self.orphans)),
            ("DB/artifact disagreements (goal 0)", len(self.disagreements)),
            ("unexplained states (goal 0)", len(self.unexplained)),
            ("seconds", f"{self.seconds:.1f}"),
        ]

    def problems(self) -> list[str]:
        """Everything that is not as it must be, one line each."""
        return [
            *(f"lost: {x}" for x in self.lost),
            *(f"duplicate merge: {x}" for x in self.duplicate_merges),
            *(f"missing merge: {x}" for x in self.missing_merges),
            *(f"red commit: {x}" for x in self.red_commits),
            *(f"orphan: {x}" for x in self.orphans),
            *(f"disagreement: {x}" for x in self.disagreements),
            *(f"unexplained: {x}" for x in self.unexplained),
        ]


def _verdict_passes(folder: Path, name: str) -> bool:
    path = folder / name
    text = path.read_text(errors="replace") if path.exists() else None
    return parse_artifact(name, text).passed


def red_commits(repo: Path, root: Path) -> list[str]:
    """Commits on main whose checkout does not pass its own suite.

    Each commit is checked out in a work tree of its own, so their suites run side by
    side, as many at a time as there are CPUs (one after another, ~15 of them were a
    quarter of the chaos test's time, one core idle).
    """
    clone = Path(tempfile.mkdtemp(prefix="chaos-verify-", dir=root))
    git(clone, "clone", "-q", "--no-checkout", str(repo), "c")
    shas = git(repo, "rev-list", "main").split()
    trees = []
    for n, sha in enumerate(shas):
        tree = clone / f"at-{n}"
        git(clone / "c", "worktree", "add", "-q", "--detach", str(tree), sha)
        trees.append(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTEST_"))}

    def suite(tree: Path) -> int:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=PYTEST_TIMEOUT_S,
            check=False,
        )
        return proc.returncode

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        codes = list(pool.map(suite, trees))
    return [
        f"{sha[:10]} (pytest exit {code})"
        for sha, code in zip(shas, codes, strict=True)
        if code != 0
    ]


def check(env: ChaosEnv, kills: int, started: float) -> Report:
    """Read back the DB, the artifacts, main and /proc: the run's figures and problems."""
    report = Report(tasks=len(env.keys), kills=kills)
    settings = load_settings(home=env.home, database_url=env.db_url)
    engine = make_engine(env.db_url)
    markers: set[str] = set()
    try:
        with engine.connect() as conn:
            tasks = {t.key: t for t in queries.list_tasks(conn)}
            all_jobs = queries.list_jobs(conn)
            by_task = collections.defaultdict(list)
            for j in all_jobs:
                if any("recovered from" in r for r in j.reasons):
                    report.jobs_recovered += 1
                by_task[j.task_id].append(j)
                started_ms = int((j.started_at or 0) * 1000)
                markers.add(f"orch-job-{j.id}-{j.attempt}-{started_ms}")
                if j.state == "finished" and j.log_path and not Path(j.log_path).exists():
                    report.disagreements.append(f"job {j.id}: log {j.log_path} is missing")
    finally:
        engine.dispose()

    log = git(env.repo, "log", "--format=%H%x00%B%x1e", "main")
    trailers = collections.Counter(
        line.split(":", 1)[1].strip()
        for entry in log.split("\x1e")
        for line in entry.splitlines()
        if line.startswith("Orch-Task:")
    )
    added = collections.Counter(
        line.strip()
        for line in git(
            env.repo, "log", "--diff-filter=A", "--name-only", "--format=", "main"
        ).splitlines()
        if line.strip()
    )
    for n, key in enumerate(env.keys, start=1):
        t = tasks.get(key)
        if t is None:
            report.lost.append(f"{key}: not in the DB")
            continue
        jobs = by_task[t.id]
        open_jobs = [j for j in jobs if j.state in ("queued", "running")]
        if t.state in ACTIVE_STATES:
            what = "no job" if not open_jobs else f"{len(open_jobs)} open jobs"
            report.lost.append(f"{key}: {t.state} at {t.stage} after the final run ({what})")
        elif t.state == "blocked":
            report.blocked += 1
            report.blocked_why.append(f"{t.key} at {t.stage}: {'; '.join(t.reasons)}")
            if any("recovered from" in r for j in jobs for r in j.reasons):
                report.blocked_after_kill.append(t.key)
            if not t.reasons:
                report.unexplained.append(f"{key}: blocked without reasons")
        elif t.state != "done":
            report.unexplained.append(f"{key}: {t.state} at {t.stage}")
        mod, test = added_files(n)
        merged = max(trailers.get(key, 0), added.get(mod, 0), added.get(test, 0))
        if merged > 1:
            report.duplicate_merges.append(
                f"{key}: {trailers.get(key, 0)} trailers, {mod} added {added.get(mod, 0)}x"
            )
        if t.state == "done":
            report.done += 1
            if merged == 0:
                report.missing_merges.append(f"{key}: done but not on main")
            folder = settings.tasks_dir / key
            for name in (A.TEST_REPORT, A.MERGE_REPORT):
                if not _verdict_passes(folder, name):
                    report.disagreements.append(f"{key}: done but {name} does not parse as PASS")
        elif merged:
            report.disagreements.append(f"{key}: on main but {t.state} at {t.stage}")
    report.red_commits = red_commits(env.repo, env.root)
    for p in env.procs:
        if p.poll() is None:
            report.orphans.append(f"{p.pid}: orch {p.args} still running")
    report.orphans += orphans(env.home, markers)
    report.seconds = time.time() - started
    return report


def run_chaos(
    root: Path, db_url: str, *, tasks: int, kills: int, seed: int, max_delay_s: float = 2.0
) -> Report:
    """Set up, kill and restart, finish, check: the whole chaos run."""
    started = time.time()
    env = ChaosEnv(root, db_url)
    env.setup(tasks)
    try:
        done = chaos(env, kills=kills, seed=seed, max_delay_s=max_delay_s)
        code = env.finish()
        # A killed run's agents are left to the next worker's start-up (recovery kills
        # them by marker); the final run has exited, so /proc must hold none of them.
        report = check(env, done, started)
        if code != 0:
            report.unexplained.append(f"the final `orch run --until-idle` exited {code}")
        return report
    finally:
        env.stop_all()
