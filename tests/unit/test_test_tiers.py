"""The README's test tiers hold: every marker its commands select on is registered.

A misspelt marker in ``-m "not slow and not chaos"`` selects silently (``--strict-markers``
checks marks on tests, not ``-m`` expressions), so the fast tier would quietly run
everything, or nothing, if a marker in the README had no registration in pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# pytest's -m on one line of a command (`python -m pytest` is a module, not a marker).
_DASH_M = re.compile(r"""\bpytest\b[^`\n]*?\s-m\s+(?:"([^"]+)"|'([^']+)'|(\w+))""")
_KEYWORDS = {"and", "or", "not"}


def registered_markers(pyproject: str) -> set[str]:
    """The markers pyproject.toml's pytest section declares."""
    lines = tomllib.loads(pyproject)["tool"]["pytest"]["ini_options"]["markers"]
    return {line.split(":", 1)[0].strip() for line in lines}


def tier_problems(readme: str, markers: set[str]) -> list[str]:
    """Markers a ``-m`` expression of the README names that are not registered."""
    problems = []
    expressions = ["".join(groups) for groups in _DASH_M.findall(readme)]
    if not expressions:
        return ["the README names no pytest `-m` tier"]
    for expr in expressions:
        for word in re.findall(r"\w+", expr):
            if word not in _KEYWORDS and word not in markers:
                problems.append(f"`-m {expr}` names {word!r}, which is not a registered marker")
    return problems


def test_the_readme_tiers_name_registered_markers() -> None:
    markers = registered_markers((ROOT / "pyproject.toml").read_text())
    assert {"slow", "chaos"} <= markers
    assert tier_problems((ROOT / "README.md").read_text(), markers) == []


def test_the_tier_check_fails_on_mutated_copies() -> None:
    markers = registered_markers((ROOT / "pyproject.toml").read_text())
    readme = (ROOT / "README.md").read_text()
    assert '-m "not slow and not chaos"' in readme
    typo = readme.replace('-m "not slow and not chaos"', '-m "not slow and not choas"')
    assert tier_problems(typo, markers) == [
        "`-m not slow and not choas` names 'choas', which is not a registered marker"
    ]
    assert tier_problems(readme, markers - {"chaos"}) != []
    assert tier_problems("no tiers here", markers) == ["the README names no pytest `-m` tier"]
