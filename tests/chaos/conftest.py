"""The chaos tier: every test under tests/chaos is marked ``chaos`` (and ``slow``).

The default ``pytest -q`` (and CI) still runs them; ``-m "not slow and not chaos"`` leaves
them out of the fast tier. Marked here, at collection, so a new chaos module cannot forget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHAOS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    for item in items:
        if CHAOS_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.slow)
