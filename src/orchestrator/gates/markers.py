"""Regression markers: symbols tasks put on main, which no later merge may drop.

A repo's ``regression_markers`` option lists them (``MAIN_REGRESSION_MARKERS``:
``orch repo add --regression-marker ID:SYMBOL:PATH``). ``parse_markers`` reads the option
(``ops`` checks it when it is set, the merge gate when it runs); ``check_markers`` tells the
merge gate which markers on main a candidate commit would drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gitops import merge as gm


@dataclass(frozen=True)
class Marker:
    """A symbol a task put on main, which every later merge must keep."""

    task: str
    symbol: str
    path: str

    def __str__(self) -> str:
        return f"{self.task}: {self.symbol!r} in {self.path}"


def parse_markers(options: Mapping[str, object]) -> tuple[list[Marker], list[str]]:
    """``MAIN_REGRESSION_MARKERS``: ``options["regression_markers"]``, and what is malformed."""
    raw = options.get("regression_markers")
    if raw is None:
        return [], []
    # Anything else that is not a list ("", {}, 0 ...) is malformed, not "no markers": read
    # as none, it would switch the check off without a word.
    if not isinstance(raw, list):
        return [], [f"regression_markers must be a list, got {type(raw).__name__}"]
    found: list[Marker] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        fields = item if isinstance(item, dict) else {}
        values = [fields.get(k) for k in ("task", "symbol", "path")]
        if not all(isinstance(v, str) and v for v in values):
            problems.append(f"regression_markers[{i}] needs task, symbol and path: {item!r}")
            continue
        found.append(Marker(*(str(v) for v in values)))
    return found, problems


def check_markers(
    worktree: Path, base: str, candidate: str, markers: Sequence[Marker]
) -> tuple[list[str], list[str], list[str]]:
    """(dropped, notes, git problems): markers on ``base`` that ``candidate`` would drop.

    A marker already missing from main is noted, not held against this merge.
    """
    dropped: list[str] = []
    notes: list[str] = []
    problems: list[str] = []
    for marker in markers:
        on_main, why = gm.path_has_symbol(worktree, base, marker.path, marker.symbol)
        if on_main is None:
            problems.append(f"regression marker {marker}: {why}")
            continue
        if not on_main:
            notes.append(f"regression marker {marker} is already missing on main: {why}")
            continue
        kept, why = gm.path_has_symbol(worktree, candidate, marker.path, marker.symbol)
        if kept is None:
            problems.append(f"regression marker {marker}: {why}")
        elif not kept:
            dropped.append(f"the merge would drop regression marker {marker}: {why}")
    return dropped, notes, problems
