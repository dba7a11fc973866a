"""Every parser's properties at 100,000 examples each: how many ran, failures, speed.

    python bench/parsers_fuzz.py [--examples 100000] [--only NAME ...] [--list]

The properties are the suite's own, defined once in tests/unit/parser_properties and run
by tests/unit/test_parser_properties.py at a few hundred examples. Here each one runs with
``max_examples=--examples``, no deadline and no example database. "examples" is what the
property really ran, counted inside it, not the setting: Hypothesis stops early when it has
tried every input a strategy can make, and a failure adds the runs spent shrinking it.
``--only`` takes a property's name or a part of it, and may be repeated.

Prints one row per property as it finishes (property, examples, failures, seconds,
examples/s), then the totals. No timing is asserted. Exits 1 if any property failed,
after printing each falsifying example.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from parser_properties import PROPERTIES  # noqa: E402


def failures_in(exc: BaseException) -> int:
    """Distinct failures in what Hypothesis raised (it groups them when it found several)."""
    if isinstance(exc, BaseExceptionGroup):
        return sum(failures_in(e) for e in exc.exceptions)
    return 1


def select(only: list[str]) -> list[str]:
    names = sorted(PROPERTIES)
    if not only:
        return names
    chosen = [n for n in names if any(o == n or o in n for o in only)]
    if not chosen:
        sys.exit(f"no property matches {only}; --list shows them")
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100_000, help="max_examples per property")
    p.add_argument("--only", action="append", default=[], metavar="NAME")
    p.add_argument("--list", action="store_true", help="list the properties and exit")
    args = p.parse_args()
    names = select(args.only)
    if args.list:
        for name in names:
            print(f"{name:48} {PROPERTIES[name].parser}")
        return

    print(f"== parser properties, max_examples={args.examples:,} each ({len(names)} properties)")
    header = f"{'property':48} {'examples':>9} {'failures':>8} {'seconds':>9} {'examples/s':>10}"
    print(header)
    print("-" * len(header), flush=True)
    failed: list[tuple[str, BaseException]] = []
    total_runs = total_failures = 0
    total_s = 0.0
    for name in names:
        prop = PROPERTIES[name]
        prop.runs = 0
        test = prop.hypothesis_test(args.examples, database=False)
        t0 = time.perf_counter()
        failures = 0
        try:
            test()
        except Exception as exc:  # a failing property: report it, go on with the others
            failures = failures_in(exc)
            failed.append((name, exc))
        seconds = time.perf_counter() - t0
        rate = prop.runs / seconds if seconds > 0 else float("inf")
        print(f"{name:48} {prop.runs:>9,} {failures:>8} {seconds:>9.1f} {rate:>10,.0f}", flush=True)
        total_runs += prop.runs
        total_failures += failures
        total_s += seconds
    print("-" * len(header))
    rate = total_runs / total_s if total_s > 0 else float("inf")
    print(
        f"{'total (' + str(len(names)) + ' properties)':48} {total_runs:>9,} "
        f"{total_failures:>8} {total_s:>9.1f} {rate:>10,.0f}"
    )
    for name, exc in failed:
        print(f"\n== FAILED: {name} ({PROPERTIES[name].parser})")
        print("".join(traceback.format_exception(exc)).rstrip())
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
