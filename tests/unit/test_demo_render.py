"""`orch demo`'s board and summary, printed into an 80-column file as `orch demo > out.txt`
does: titles on lines of their own, suggested commands whole, nothing folded mid-word."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import demo
from orchestrator.cli import demo_cmd

BORDER_CHARS = set("─━│┃┏┓┗┛┌┐└┘├┤┬┴┼╇╈╋┡┩╀╁╂")
LONG_REASON = (
    "monitor: 3 of 3 checks healthy; 3 required; the deployed version answers on "
    "http://127.0.0.1:40123/health with status ok"
)


def final_rows() -> list[dict[str, object]]:
    """The demo's last frame: four tasks done, the second rolled back once."""
    titles = ["Add subtract", "Add multiply", "Add divide", "Add power"]
    return [
        {
            "key": f"DEMO-{n}",
            "title": title,
            "stage": "post-deploy-monitor",
            "state": "done",
            "jobs": 7 if n == 2 else 5,
            "agent": "",
            "reason": LONG_REASON,
            "rollbacks": 1 if n == 2 else 0,
        }
        for n, title in enumerate(titles, start=1)
    ]


def final_result(root: Path) -> demo.DemoResult:
    verdicts = ["result PASSED", "staging PASSED", "merge MERGED", "deploy SUCCEEDED"]
    verdicts.append("monitor HEALTHY")
    tasks = [
        demo.TaskReport(
            str(r["key"]),
            str(r["title"]),
            "post-deploy-monitor",
            "done",
            int(str(r["jobs"])),
            int(str(r["rollbacks"])),
            12.5,
            list(verdicts),
        )
        for r in final_rows()
    ]
    main_log = [f"abc123{n} DEMO-{n}: {t.title}" for n, t in enumerate(tasks, start=1)]
    # A long temporary folder, as TMPDIR often is: the commands that name it pass 80 columns.
    deep = root / "a-rather-long-temporary-folder" / "orch-demo-k2j4h5g6"
    return demo.DemoResult(deep / "home", deep / "calc-repo", tasks, main_log, [], 21.3)


def render_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: list[list[dict[str, object]]]
) -> tuple[str, demo.DemoResult]:
    """Run `orch demo --keep`'s command on these frames, into an 80-column file."""
    result = final_result(tmp_path)

    def fake_run(
        root: Path, on_tick: Callable[[list[dict[str, object]]], None] | None = None
    ) -> demo.DemoResult:
        for rows in frames:
            if on_tick is not None:
                on_tick(rows)
        return result

    out = io.StringIO()
    monkeypatch.setattr(demo, "run_demo", fake_run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(demo_cmd, "console", Console(file=out, width=80, color_system=None))
    demo_cmd.demo(keep=True, as_json=False, forge=False)
    return out.getvalue(), result


def test_demo_renders_into_an_80_column_file_without_broken_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, result = render_demo(tmp_path, monkeypatch, [final_rows()])
    lines = text.splitlines()
    # No title shares a line with a border: each title is a line of its own.
    for title in ("orch demo", "summary"):
        holding = [ln for ln in lines if title in ln and not ln.startswith("orch demo:")]
        assert holding, (title, text)
        for ln in holding:
            assert not BORDER_CHARS & set(ln), (title, ln)
    # Every suggested command is whole on one line.
    commands = [
        f"git -C {result.repo} log --oneline main",
        f"ORCH_HOME={result.home} orch task show DEMO-2",
        f"ORCH_HOME={result.home} orch status",
    ]
    for command in commands:
        assert any(command in ln for ln in lines), (command, text)
    assert any("orch demo --keep" in ln for ln in lines) or "--keep" not in text
    # The tables fit the 80 columns, and each task's title is whole on its rows.
    table_lines = [ln for ln in lines if ln.startswith("DEMO-") or BORDER_CHARS & set(ln)]
    assert table_lines
    assert all(len(ln) <= 80 for ln in table_lines), text
    for r in final_rows():
        whole = [ln for ln in lines if ln.startswith(f"{r['key']} ") and str(r["title"]) in ln]
        assert len(whole) >= 2, (r["key"], text)  # its row on the board and in the summary
    # The reason is one line: no fragment of it starts a line of its own.
    assert not any(ln.strip().startswith(("health", "y; 3", "requir")) for ln in lines), text


def test_the_finished_board_shows_each_tasks_rollbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, _ = render_demo(tmp_path, monkeypatch, [final_rows()])
    summary_at = text.splitlines().index("summary")
    board = text.splitlines()[:summary_at]
    header = next(ln for ln in board if ln.startswith("task "))
    assert "rollbacks" in header
    at = header.index("rollbacks") + len("rollbacks")
    # A task's row on the board holds its title; its reason line below does not.
    titled = [ln for ln in board if ln.startswith("DEMO-") and " Add " in ln]
    counts = {ln.split()[0]: ln[:at].split()[-1] for ln in titled}
    assert counts == {"DEMO-1": "0", "DEMO-2": "1", "DEMO-3": "0", "DEMO-4": "0"}


@pytest.mark.parametrize("width", [80, 160])
def test_the_live_boards_columns_hold_still_between_frames(width: int) -> None:
    from orchestrator.cli.demo_board import LiveBoard

    first = [
        {**r, "stage": "development", "state": "active", "agent": "", "reason": "", "jobs": 0}
        for r in final_rows()
    ]
    middle = [
        {**r, "stage": "deploy-staging", "state": "active", "agent": "staging-runner"}
        for r in final_rows()
    ]
    shown = LiveBoard(width, started=0.0)
    headers = []
    for rows in (first, middle, final_rows()):
        out = io.StringIO()
        Console(file=out, width=width, color_system=None).print(shown.frame(rows))
        lines = out.getvalue().splitlines()
        headers.append(next(ln for ln in lines if ln.startswith("task ")))
        assert all(len(ln) <= width for ln in lines), lines
    assert headers[0] == headers[1] == headers[2], headers


def test_on_a_terminal_every_frame_has_the_same_columns(tmp_path: Path) -> None:
    """Redrawn in place on a terminal, from the first frame to the last."""
    import re

    from orchestrator.cli.demo_board import run_shown

    frames = [
        [{**r, "stage": "development", "state": "active", "agent": "", "jobs": 0} for r in rows]
        for rows in ([], final_rows())
    ]
    frames += [final_rows()] * 3

    def fake_run(
        root: Path, on_tick: Callable[[list[dict[str, object]]], None] | None = None
    ) -> demo.DemoResult:
        for rows in frames:
            assert on_tick is not None
            on_tick(rows)
        return final_result(tmp_path)

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    run_shown(console, fake_run, tmp_path, 0.0)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue()).replace("\r", "\n")
    headers = {ln.rstrip() for ln in text.split("\n") if ln.startswith("task ")}
    assert len(headers) == 1, headers
