"""Text that is not ours, quoted so that no reader takes it for our own words.

An agent's text (a failing report, a CLI's error, a test report an LLM wrote) reaches
readers that read markdown: the next agent's prompt, and on a forge the comments and pull
requests the orchestrator writes in the user's name. Put in one fenced code block that no
line of it can close, it stays text to all of them: no heading it mimics, no instruction
after it swallowed, and on a forge no mention (a notification to whoever it names), image
(fetched by every reader's browser) or link.
"""

from __future__ import annotations

import re

__all__ = ["fence_text"]

_BACKTICK_RUN_RE = re.compile(r"`+")


def fence_text(text: str) -> str:
    """``text`` as one fenced code block that no line of it can close.

    A backtick fence closes only at a line of at least as many backticks (CommonMark), so a
    fence one longer than the longest run of backticks anywhere in ``text`` (three at least)
    holds all of it: an open fence, a line of ten backticks, ``~~~``. Every line break
    becomes a LF: a lone CR or U+2028 ends a line for some readers and not for others, and
    the text must be the same lines to all of them.
    """
    longest = max((len(run) for run in _BACKTICK_RUN_RE.findall(text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return "\n".join([f"{ticks}text", *text.splitlines(), ticks])
