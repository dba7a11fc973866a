"""`orch demo`: four tasks through the whole pipeline, live, in a throwaway home."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from orchestrator.cli._common import console, fail, print_json, real_console, to_jsonable

if TYPE_CHECKING:
    from orchestrator.demo import DemoResult


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
    from orchestrator.cli import demo_board

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
            console.print(Text(f"orch demo: a throwaway {where} in {root}"), soft_wrap=True)
            result = demo_board.run_shown(real_console(console), run, root, started)
    except Exception as exc:
        if not keep:
            demo_mod.remove(root)
        fail(f"the demo could not run: {exc}", 1)
    if as_json:
        print_json({**to_jsonable(result), "ok": result.ok})
    else:
        demo_board.print_summary(console, result, keep)
    if not keep:
        demo_mod.remove(root)
    if not result.ok:
        raise typer.Exit(1)
