"""What `orch demo` prints: its live board, its summary and where to look next.

Made to read the same in a terminal, in a file and at 80 columns: the board's column widths
come from what its cells can ever hold (the pipeline's stage names, the states, the tasks'
keys and titles as filed), not from the frame at hand, so they hold still between frames;
nothing is wrapped inside a word (a cell too narrow ends in an ellipsis; a reason is one
line of its own); a suggested command is printed whole on one line, for the terminal to
fold if it must; and each title stands on a line of its own, above its table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.domain.stages import Stage, State

if TYPE_CHECKING:
    from orchestrator.demo import DemoResult

Row = Mapping[str, object]

STATE_STYLE = {"done": "green", "blocked": "red", "deferred": "yellow", "cancelled": "dim"}
# An active task whose job is running shows "running"; one waiting for a slot, "active".
RUNNING = "running"
# Every label the stage and state columns can hold: their widths, fixed before the first frame.
STAGE_WIDTH = max(len(s.value) for s in Stage)
STATE_WIDTH = max(len(label) for label in (RUNNING, *(s.value for s in State)))
JOBS_HEADER = "jobs"
ROLLBACKS_HEADER = "rollbacks"
# What one column costs besides its cells in the tables below: one padding space each side
# and the divider between them (box.SIMPLE_HEAD draws no outer edge).
GAP = 3
MIN_TITLE = len("title")


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)


@dataclass(frozen=True)
class BoardLayout:
    """The board's column widths, fixed once for a run."""

    key: int
    title: int

    @classmethod
    def fit(cls, rows: Sequence[Row], width: int) -> BoardLayout:
        """Widths for these tasks (every task of the run, as filed) within ``width`` columns:
        the title takes what the fixed columns leave, and no more than its longest."""
        key = max([len("task"), *(len(str(r["key"])) for r in rows)])
        fixed = key + STAGE_WIDTH + STATE_WIDTH + len(JOBS_HEADER) + len(ROLLBACKS_HEADER)
        room = width - fixed - GAP * 5
        longest = max([MIN_TITLE, *(len(str(r["title"])) for r in rows)])
        return cls(key=key, title=max(MIN_TITLE, min(longest, room)))


def _state_label(row: Row) -> tuple[str, str]:
    state = str(row["state"])
    if state == State.ACTIVE.value and row.get("agent"):
        return RUNNING, "cyan"
    return state, STATE_STYLE.get(state, "cyan")


def board(rows: Sequence[Row], layout: BoardLayout, elapsed_s: float) -> RenderableType:
    """One frame: a title line, one row per task (where it is, its jobs, how often it was
    rolled back to development), then each task's last reason on a line of its own."""
    table = _table()
    fixed: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis"}
    table.add_column("task", width=layout.key, **fixed)
    table.add_column("title", width=layout.title, **fixed)
    table.add_column("stage", width=STAGE_WIDTH, **fixed)
    table.add_column("state", width=STATE_WIDTH, **fixed)
    table.add_column(JOBS_HEADER, width=len(JOBS_HEADER), justify="right", **fixed)
    table.add_column(ROLLBACKS_HEADER, width=len(ROLLBACKS_HEADER), justify="right", **fixed)
    reasons: list[Text] = []
    for r in rows:
        label, style = _state_label(r)
        back = int(str(r.get("rollbacks") or 0))
        table.add_row(
            Text(str(r["key"])),
            Text(str(r["title"])),
            Text(str(r["stage"])),
            Text(label, style=style),
            Text(str(r["jobs"])),
            Text(str(back), style="yellow" if back else "dim"),
        )
        reason = " ".join(str(r.get("reason") or "-").split())
        line = Text(f"{r['key']!s:<{layout.key}}  ", style="bold")
        line.append(reason, style="dim")
        line.no_wrap, line.overflow = True, "ellipsis"
        reasons.append(line)
    head = Text(f"orch demo  {elapsed_s:5.1f}s", style="bold")
    last = Text("last reason of each task:")
    return Group(head, table, Text(""), last, *reasons)


class LiveBoard:
    """The board across a run: the layout is fixed at the first frame that has tasks (the
    demo files all of them before it starts the worker), and the last rows are kept."""

    def __init__(self, width: int, started: float) -> None:
        self.width = width
        self.started = started
        self.rows: list[Row] = []
        self.layout: BoardLayout | None = None

    def frame(self, rows: Sequence[Row] | None = None) -> RenderableType:
        """The board for ``rows`` (the last ones when None)."""
        if rows is not None:
            self.rows = list(rows)
        if self.layout is None and self.rows:
            self.layout = BoardLayout.fit(self.rows, self.width)
        layout = self.layout or BoardLayout.fit([], self.width)
        return board(self.rows, layout, time.time() - self.started)


def run_shown(
    console: Console,
    run: Callable[..., DemoResult],
    root: Path,
    started: float,
) -> DemoResult:
    """Run the demo with its board: redrawn in place on a terminal; into a file or a pipe,
    printed once at the end (a redrawn board there is only its last frame, unterminated)."""
    shown = LiveBoard(console.width, started)
    if not console.is_terminal:
        result = run(root, on_tick=shown.frame)
        console.print(shown.frame())
        return result
    from rich.live import Live  # only a terminal needs it

    # Started at the first frame with tasks: an empty board first would have other widths.
    live: Live | None = None

    def tick(rows: Sequence[Row]) -> None:
        nonlocal live
        if live is None:
            live = Live(shown.frame(rows), console=console, refresh_per_second=8)
            live.start()
        else:
            live.update(shown.frame(rows))

    try:
        return run(root, on_tick=tick)
    finally:
        if live is not None:
            live.stop()


def _command(console: Console, label: str, command: str) -> None:
    """A suggested command, whole on its own line: never folded inside a word."""
    console.print(f"  {label}:", highlight=False)
    console.print(Text(f"    {command}"), soft_wrap=True, highlight=False)


def print_summary(console: Console, result: DemoResult, keep: bool) -> None:
    """Each task's end, the forge's side when there is one, main's log, the verdict, and
    where to look next."""
    console.print()
    console.print(Text("summary", style="bold"))
    table = _table()
    for col in ("task", "title", "state", "jobs", ROLLBACKS_HEADER, "time"):
        right = col in ("jobs", ROLLBACKS_HEADER, "time")
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", justify="right" if right else "left"
        )
    table.add_column("verdicts", no_wrap=True)
    for t in result.tasks:
        table.add_row(
            Text(t.key),
            Text(t.title),
            Text(t.state, style=STATE_STYLE.get(t.state, "")),
            str(t.attempts),
            Text(str(t.rollbacks), style="yellow" if t.rollbacks else ""),
            f"{t.seconds:.1f}s",
            "\n".join(t.verdicts),
        )
    console.print(table)
    for t in result.tasks:
        for problem in t.problems:
            console.print(Text.assemble(("problem: ", "red"), f"{t.key}: {problem}"))
    _forge_summary(console, result)
    console.print()
    console.print("main, newest first:")
    for line in result.main_log:
        console.print(Text(f"  {line}"), soft_wrap=True, highlight=False)
    for problem in result.problems:
        console.print(Text.assemble(("problem: ", "red"), problem))
    verdict = (
        Text("all tasks ended as expected", style="green")
        if result.ok
        else Text("NOT as expected", style="red")
    )
    verdict.append(f" in {result.seconds:.1f}s; sandbox {result.sandbox}", style="")
    console.print(verdict, highlight=False)
    if keep:
        console.print("\nwhere to look next:")
        console.print("  artifacts and job logs:", highlight=False)
        console.print(Text(f"    {result.home / 'tasks'}/<KEY>/"), soft_wrap=True)
        for label, command in suggested_commands(result):
            _command(console, label, command)
    else:
        console.print(
            Text("(run `orch demo --keep` to keep the home and explore it with orch task show)"),
            soft_wrap=True,
        )


def suggested_commands(result: DemoResult) -> list[tuple[str, str]]:
    """The commands `orch demo --keep` suggests, each with what it shows."""
    home = result.home
    # The history worth reading first is a rolled-back task's.
    shown = next((t.key for t in result.tasks if t.rollbacks), None)
    shown = shown or (result.tasks[0].key if result.tasks else "DEMO-1")
    return [
        ("the repo and its main", f"git -C {result.repo} log --oneline main"),
        ("a task's history", f"ORCH_HOME={home} orch task show {shown}"),
        ("alerts, status", f"ORCH_HOME={home} orch status"),
    ]


def _forge_summary(console: Console, result: DemoResult) -> None:
    """With ``--forge``: each task's issue and pull request, and what the CI said."""
    from orchestrator.demo_forge import ForgeDemoResult

    if not isinstance(result, ForgeDemoResult):
        return
    console.print()
    console.print(Text(f"forge {result.forge_repo} at {result.forge_url}", style="bold"))
    table = _table()
    for col in ("task", "issue", "pull request", "ci on each head, oldest first"):
        table.add_column(col)
    for p in result.pulls:
        pull = "-" if p.pull is None else f"#{p.pull} {'merged' if p.merged else 'open'}"
        table.add_row(p.key, f"#{p.issue} {p.issue_state}", pull, " ".join(p.ci) or "-")
    console.print(table)
    for run in result.ci_runs:
        if run.conclusion != "success":
            console.print(
                Text(f"ci {run.conclusion} on #{run.pull} at {run.sha[:12]}: {run.summary}"),
                highlight=False,
            )
