"""docs/security.md is generated from the tests that play each attacker; it must be current."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The task-text attacks are unit tests: their folder, for their rows.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

import test_task_text

try:
    import test_api_security
    import test_dashboard_attacks
    import test_forged_verdicts
    import test_llm_spend
    import test_name_bytes
    import test_private_files
    import test_pull_land
    import test_sandbox
    import test_sandbox_start
    import test_test_cheats
    import test_unstorable
    from security_doc import DOC, WRITE_ENV, Defended, render
except ImportError:  # imported as tests.integration.test_security_doc
    from tests.integration import (
        test_api_security,
        test_dashboard_attacks,
        test_forged_verdicts,
        test_llm_spend,
        test_name_bytes,
        test_private_files,
        test_pull_land,
        test_sandbox,
        test_sandbox_start,
        test_test_cheats,
        test_unstorable,
    )
    from tests.integration.security_doc import DOC, WRITE_ENV, Defended, render


def test_security_doc_is_current() -> None:
    defended = [
        *test_forged_verdicts.DEFENDED,
        *(Defended(**row) for row in test_test_cheats.DEFENDED),
        *(Defended(**row) for row in test_name_bytes.DEFENDED),
        *(Defended(**row) for row in test_unstorable.DEFENDED),
        *(Defended(**row) for row in test_pull_land.DEFENDED),
        *(Defended(**row) for row in test_api_security.DEFENDED),
        *(Defended(**row) for row in test_private_files.DEFENDED),
        *(Defended(**row) for row in test_dashboard_attacks.DEFENDED),
        *(Defended(**row) for row in test_task_text.DEFENDED),
        *(Defended(**row) for row in test_llm_spend.DEFENDED),
        *(Defended(**row) for row in test_sandbox_start.DEFENDED),
        *(Defended(**row) for row in test_sandbox.DEFENDED),
    ]
    text = render(test_sandbox.ATTACKS, defended)
    if os.environ.get(WRITE_ENV):
        DOC.write_text(text)
    assert DOC.exists(), f"docs/security.md is missing: run with {WRITE_ENV}=1"
    assert DOC.read_text() == text, "docs/security.md is stale: regenerate it"
