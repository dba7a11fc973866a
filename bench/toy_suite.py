"""What a toy repo's pytest run costs with this interpreter, plugins autoloaded or not.

    python bench/toy_suite.py [--runs 8]

The tests' toy repos (chaos, the merge gate's bed, the runner tests, the demo) run their
two-test suites with this interpreter's pytest. In the test environment that pytest
autoloads the test extras' plugins (hypothesis, schemathesis, anyio) on every run; the
suites need none of them, so the tests run them with ``--disable-plugin-autoload``. This
prints the seconds of one run each way, interleaved in one process so both see the same
load, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path

TEST = "def test_one():\n    assert 1 + 1 == 2\n\n\ndef test_two():\n    assert 'a' in 'abc'\n"
BASE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
WAYS = {
    "autoloaded (before)": BASE,
    "--disable-plugin-autoload": [*BASE, "--disable-plugin-autoload"],
}


def one_run(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds of one pytest run of the toy suite; raises when it does not pass."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        msg = f"{argv} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        raise RuntimeError(msg)
    return took


def main(argv: list[str] | None = None) -> int:
    """Run both ways ``--runs`` times, interleaved; print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args(argv)
    plugins = sorted(ep.name for ep in entry_points(group="pytest11"))
    print(f"autoloaded plugins here: {', '.join(plugins) or 'none'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="orch-toy-suite-") as tmp:
        repo = Path(tmp)
        (repo / "test_toy.py").write_text(TEST)
        for _ in range(args.runs):
            for way, cmd in WAYS.items():
                times[way].append(one_run(cmd, repo, env))
    width = max(len(way) for way in WAYS)
    for way, got in times.items():
        print(f"{way:<{width}}  median {statistics.median(got):6.2f} s  max {max(got):6.2f} s")
    before, after = (statistics.median(times[way]) for way in WAYS)
    print(f"ratio before/after: {before / after:.1f}x over {args.runs} interleaved runs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
