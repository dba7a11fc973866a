"""`orch demo` on a terminal: the live board is drawn in place and the summary follows.

The README's first command is `orch demo` typed into a terminal; the other demo tests print
into a file or ask for ``--json``, where no live board is drawn. Here the real CLI runs in a
child process whose output is a pseudo-terminal, with the pipeline itself replaced by two
frames of the final board (the real pipeline is `tests/acceptance/test_demo.py`'s).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from orchestrator import demo
from orchestrator.cli import main
from unit.test_demo_render import final_rows


def run_demo(root: Path, on_tick=None) -> demo.DemoResult:
    on_tick(final_rows())
    on_tick(final_rows())
    return demo.DemoResult(
        home=root / "home", repo=root / "repo", tasks=[], main_log=["abc1234 first"],
        problems=[], seconds=1.0,
    )


demo.run_demo = run_demo
sys.argv = ["orch", "demo"]
main()
"""


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal (80 columns) as stdin, stdout and stderr."""
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), out.decode("utf-8", "replace")


def test_the_live_board_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    tests = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FORCE_", "NO_C"))}
    env.update(TERM="xterm", COLUMNS="80", LINES="40", TMPDIR=str(tmp_path))
    code, out = _on_a_terminal([sys.executable, "-c", CHILD.format(tests=tests)], env)
    assert "could not run" not in out, out
    assert code == 0, out
    hide, show = "\x1b[?25l", "\x1b[?25h"
    assert hide in out, out  # the board was drawn live, in place
    assert out.rindex(show) > out.rindex(hide), out  # and the cursor given back
    assert "DEMO-4" in out, out
    assert "summary" in out, out
