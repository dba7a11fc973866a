"""A property: one definition, run by the suite at a few hundred examples and by the bench
at 100,000, each with a broken copy of its parser that the property must catch."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# A property may draw large or slowly built inputs (deep JSON, big XML): that is the point,
# so these health checks say nothing useful here. Timing is never asserted (deadline=None).
SUPPRESSED = (
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
)

Broken = Callable[[], AbstractContextManager[object]]


@dataclass
class Property:
    """A property of one parser: its check, its strategies, and a broken parser it catches."""

    name: str
    parser: str  # where the parser under test lives, e.g. "domain/verdicts.py parse_artifact"
    check: Callable[..., None]
    strategies: tuple[st.SearchStrategy[Any], ...]
    broken: Broken
    runs: int = 0  # examples the check really ran, counted inside the check

    def hypothesis_test(
        self, max_examples: int, *, database: bool = True, shrink: bool = True
    ) -> Callable[[], None]:
        """A Hypothesis test of this property; every call of the check adds to ``runs``."""

        @functools.wraps(self.check)
        def counted(*args: Any, **kwargs: Any) -> None:
            self.runs += 1
            self.check(*args, **kwargs)

        options: dict[str, Any] = {
            "max_examples": max_examples,
            "deadline": None,
            "suppress_health_check": SUPPRESSED,
        }
        if not database:
            options["database"] = None
        if not shrink:
            options["phases"] = (Phase.explicit, Phase.generate)
        return settings(**options)(given(*self.strategies)(counted))


PROPERTIES: dict[str, Property] = {}


def prop(
    parser: str, *strategies: st.SearchStrategy[Any], broken: Broken
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``check`` as a property of ``parser``, fed by ``strategies``."""

    def register(check: Callable[..., None]) -> Callable[..., None]:
        name = check.__name__
        assert name not in PROPERTIES, name
        PROPERTIES[name] = Property(name, parser, check, strategies, broken)
        return check

    return register


@contextlib.contextmanager
def patched(obj: object, attr: str, value: object) -> Iterator[None]:
    """``obj.attr`` replaced by ``value`` for the block (a broken copy of a parser)."""
    saved = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, saved)


# Every character that str.splitlines() ends a line at: what "one line" has to exclude.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"

# Text an attacker or a confused tool would write: shell metacharacters, option-looking
# words, control characters (no NUL), line breaks of every kind, unicode that renders
# misleadingly, path traversal, rich markup.
HOSTILE_WORDS = (
    "; rm -rf /",
    "$(id)",
    "`id`",
    "&&",
    "|",
    "'",
    '"',
    "\\",
    "--",
    "-",
    "--json",
    "-x",
    "../../etc/passwd",
    "..",
    "/",
    "~",
    "\x1b[31m",
    "\x7f",
    "\t",
    *LINE_BREAKS,
    "\u202e",
    "\u200b",
    "\ufeff",
    "é",
    "日本",
    "🙂",
    "[/x]",
    "[bold]",
    "%s",
    "{}",
    "{0}",
    "${HOME}",
    "*",
    "?",
)

hostile_text = st.one_of(
    st.text(),
    st.lists(st.sampled_from(HOSTILE_WORDS) | st.text(max_size=8), max_size=8).map("".join),
    st.characters(codec="utf-8", exclude_characters="\x00").map(lambda c: c * 200),
)
