"""The replay: a real git history filed as ``--patch`` tasks, run through the orchestrator.

    python bench/replay.py --source PATH [--commits 16] [--test-cmd "python -m pytest -q"]
        [--modes plain,in-order,out-of-order] [--seed 1] [--probe MODULE] [--json] [--keep]
    python bench/replay.py      # offline: this repo's own committed history (see below)

The last ``--commits`` first-parent commits of the source that touch code are replayed from
the commit before them (the base), each as a task whose patch is its diff from the previous
one (commits between that touch no code ride along), so main must end at upstream's tree.
Each mode has its own home, SQLite database and repo (main at the base, the base's history
only; pipeline development ``patch``, testing, deploy-staging; no staging command):

- ``plain``: filed in upstream order, no dependencies (every patch starts from base main);
- ``in-order``: filed in upstream order, each ``--after`` the one before;
- ``out-of-order``: filed shuffled (``--seed``), each ``--after`` its upstream predecessor.

Printed per mode: tasks, done, main's tree equal to upstream's, the commits put on main
(``Orch-Task:`` trailer), in upstream order or not, and how many fail the suite (goal 0:
each checked out and tested, once per distinct tree), merge re-tests skipped / ran
(``merge_results``), rollbacks, the jobs' summed time, the wall time of the run (set-up,
filing, worker until idle) in seconds and over the bare suite time (the suite once on
upstream's final tree, in this process). A line per finished task goes to stderr.
Exit 2: the suite would not test the tree (see ``--probe``).

``--probe MODULE`` first breaks the tree's ``MODULE/__init__.py`` (at the top or under
``src/``) and refuses (exit 2) unless the suite then fails: it must test the replayed tree,
not an installed copy. Offline the suite is ``python -m pytest -q -o pythonpath=src
tests/unit`` (each tree's own ``src`` first on sys.path; suites do not get ``--agent-env``
variables, so ``PYTHONPATH`` cannot do it) and the probe is ``orchestrator``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from orchestrator import repo_ops, task_ops
from orchestrator.agent_env import ENV_ALLOWLIST
from orchestrator.config import Settings, load_settings
from orchestrator.engine.worker import Worker
from orchestrator.errors import UsageError
from orchestrator.store import dependencies, merges, queries
from orchestrator.store.bootstrap import open_engine
from orchestrator.store.rows import TaskRow

HERE = Path(__file__).resolve().parents[1]
MODES = ("plain", "in-order", "out-of-order")
STAGES = ["development", "testing", "deploy-staging"]
CODE_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd", ".c", ".h", ".rs", ".go", ".js", ".ts")
TERMINAL = ("done", "blocked", "cancelled")
SUITE_TIMEOUT_S = 1800.0
_IDENT = {f"GIT_{who}_NAME": "replay" for who in ("AUTHOR", "COMMITTER")}
_IDENT |= {f"GIT_{who}_EMAIL": "replay@localhost" for who in ("AUTHOR", "COMMITTER")}


def git_bytes(cwd: Path, *args: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | _IDENT
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True).stdout


def git(cwd: Path, *args: str) -> str:
    return git_bytes(cwd, *args).decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    body: str
    author: str
    patch: bytes


@dataclass(frozen=True)
class History:
    upstream: Path
    base: str
    commits: list[Commit]
    last: str


def select_history(upstream: Path, n: int) -> History:
    """The last ``n`` first-parent commits that touch code, with their base and patches."""
    picked: list[tuple[str, str]] = []  # (commit, its first parent), newest first
    for line in git(upstream, "rev-list", "--first-parent", "--parents", "HEAD").splitlines():
        sha, *parents = line.split()
        if not parents or len(picked) == n:
            break
        files = git(upstream, "diff", "--name-only", parents[0], sha).splitlines()
        if any(f.endswith(CODE_SUFFIXES) for f in files):
            picked.append((sha, parents[0]))
    if not picked:
        msg = f"{upstream}: no first-parent commit with a parent touches code"
        raise SystemExit(msg)
    picked.reverse()
    base = prev = picked[0][1]
    commits = []
    for sha, _ in picked:
        text = git(upstream, "log", "-1", "--format=%s%n%an <%ae>%n%b", sha)
        subject, author, body = [*text.split("\n", 2), "", ""][:3]
        patch = git_bytes(upstream, "diff", "--binary", "--full-index", prev, sha)
        commits.append(Commit(sha, subject[:200] or sha[:12], body, author, patch))
        prev = sha
    return History(upstream, base, commits, prev)


class Suite:
    """The test command in a scratch clone, outside any sandbox; run once per tree."""

    def __init__(self, argv: list[str], scratch: Path) -> None:
        self.argv = argv
        # What the orchestrator gives a suite: the allowlist, no --agent-env variables.
        self.env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.scratch = scratch
        self.by_tree: dict[str, tuple[bool, float]] = {}

    def checkout(self, sha: str) -> None:
        git(self.scratch, "checkout", "-q", "--detach", sha)
        git(self.scratch, "clean", "-q", "-fdx")

    def run(self, sha: str) -> tuple[bool, float]:
        """(passed?, seconds) of the suite on ``sha``'s tree."""
        tree = git(self.scratch, "rev-parse", f"{sha}^{{tree}}")
        if tree not in self.by_tree:
            self.checkout(sha)
            t0, out = time.perf_counter(), subprocess.DEVNULL
            try:
                code = subprocess.run(
                    self.argv, cwd=self.scratch, env=self.env, stdout=out, stderr=out,
                    timeout=SUITE_TIMEOUT_S,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                code = -1
            self.by_tree[tree] = (code == 0, time.perf_counter() - t0)
        return self.by_tree[tree]

    def probe(self, module: str) -> str | None:
        """Why the suite does not test the checked-out tree's ``module``; None when it does."""
        found = [d / module / "__init__.py" for d in (Path(), Path("src"))]
        init = next((f for f in found if (self.scratch / f).is_file()), None)
        if init is None:
            return f"no {module}/__init__.py in the tree"
        text = (self.scratch / init).read_text()
        (self.scratch / init).write_text(f"raise ImportError('replay probe')\n{text}")
        collect = ["--collect-only", "-q"] if "pytest" in " ".join(self.argv) else []
        try:
            code = subprocess.run(
                [*self.argv, *collect], cwd=self.scratch, env=self.env, capture_output=True,
                timeout=SUITE_TIMEOUT_S,
            ).returncode  # fmt: skip
        finally:
            git(self.scratch, "checkout", "-q", "--", str(init))
        return f"the suite passes with the tree's {init} broken" if code == 0 else None


@dataclass
class ModeResult:
    mode: str
    tasks: int = 0
    done: int = 0
    tree_equal: bool = False
    main_commits: int = 0
    upstream_order: bool = False
    red_on_main: int = 0
    retests_skipped: int = 0
    retests_ran: int = 0
    merge_statuses: dict[str, int] = field(default_factory=dict)
    rollbacks: int = 0
    late_deps: int = 0
    jobs_s: float = 0.0
    wall_s: float = 0.0
    ratio: float = 0.0
    stuck: list[str] = field(default_factory=list)

    def figures(self) -> list[tuple[str, object]]:
        """What is printed, by name, in order."""
        yn = {True: "yes", False: "no"}
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(self.merge_statuses.items()))
        return [
            ("tasks", self.tasks),
            ("done", self.done),
            ("tree equal to upstream", yn[self.tree_equal]),
            ("commits on main", self.main_commits),
            ("  in upstream order", yn[self.upstream_order]),
            ("  failing the suite (goal 0)", self.red_on_main),
            ("merge re-tests skipped", self.retests_skipped),
            ("merge re-tests ran", self.retests_ran),
            ("merge results", statuses or "-"),
            ("rollbacks", self.rollbacks),
            ("dependencies on a task filed later", self.late_deps),
            ("time in jobs, summed (s)", f"{self.jobs_s:.1f}"),
            ("wall time (s)", f"{self.wall_s:.1f}"),
            ("wall time / bare suite", f"{self.ratio:.1f}"),
        ]


def file_tasks(
    engine: sa.Engine, settings: Settings, hist: History, mode: str, seed: int
) -> tuple[list[str], int]:
    """File one task per commit as ``mode`` says: (keys in upstream order, late deps).

    ``task_ops.add_task`` refuses ``after=`` naming a task not filed yet, so when the shuffle
    files a task before its predecessor, that dependency is recorded once both exist
    (``dependencies.insert_deps``, the row ``after=`` writes), before any worker runs.
    """
    order = list(range(len(hist.commits)))
    if mode == "out-of-order":
        random.Random(seed).shuffle(order)
    filed: dict[int, TaskRow] = {}
    late: list[int] = []
    for i in order:
        c, extra = hist.commits[i], dict[str, Any]()
        if mode != "plain" and i > 0:
            if i - 1 in filed:
                extra["after"] = [filed[i - 1].key]
            else:
                late.append(i)
        with contextlib.suppress(UsageError):  # an identity git took but parse_author not
            extra["author"] = task_ops.parse_author(c.author)
        body = f"Replay of upstream {c.sha} ({i + 1}/{len(hist.commits)}).\n\n{c.body}"
        filed[i] = task_ops.add_task(
            engine, settings, "replay", c.subject, body, c.patch, **extra
        ).task
    with engine.begin() as conn:
        for i in late:
            dependencies.insert_deps(conn, filed[i].id, [filed[i - 1].id])
    return [filed[i].key for i in range(len(hist.commits))], len(late)


def watch(engine: sa.Engine, worker: Worker, mode: str, deadline_s: float, t0: float) -> None:
    """Run the worker to idle; a line on stderr per task that reaches an end state."""
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True}, daemon=True)
    thread.start()
    seen: set[str] = set()
    while True:
        alive = thread.is_alive()
        with engine.connect() as conn:
            rows = queries.list_tasks(conn)
        for t in (t for t in rows if t.state in TERMINAL and t.key not in seen):
            seen.add(t.key)
            why = "" if t.state == "done" else f"  ({(t.reasons or [''])[-1][:160]})"
            print(
                f"  [{mode}] {t.key:<10} {t.state:<8} at {t.stage:<14} "
                f"{time.perf_counter() - t0:7.1f} s  {len(seen)}/{len(rows)}  {t.title[:50]}{why}",
                file=sys.stderr,
            )
        if not alive:
            return
        if time.perf_counter() - t0 > deadline_s:
            print(f"  [{mode}] deadline of {deadline_s:g} s: stopping", file=sys.stderr)
            worker.stop()
        thread.join(0.5)


def run_mode(mode: str, hist: History, args: argparse.Namespace, suite: Suite) -> ModeResult:
    """One mode in a fresh home and repo under the temp dir: run, then read back and test."""
    res, t0 = ModeResult(mode), time.perf_counter()
    where = suite.scratch.parent / mode
    repo = where / "repo"
    repo.mkdir(parents=True)
    # Main at the base, with the base's history only: no later object helps a patch apply.
    git(repo, "init", "-q", "-b", "main")
    git(repo, "fetch", "-q", str(hist.upstream), "refs/heads/replay-base")
    git(repo, "checkout", "-q", "-B", "main", "FETCH_HEAD")
    settings = load_settings(home=where / "home", database_url="", poll_interval_s=0.2)
    engine = open_engine(settings)
    try:
        spec = repo_ops.RepoInput(
            main_branch="main",
            stages=STAGES,
            agents=["development=patch"],
            test_cmd=shlex.join(suite.argv),
            prefix="REPLAY",
        )
        repo_ops.add_repo(engine, "replay", repo, spec)
        keys, res.late_deps = file_tasks(engine, settings, hist, mode, args.seed)
        watch(engine, Worker(settings, engine, name=f"replay-{mode}"), mode, args.deadline_s, t0)
        res.wall_s = round(time.perf_counter() - t0, 2)
        with engine.connect() as conn:
            tasks = queries.list_tasks(conn)
            for t in tasks:
                history = queries.list_transitions(conn, t.id)
                res.rollbacks += sum(1 for h in history if h.kind == "rollback")
                jobs = queries.list_jobs(conn, task_id=t.id)
                res.jobs_s += sum(
                    (j.finished_at or j.started_at or 0) - (j.started_at or 0) for j in jobs
                )
                why = t.reasons or [
                    task_ops.waiting_text(dependencies.waiting_on(conn, t.id)) or ""
                ]
                if t.state != "done":
                    res.stuck.append(f"{t.key} {t.state} at {t.stage}: {'; '.join(why)}")
            results = merges.list_merge_results(conn)
    finally:
        engine.dispose()
    res.tasks, res.done = len(tasks), sum(1 for t in tasks if t.state == "done")
    res.retests_skipped = sum(1 for r in results if r.retest == "skipped")
    res.retests_ran = sum(1 for r in results if r.retest == "ran")
    for r in results:
        res.merge_statuses[r.status] = res.merge_statuses.get(r.status, 0) + 1
    upstream_tree = git(hist.upstream, "rev-parse", f"{hist.last}^{{tree}}")
    res.tree_equal = git(repo, "rev-parse", "main^{tree}") == upstream_tree
    # The orchestrator's commits on main, oldest first, with the task key of each.
    trailer = "%H %(trailers:key=Orch-Task,valueonly)"
    log = git(repo, "log", "--reverse", f"--format={trailer}", f"{hist.base}..main")
    landed = [(w[0], w[1]) for w in map(str.split, log.splitlines()) if len(w) > 1]
    rank = {k: i for i, k in enumerate(keys)}
    ranks = [rank.get(k, -1) for _, k in landed]
    res.main_commits, res.upstream_order = len(landed), ranks == sorted(ranks) and -1 not in ranks
    git(suite.scratch, "fetch", "-q", str(repo), f"main:refs/replay/{mode}")
    for sha, key in landed:
        ok, secs = suite.run(sha)
        if not ok:
            res.red_on_main += 1
            print(f"  [{mode}] red on main: {sha[:12]} ({key}), {secs:.1f} s", file=sys.stderr)
    return res


def report(args: argparse.Namespace, head: dict[str, Any], results: list[ModeResult]) -> None:
    """The figures: a table with a column per mode, or JSON."""
    if args.json:
        print(json.dumps(head | {"modes": [dataclasses.asdict(r) for r in results]}, indent=2))
        return
    print(f"replay of {len(head['commits'])} commits of {head['source']} from {head['base'][:10]}")
    print(f"suite: {head['test_cmd']}")
    print(
        f"bare suite on upstream's final tree: {head['bare_suite_s']:.1f} s, "
        f"{'passed' if head['bare_suite_passed'] else 'FAILED'}; "
        f"distinct trees tested: {head['trees_tested']}"
    )
    print(f"\n{'':<36}" + "".join(f"{r.mode:>14}" for r in results))
    for row in zip(*(r.figures() for r in results), strict=True):
        print(f"{row[0][0]:<36}" + "".join(f"{value!s:>14}" for _, value in row))
    for r in results:
        for line in r.stuck:
            print(f"  [{r.mode}] {line[:400]}")


def main(argv: list[str] | None = None) -> int:
    """Replay, print the figures; 2 when the suite would not test the replayed tree."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, help="a local git repository (default: this one)")
    p.add_argument("--commits", type=int, default=16)
    p.add_argument("--test-cmd", help="default: python -m pytest -q (offline: + tests/unit)")
    p.add_argument("--probe", metavar="MODULE", help="the suite must fail without it")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--deadline-s", type=float, default=4 * 3600.0, help="per mode")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)
    offline = args.source is None
    test_cmd = args.test_cmd or f"{shlex.quote(sys.executable)} -m pytest -q"
    test_cmd += " -o pythonpath=src tests/unit" if offline and not args.test_cmd else ""
    module = args.probe or ("orchestrator" if offline else None)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    root = Path(tempfile.mkdtemp(prefix="orch-replay-"))
    try:
        upstream = root / "upstream"
        git(root, "clone", "-q", str(args.source or HERE), str(upstream))
        hist = select_history(upstream, args.commits)
        git(upstream, "branch", "replay-base", hist.base)
        git(root, "clone", "-q", str(upstream), str(root / "check"))
        suite = Suite(shlex.split(test_cmd), root / "check")
        suite.checkout(hist.last)
        if module and (why := suite.probe(module)):
            print(f"{why}: the suite does not test the replayed tree", file=sys.stderr)
            return 2
        bare_ok, bare_s = suite.run(hist.last)
        results = []
        for mode in modes:
            results.append(run_mode(mode, hist, args, suite))
            results[-1].ratio = round(results[-1].wall_s / bare_s, 2) if bare_s else 0.0
        head: dict[str, Any] = dict(source=str(args.source or HERE), base=hist.base)
        head |= dict(test_cmd=test_cmd, commits=[c.sha for c in hist.commits])
        head |= dict(bare_suite_passed=bare_ok, bare_suite_s=round(bare_s, 2))
        report(args, head | {"trees_tested": len(suite.by_tree)}, results)
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
