"""`orch demo`: four tasks through the whole pipeline, live, in a throwaway home."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from orchestrator.cli._common import console, fail, plain, print_json, to_jsonable
from orchestrator.domain.stages import DEFAULT_STAGES

if TYPE_CHECKING:
    from orchestrator.demo import DemoResult

STATE_STYLE = {"done": "green", "blocked": "red", "deferred": "yellow", "cancelled": "dim"}


def _board(rows: list[dict[str, object]], started: float) -> Table:
    table = Table(title=f"orch demo  {time.time() - started:5.1f}s", expand=False)
    table.add_column("task")
    table.add_column("title")
    for stage in DEFAULT_STAGES:
        table.add_column(stage.value, justify="center")
    table.add_column("jobs", justify="right")
    table.add_column("last reason", overflow="fold", max_width=48)
    for r in rows:
        cells = []
        for stage in DEFAULT_STAGES:
            if r["stage"] != stage.value:
                cells.append("")
                continue
            state = str(r["state"])
            style = STATE_STYLE.get(state, "cyan")
            label = f"{state} {r['agent']}".strip() if state == "active" else state
            cells.append(f"[{style}]{label}[/{style}]")
        table.add_row(str(r["key"]), str(r["title"]), *cells, str(r["jobs"]), str(r["reason"]))
    return table


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's home to explore.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    forge: Annotated[
        bool,
        typer.Option(
            "--forge",
            help="Through a fake GitHub: issues in, pull requests out, a CI that fails once.",
        ),
    ] = False,
) -> None:
    """Run four tasks through the whole pipeline with deterministic agents."""
    from orchestrator import demo as demo_mod

    run: Callable[..., DemoResult] = demo_mod.run_demo
    if forge:
        from orchestrator import demo_forge

        run = demo_forge.run_forge_demo
    root = Path(tempfile.mkdtemp(prefix="orch-demo-"))
    started = time.time()
    try:
        if as_json:
            result = run(root)
        else:
            where = "home, repo and fake GitHub" if forge else "home and repo"
            console.print(f"orch demo: a throwaway {where} in {root}")
            with Live(_board([], started), console=console, refresh_per_second=8) as live:
                result = run(root, on_tick=lambda rows: live.update(_board(rows, started)))
    except Exception as exc:
        if not keep:
            demo_mod.remove(root)
        fail(f"the demo could not run: {exc}", 1)
    if as_json:
        print_json({**to_jsonable(result), "ok": result.ok})
    else:
        _summary(result, keep)
    if not keep:
        demo_mod.remove(root)
    if not result.ok:
        raise typer.Exit(1)


def _summary(result: object, keep: bool) -> None:
    from orchestrator.demo import DemoResult

    assert isinstance(result, DemoResult)
    table = Table(title="summary")
    for col in ("task", "title", "state", "jobs", "rollbacks", "time"):
        table.add_column(col)
    table.add_column("verdicts", no_wrap=True)
    table.add_column("problems")
    for t in result.tasks:
        table.add_row(
            t.key,
            t.title,
            t.state,
            str(t.attempts),
            str(t.rollbacks),
            f"{t.seconds:.1f}s",
            "\n".join(t.verdicts),
            "\n".join(t.problems) or "-",
        )
    console.print(table)
    _forge_summary(result)
    console.print("main, newest first:")
    for line in result.main_log:
        console.print(f"  {line}", highlight=False)
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}")
    verdict = (
        "[green]all tasks ended as expected[/green]" if result.ok else "[red]NOT as expected[/red]"
    )
    console.print(f"{verdict} in {result.seconds:.1f}s; sandbox {plain(result.sandbox)}")
    if keep:
        console.print("\nwhere to look next:")
        console.print(f"  artifacts and job logs: {result.home / 'tasks'}/<KEY>/")
        console.print(f"  the repo and its main:  git -C {result.repo} log --oneline main")
        console.print(f"  a task's history:       ORCH_HOME={result.home} orch task show DEMO-2")
        console.print(f"  alerts, status:         ORCH_HOME={result.home} orch status")
    else:
        console.print(
            "(run `orch demo --keep` to keep the home and explore it with orch task show)"
        )


def _forge_summary(result: object) -> None:
    """With ``--forge``: each task's issue and pull request, and what the CI said."""
    from orchestrator.demo_forge import ForgeDemoResult

    if not isinstance(result, ForgeDemoResult):
        return
    table = Table(title=f"forge {result.forge_repo} at {result.forge_url}")
    for col in ("task", "issue", "pull request", "ci on each head, oldest first"):
        table.add_column(col)
    for p in result.pulls:
        pull = "-" if p.pull is None else f"#{p.pull} {'merged' if p.merged else 'open'}"
        table.add_row(p.key, f"#{p.issue} {p.issue_state}", pull, " ".join(p.ci) or "-")
    console.print(table)
    for run in result.ci_runs:
        if run.conclusion != "success":
            console.print(
                f"ci {run.conclusion} on #{run.pull} at {run.sha[:12]}: {run.summary}",
                highlight=False,
            )
