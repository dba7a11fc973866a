"""The chaos suite: `orch` processes killed with SIGKILL at random, and nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from .chaos_lib import ORCH, run_chaos

TASKS = 14
KILLS = 8
SEED = 20261124


@pytest.mark.timeout(600)
def test_kill_9_at_random_loses_nothing(tmp_path: Path, migrated_db_url: str) -> None:
    assert ORCH.exists(), f"orch is not installed next to the interpreter: {ORCH}"
    report = run_chaos(
        tmp_path, migrated_db_url, tasks=TASKS, kills=KILLS, seed=SEED, max_delay_s=1.5
    )
    figures = "\n".join(f"{name}: {value}" for name, value in report.figures())
    print(figures, *report.blocked_why, sep="\n")  # shown with -s or -rP
    assert report.problems() == [], figures
    # Each kill is made while a job runs (chaos() waits for one); it stops early only
    # when every task has ended.
    assert 0 < report.kills <= KILLS
    assert report.done + report.blocked == TASKS, figures
    assert report.lost == []
    assert report.duplicate_merges == []
    assert report.red_commits == []
    assert report.orphans == []
