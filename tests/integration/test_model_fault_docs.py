"""``docs/reliability.md`` and ``docs/llm-usage-policy.md`` say what each model-API failure
leads to, as ``model_faults_doc.ROWS`` says it, and every row names a test that exists.

Regenerate: ``ORCH_WRITE_MODEL_FAULT_DOCS=1 pytest tests/integration/test_model_fault_docs.py``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from model_faults_doc import BEGIN, END, ROWS, render, splice

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "reliability.md", ROOT / "docs" / "llm-usage-policy.md"]
WRITE_ENV = "ORCH_WRITE_MODEL_FAULT_DOCS"


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


@pytest.mark.parametrize("row", ROWS, ids=[r.test.rsplit("::", 1)[-1] for r in ROWS])
def test_every_row_names_a_test_that_exists(row: object) -> None:
    path, _, name = row.test.partition("::")  # type: ignore[attr-defined]
    assert name in _tests_in(ROOT / path), f"{row.test} does not exist"  # type: ignore[attr-defined]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_show_the_rows(doc: Path) -> None:
    text = doc.read_text()
    assert BEGIN in text, f"{doc.name} has no generated model-faults section"
    assert END in text
    if os.environ.get(WRITE_ENV):
        doc.write_text(splice(text))
        text = doc.read_text()
    assert render() in text, f"{doc.name} is stale: run with {WRITE_ENV}=1"
