"""What the merge gate costs, and what skipping its re-test saves.

    python bench/merge_gate.py [--merges 10] [--tests 20] [--only overhead,own,sequence]

1. Overhead: ``--merges`` tasks, each one commit on top of main (published to the user's
   ``orch/<KEY>``, as a development job publishes its attempt), merged one by one with the
   re-test skip switched off (so every merge re-tests). For each: the bare test run (the
   same command in the same worktree, by subprocess.run) and the whole gate (fetch-free
   local repo: rebase, one commit, re-test through proc_group, report, DB rows, CAS,
   checkout sync). Printed as medians, the difference and the ratio.
2. Skip savings: a sequence of ``--sequence`` tasks through the testing stage (the
   test-runner, then the validated-tree record) and the merge gate, in waves that branch
   from the same main (so some rebases are no-ops and some are not), run twice in this
   process: skip on, skip off. Printed: re-tests run in each, re-tests saved, wall time.

3. The gate's own cost: ``--merges`` tasks whose tree the testing stage's test-runner
   validated, so the gate skips its re-test: what is left is the gate's own work (git,
   the report, DB rows, CAS). Printed as the median, with the git calls it made (counted
   by wrapping ``gitops.git.git``) by subcommand, beside the median of one bare git call
   (``git rev-parse HEAD`` through the same helper) in the same process.

No asserts: figures to read. Each run gets its own temp dir and SQLite database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import collections

from git_calls import GitCounter

from orchestrator.config import load_settings
from orchestrator.domain.stages import Stage
from orchestrator.gates import merge_gate, validated
from orchestrator.gates.context import GateContext
from orchestrator.gitops import git as gitcmd
from orchestrator.gitops import worktrees
from orchestrator.runners.base import RunContext
from orchestrator.runners.test_runner import run_tests
from orchestrator.store import make_engine, merges, queries, upgrade
from orchestrator.store.rows import TaskRow

PYTEST = [sys.executable, "-m", "pytest", "-q"]
# Waves of tasks that branch from the same main: 20 tasks in all.
WAVES = (1, 1, 2, 1, 3, 1, 2, 1, 1, 2, 1, 1, 2, 1)


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout


class Bed:
    """A repo with a small pytest suite, registered in a fresh SQLite database."""

    def __init__(self, root: Path, n_tests: int, *, skip: bool) -> None:
        self.root = root
        self.repo = root / "repo"
        self.repo.mkdir(parents=True)
        _git(self.repo, "init", "-q", "-b", "main")
        (self.repo / ".gitignore").write_text("__pycache__/\n")
        tests = "\n\n".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(n_tests))
        (self.repo / "test_base.py").write_text(tests + "\n")
        _git(self.repo, "add", "-A")
        _git(self.repo, "commit", "-q", "-m", "initial")
        self.settings = load_settings(
            home=root / "home",
            kill_grace_s=0.5,
            merge_retest_skip_when_current_enabled=skip,
        )
        self.engine = make_engine(f"sqlite:///{root / 'orchestrator.db'}")
        upgrade(self.engine)
        with self.engine.begin() as conn:
            self.row = queries.insert_repo(
                conn,
                name="bench",
                path=str(self.repo),
                key_prefix="BENCH",
                now=time.time(),
                stages=["development", "testing", "deploy-staging"],
                agents={},
                test_cmd=PYTEST,
            )
        self.count = 0

    def task(self) -> tuple[TaskRow, Path]:
        with self.engine.begin() as conn:
            task = queries.insert_task(
                conn,
                repo_id=self.row.id,
                title="bench",
                body="",
                stage=Stage.DEPLOY_STAGING.value,
                now=time.time(),
            )
        made = worktrees.ensure_worktree(
            self.repo, "main", self.settings.worktrees_dir, "bench", task.key
        )
        assert made.path is not None, made.error
        return task, made.path

    def develop(self, task: TaskRow, wt: Path) -> None:
        """One commit on the task's branch, published to the user's ``orch/<KEY>`` as a
        development job publishes its attempt (``publish_branch``)."""
        self.count += 1
        n = self.count
        (wt / f"test_task{n}.py").write_text(f"def test_task{n}():\n    assert {n} > 0\n")
        _git(wt, "add", "-A")
        _git(wt, "commit", "-q", "-m", f"task {n}")
        published, detail = worktrees.publish_branch(self.repo, wt, task.key)
        assert published, detail

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", os.defpath), "PYTHONDONTWRITEBYTECODE": "1"}

    def testing_stage(self, task: TaskRow, wt: Path) -> None:
        folder = self.settings.tasks_dir / task.key
        ctx = RunContext(
            task.key,
            "bench",
            wt,
            folder,
            folder / "runs" / "testing.log",
            self.env(),
            self.settings,
        )
        run_tests(ctx, PYTEST)
        validated.record_validated_tree(self.engine, self.row, wt, PYTEST)

    def gate(self, task: TaskRow, wt: Path) -> dict[str, Any]:
        with self.engine.connect() as conn:
            repo = queries.get_repo(conn, "bench")
        assert repo is not None
        ctx = GateContext(
            task,
            repo,
            Stage.DEPLOY_STAGING,
            self.settings.tasks_dir / task.key,
            wt,
            self.settings,
            self.engine,
        )
        verdict = merge_gate.check_branch_mergeable(ctx)
        return dict(verdict.fields)

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return merges.merge_counters(conn)


def overhead(n_merges: int, n_tests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bed = Bed(Path(tmp), n_tests, skip=False)
        bare: list[float] = []
        gated: list[float] = []
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        for _ in range(n_merges):
            task, wt = bed.task()
            bed.develop(task, wt)
            t0 = time.perf_counter()
            subprocess.run(
                [*PYTEST, "-p", "no:cacheprovider"], cwd=wt, env=env, capture_output=True
            )
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fields = bed.gate(task, wt)
            gated.append(time.perf_counter() - t0)
            if fields["merge_status"] != "MERGED":
                print(f"  unexpected: {fields}")
        b, g = statistics.median(bare), statistics.median(gated)
        print(f"1. overhead over {n_merges} merges ({n_tests + 1}+ tests, re-test always on)")
        print(f"   bare test run     median {b * 1000:8.1f} ms")
        print(f"   merge gate        median {g * 1000:8.1f} ms")
        print(f"   gate adds         median {(g - b) * 1000:8.1f} ms  (x{g / b:.2f})")
        adds = sorted(gg - bb for gg, bb in zip(gated, bare, strict=True))
        print(f"   gate adds         min {adds[0] * 1000:.1f} ms, max {adds[-1] * 1000:.1f} ms")


def own_cost(n_merges: int, n_tests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bed = Bed(Path(tmp), n_tests, skip=True)
        gated: list[float] = []
        calls: list[list[tuple[float, float, str]]] = []
        for _ in range(n_merges):
            task, wt = bed.task()
            bed.develop(task, wt)
            bed.testing_stage(task, wt)  # the tree is validated: the gate skips its re-test
            with GitCounter() as counter:
                t0 = time.perf_counter()
                fields = bed.gate(task, wt)
                gated.append(time.perf_counter() - t0)
            calls.append(counter.calls)
            if fields["merge_status"] != "MERGED" or fields["retest"] != "skipped":
                print(f"  unexpected: {fields}")
        one: list[float] = []
        for _ in range(20):
            t0 = time.perf_counter()
            gitcmd.git(["rev-parse", "HEAD"], bed.repo)
            one.append(time.perf_counter() - t0)
        g, o = statistics.median(gated), statistics.median(one)
        n = statistics.median(len(c) for c in calls)
        in_git = statistics.median(sum(d for _, d, _ in c) for c in calls)
        print(f"3. the gate's own cost over {n_merges} merges (tree validated: no re-test)")
        print(f"   merge gate        median {g * 1000:8.1f} ms")
        print(f"   git calls         median {n:8.0f}     ({in_git * 1000:.1f} ms in git)")
        print(f"   one git call      median {o * 1000:8.1f} ms  (baseline: rev-parse HEAD)")
        sample = calls[len(calls) // 2]
        counts = collections.Counter(what for _, _, what in sample)
        spent: collections.Counter[str] = collections.Counter()
        for _, d, what in sample:
            spent[what] += d
        print("   by subcommand    " + ", ".join(f"{k}x {w}" for w, k in counts.most_common()))
        print(
            "   ms by subcommand "
            + ", ".join(f"{w} {d * 1000:.1f}" for w, d in spent.most_common())
        )


def sequence(n_tests: int, skip: bool) -> tuple[dict[str, int], float]:
    with tempfile.TemporaryDirectory() as tmp:
        bed = Bed(Path(tmp), n_tests, skip=skip)
        t0 = time.perf_counter()
        for size in WAVES:
            wave = [bed.task() for _ in range(size)]  # all branch from the same main
            for task, wt in wave:
                bed.develop(task, wt)
                bed.testing_stage(task, wt)
            for task, wt in wave:
                fields = bed.gate(task, wt)
                if fields["merge_status"] != "MERGED":
                    print(f"  unexpected: {fields}")
        return bed.counters(), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=10)
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--only", default="overhead,own,sequence")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "overhead" in only:
        overhead(args.merges, args.tests)
    if "own" in only:
        own_cost(args.merges, args.tests)
    if "sequence" not in only:
        return
    on, t_on = sequence(args.tests, skip=True)
    off, t_off = sequence(args.tests, skip=False)
    print(f"2. a sequence of {sum(WAVES)} merges in waves {list(WAVES)}")
    print(
        f"   skip on : {on['retests_run']:2d} re-tests run, {on['retests_skipped']:2d} skipped, "
        f"{on['merged']} merged, {t_on:6.2f} s"
    )
    print(
        f"   skip off: {off['retests_run']:2d} re-tests run, {off['retests_skipped']:2d} skipped, "
        f"{off['merged']} merged, {t_off:6.2f} s"
    )
    saved = off["retests_run"] - on["retests_run"]
    print(f"   re-tests saved by the skip: {saved} of {off['retests_run']} ({t_off - t_on:.2f} s)")


if __name__ == "__main__":
    main()
