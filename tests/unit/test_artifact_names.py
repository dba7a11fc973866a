"""An artifact's name is exactly the contract's shape: two ASCII digits, a dash, lowercase
ASCII letters, digits and dashes, ``.md``, and nothing after it.

Python's ``\\d`` takes any Unicode digit (``١٠``, ``１０``) and ``$`` matches before a
final newline: a name such as ``"10-dev-report.md\\n"`` passed, and named another file
than the one every check and every record means."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import taskdir
from orchestrator.api import files
from orchestrator.domain import artifacts as A

NOT_NAMES = [
    "10-dev-report.md\n",  # a newline after the name
    "\u0661\u0660-dev-report.md",  # Arabic-Indic digits
    "\uff11\uff10-dev-report.md",  # fullwidth digits
    "1-dev-report.md",
    "10-Dev-report.md",
    "10-dev-report.md.bak",
    "../10-dev-report.md",
]


@pytest.mark.parametrize("name", NOT_NAMES)
def test_a_name_of_another_shape_is_no_artifact(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "tasks" / "T-1"
    folder.mkdir(parents=True)
    if "/" not in name:
        (folder / name).write_text("---\ndev_status: DONE\n---\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not an artifact name"):
        taskdir.load_artifact(folder, name)
    assert taskdir.list_artifacts(folder) == []
    assert files.artifact_path(tmp_path / "tasks", "T-1", name) is None


def test_every_contract_name_is_an_artifact_name(tmp_path: Path) -> None:
    folder = tmp_path / "tasks" / "T-1"
    folder.mkdir(parents=True)
    for name in A.ARTIFACTS:
        (folder / name).write_text("x\n", encoding="utf-8")
    assert taskdir.list_artifacts(folder) == sorted(A.ARTIFACTS)
    for name in A.ARTIFACTS:
        assert files.artifact_path(tmp_path / "tasks", "T-1", name) == folder / name
