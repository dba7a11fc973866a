"""Protected test paths: the globs, what counts as a protected change, and the records.

Pure: the classification gets its contents from a dict, not from git (the integration
tests in tests/integration/test_test_cheats.py run it on real branches).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runners import protected as P
from orchestrator.runners import protected_changes as C
from orchestrator.runners import protected_globs as G
from orchestrator.runners.protected import ProtectedCheck
from orchestrator.runners.protected_changes import Entry, ProtectedChange

DEFAULTS = G.DEFAULT_PROTECTED_PATHS


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        # no "/": a file or folder of that name at any depth, and everything below a folder
        ("tests", "tests/test_calc.py", True),
        ("tests", "src/pkg/tests/data/x.json", True),
        ("tests", "tests", True),
        ("tests", "mytests/test_x.py", False),
        ("tests", "src/tests.py", False),
        ("conftest.py", "conftest.py", True),
        ("conftest.py", "a/b/conftest.py", True),
        ("conftest.py", "a/b/conftest.pyc", False),
        ("test_*.py", "pkg/test_core.py", True),
        ("test_*.py", "pkg/core_test.py", False),
        ("*_test.py", "pkg/core_test.py", True),
        # with "/": anchored at the top of the repo
        (".github/workflows", ".github/workflows/ci.yml", True),
        (".github/workflows", "sub/.github/workflows/ci.yml", False),
        ("/tests", "tests/a.py", True),
        ("/tests", "src/tests/a.py", False),
        ("src/**/fixtures", "src/a/b/fixtures/f.json", True),
        ("src/**/fixtures", "src/fixtures/f.json", True),
        ("src/**/fixtures", "lib/fixtures/f.json", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),
        ("docs/?.md", "docs/a.md", True),
        ("docs/[ab].md", "docs/b.md", True),
        ("docs/[!ab].md", "docs/b.md", False),
        # a trailing "/" names a folder, but matches like the bare name
        ("ci/", "ci/run", True),
    ],
)
def test_glob_matching(glob: str, path: str, expected: bool) -> None:
    assert G.matches(glob, path) is expected


@pytest.mark.parametrize(
    ("path", "protected"),
    [
        ("tests/test_calc.py", True),
        ("test/helpers.py", True),
        ("pkg/test_core.py", True),
        ("pkg/core_test.py", True),
        ("conftest.py", True),
        ("src/pkg/conftest.py", True),
        ("pytest.ini", True),
        ("tox.ini", True),
        ("noxfile.py", True),
        (".coveragerc", True),
        ("pyproject.toml", True),
        ("setup.cfg", True),
        (".github/workflows/ci.yml", True),
        (".gitlab-ci.yml", True),
        (".ci/run", True),
        ("Jenkinsfile", True),
        ("calc.py", False),
        ("src/pkg/core.py", False),
        ("README.md", False),
        ("docs/testing.md", False),
        ("latest.py", False),
    ],
)
def test_the_defaults_cover_tests_their_configuration_and_ci(path: str, protected: bool) -> None:
    assert (G.protected_by(DEFAULTS, path) is not None) is protected


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_new.py", True),
        ("tests/data/input.json", True),
        ("tests/helpers.py", True),
        ("pkg/test_new.py", True),
        ("pkg/new_test.py", True),
        ("web/app.spec.ts", True),
        ("tests/conftest.py", False),
        ("conftest.py", False),
        ("tests/pytest.ini", False),
        ("tests/pyproject.toml", False),
        (".github/workflows/new.yml", False),
        ("pkg/helpers.py", False),
    ],
)
def test_a_new_test_file_is_told_from_new_configuration(path: str, is_test: bool) -> None:
    assert G.is_test_file(path) is is_test


def _classify(entries: list[Entry], texts: dict[str, str] | None = None) -> list[ProtectedChange]:
    known = texts or {}
    return C.classify(entries, DEFAULTS, known.get)


def test_modified_and_deleted_test_files_are_protected_changes() -> None:
    found = _classify(
        [
            Entry("M", "tests/test_calc.py", "a1", "a2", "100644", "100644"),
            Entry("D", "tests/test_old.py", "b1", None, "100644", "000000"),
            Entry("M", "calc.py", "c1", "c2", "100644", "100644"),
        ]
    )
    assert [(c.path, c.kind) for c in found] == [
        ("tests/test_calc.py", "modified"),
        ("tests/test_old.py", "deleted"),
    ]
    assert str(found[0]) == "tests/test_calc.py (modified)"


def test_new_tests_are_allowed_new_configuration_is_not() -> None:
    found = _classify(
        [
            Entry("A", "tests/test_new.py", None, "n1", "000000", "100644"),
            Entry("A", "tests/data/case.json", None, "n2", "000000", "100644"),
            Entry("A", "conftest.py", None, "n3", "000000", "100644"),
            Entry("A", "tests/pytest.ini", None, "n4", "000000", "100644"),
            Entry("A", ".github/workflows/exfiltrate.yml", None, "n5", "000000", "100644"),
        ]
    )
    assert [(c.path, c.kind, c.detail) for c in found] == [
        (".github/workflows/exfiltrate.yml", "added", "not a test file"),
        ("conftest.py", "added", "configures the suite"),
        ("tests/pytest.ini", "added", "configures the suite"),
    ]


def test_only_an_executable_bit_is_not_a_change_but_a_symlink_is() -> None:
    found = _classify(
        [
            Entry("M", "tests/test_a.py", "same", "same", "100644", "100755"),
            Entry("T", "tests/test_b.py", "blob", "link", "100644", "120000"),
        ]
    )
    assert [c.path for c in found] == ["tests/test_b.py"]


PYPROJECT = '[project]\nname = "calc"\nversion = "1"\n'


@pytest.mark.parametrize(
    ("new", "held", "detail"),
    [
        # a dependency bump, a version: not the suite's business
        ('[project]\nname = "calc"\nversion = "2"\ndependencies = ["attrs"]\n', False, ""),
        # the same sections, written differently
        ('[project]\nversion = "1"\nname = "calc"\n', False, ""),
        (
            PYPROJECT + '[tool.pytest.ini_options]\naddopts = "--deselect tests/x.py::t"\n',
            True,
            "its test sections [tool.pytest]",
        ),
        (PYPROJECT + "[tool.coverage.run]\nomit = ['calc.py']\n", True, "[tool.coverage]"),
        ("this is = not [toml", True, "cannot be read as pyproject.toml"),
    ],
)
def test_pyproject_only_its_test_sections_count(new: str, held: bool, detail: str) -> None:
    found = _classify(
        [Entry("M", "pyproject.toml", "old", "new", "100644", "100644")],
        {"old": PYPROJECT, "new": new},
    )
    assert bool(found) is held
    if held:
        assert detail in found[0].detail


def test_a_new_pyproject_counts_by_its_sections_too() -> None:
    plain = _classify([Entry("A", "sub/pyproject.toml", None, "p")], {"p": PYPROJECT})
    configured = _classify(
        [Entry("A", "tests/pyproject.toml", None, "p")],
        {"p": "[tool.pytest.ini_options]\naddopts = '-k nothing'\n"},
    )
    assert plain == []
    assert [(c.path, c.kind) for c in configured] == [("tests/pyproject.toml", "added")]


SETUP_CFG = "[metadata]\nname = calc\n\n[tool:pytest]\ntestpaths = tests\n"


@pytest.mark.parametrize(
    ("new", "held"),
    [
        ("[metadata]\nname = calc2\n\n[tool:pytest]\ntestpaths = tests\n", False),
        ("[metadata]\nname = calc\n\n[tool:pytest]\ntestpaths = tests\naddopts = --co\n", True),
        (SETUP_CFG + "\n[coverage:run]\nomit = calc.py\n", True),
        ("[tool:pytest]\n[tool:pytest]\n", True),  # duplicate section: cannot be read
    ],
)
def test_setup_cfg_only_its_test_sections_count(new: str, held: bool) -> None:
    found = _classify(
        [Entry("M", "setup.cfg", "old", "new", "100644", "100644")],
        {"old": SETUP_CFG, "new": new},
    )
    assert bool(found) is held


def test_files_beside_the_branch_count_as_added() -> None:
    found = _classify(
        [
            Entry("?", "conftest.py", None, "sha256:c"),
            Entry("?", "tests/test_scratch.py", None, "sha256:t"),
            Entry("?", "notes.txt", None, "sha256:n"),
        ]
    )
    assert [(c.path, c.kind) for c in found] == [("conftest.py", "untracked")]
    assert "not in the branch" in found[0].detail


@pytest.mark.parametrize(
    ("path", "skipped"),
    [
        (".venv/lib/python3.11/site-packages/pkg/conftest.py", True),
        ("venv/lib/pkg/tests/conftest.py", True),
        ("build/lib/tests/conftest.py", True),
        ("node_modules/x/conftest.py", True),
        ("conftest.py", False),
        ("tests/conftest.py", False),
        ("src/pkg/tests/conftest.py", False),
    ],
)
def test_files_where_pytest_never_collects_are_not_judged(path: str, skipped: bool) -> None:
    assert G.uncollected(path) is skipped


def test_the_fingerprint_is_bound_to_the_content() -> None:
    a = [ProtectedChange("tests/t.py", "modified", "", "blob1")]
    b = [ProtectedChange("tests/t.py", "modified", "", "blob2")]
    two = [ProtectedChange("conftest.py", "added", "x", "c"), *a]
    assert C.fingerprint(a) != C.fingerprint(b)
    assert C.fingerprint(two) == C.fingerprint(list(reversed(two)))


def test_parse_globs() -> None:
    assert G.parse_globs(["tests,conftest.py", " ci/ ", "tests"]) == ["tests", "conftest.py", "ci/"]
    assert G.parse_globs([""]) == []
    assert G.parse_globs("a, b") == ["a", "b"]
    for bad in ("../outside", "**", "*", "a\nb", "x" * 300):
        with pytest.raises(ValueError, match="--protected-paths"):
            G.parse_globs([bad])


def test_globs_of_the_repo_or_the_defaults() -> None:
    assert G.globs_of({})[0] == DEFAULTS
    assert G.globs_of({"protected_paths": None})[0] == DEFAULTS
    assert G.globs_of({"protected_paths": ["spec"]}) == (("spec",), "the repo's protected paths")
    # A malformed value never switches the protection off.
    globs, whose = G.globs_of({"protected_paths": "spec"})
    assert globs == DEFAULTS
    assert "malformed" in whose
    assert G.globs_of({"protected_paths": []})[0] == DEFAULTS


def test_a_hold_becomes_an_approval_of_exactly_its_changes(tmp_path: Path) -> None:
    change = ProtectedChange("conftest.py", "added", "configures the suite", "c1")
    found = ProtectedCheck((change,), C.fingerprint([change]), "the default protected paths", "b")
    assert P.approve_hold(tmp_path, "cli", 1.0) is None  # nothing waits: nothing approved
    P.note_hold(tmp_path, found, 1.0)
    assert P.pending_hold(tmp_path) is not None
    assert P.approval_of(tmp_path, found.fingerprint) is None

    saved = P.snapshot(tmp_path)
    assert P.approve_hold(tmp_path, "cli", 2.0) == ["conftest.py (added: configures the suite)"]
    assert P.pending_hold(tmp_path) is None
    assert P.approval_of(tmp_path, found.fingerprint) == [change]
    other = ProtectedChange("conftest.py", "added", "configures the suite", "c2")
    assert P.approval_of(tmp_path, C.fingerprint([other])) is None

    # A transaction that did not commit puts the record back as it was.
    P.restore(tmp_path, saved)
    assert P.approval_of(tmp_path, found.fingerprint) is None
    assert P.pending_hold(tmp_path) is not None


def test_an_unreadable_record_approves_nothing(tmp_path: Path) -> None:
    P.record_path(tmp_path).write_text("{not json")
    assert P.approval_of(tmp_path, "anything") is None
    assert P.pending_hold(tmp_path) is None


def test_held_needs_changes_no_problem_and_no_approval() -> None:
    change = ProtectedChange("tests/t.py", "deleted", "", "deleted")
    assert ProtectedCheck((change,), "f").held
    assert not ProtectedCheck((change,), "f", approved=True).held
    assert not ProtectedCheck((), "").held
    assert not ProtectedCheck((change,), "f", problem="git failed").held
