"""Which paths are protected: the globs, the defaults, and the files they treat apart.

A repo's protected paths are its own list (``orch repo set NAME --protected-paths GLOBS``,
checked by ``parse_globs``) or ``DEFAULT_PROTECTED_PATHS``: the tests, their configuration
and CI. A glob is matched against repo-relative "/" paths (``matches``). Besides the globs:
which new file is a test file (``is_test_file``: allowed, it counts as any test does),
which files configure the suite (``SUITE_CONFIG_FILES``: a new one is never a test file),
of which files only the test sections count (``SECTIONED_FILES``), and which folders pytest
never collects from (``uncollected``). Pure: no git, no file is read.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

# The defaults for a Python repo. A glob without a "/" matches a file or folder of that
# name at any depth; one with a "/" is anchored at the top of the repo; a folder matches
# everything below it; "**" spans folders.
# Files that configure the suite: a new one is never "a new test file". (Of
# ``pyproject.toml`` and ``setup.cfg`` only their pytest and coverage sections are
# protected: SECTIONED_FILES.)
SUITE_CONFIG_FILES: tuple[str, ...] = (
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "tox.ini",
    "noxfile.py",
    ".coveragerc",
    "pyproject.toml",
    "setup.cfg",
)
SUITE_CONFIG_NAMES = frozenset(SUITE_CONFIG_FILES)
DEFAULT_PROTECTED_PATHS: tuple[str, ...] = (
    # the test directories and test modules
    "tests",
    "test",
    "test_*.py",
    "*_test.py",
    # the suite's configuration
    *SUITE_CONFIG_FILES,
    # CI configuration
    ".github/workflows",
    ".github/actions",
    ".gitlab-ci.yml",
    ".circleci",
    ".buildkite",
    ".travis.yml",
    "azure-pipelines.yml",
    "Jenkinsfile",
    ".ci",
)
# Files of which only the test sections are protected.
SECTIONED_FILES = frozenset({"pyproject.toml", "setup.cfg"})
# A new file is a test file when its name says so, or when it lies in a test folder.
TEST_FILE_NAMES = ("test_*", "*_test.*", "*.test.*", "*_spec.*", "*.spec.*")
TEST_DIR_NAMES = frozenset({"tests", "test", "spec", "specs", "__tests__"})

# Folders pytest never collects from by default (its ``norecursedirs``, which only the
# protected configuration could change): a file beside the branch in one of them (a
# virtualenv the agent made, a build) neither runs nor configures the suite.
UNCOLLECTED_DIRS = (
    "*.egg",
    ".*",
    "_darcs",
    "build",
    "CVS",
    "dist",
    "node_modules",
    "venv",
    "{arch}",
)

_MAX_GLOBS = 100
_MAX_GLOB_CHARS = 200


def _translate(glob: str) -> str:
    """A glob as a regular expression over "/"-separated paths ("**" spans folders)."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                if glob.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The expression of one protected-path glob (see ``DEFAULT_PROTECTED_PATHS``)."""
    anchored = glob.startswith("/") or "/" in glob.strip("/")
    body = _translate(glob.strip("/"))
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}(?:/.*)?$", re.DOTALL)


def matches(glob: str, path: str) -> bool:
    """Whether the repo-relative ``path`` is under the protected-path ``glob``."""
    return compile_glob(glob).match(path) is not None


def protected_by(globs: Sequence[str], path: str) -> str | None:
    """The first glob that protects ``path``, or None."""
    for glob in globs:
        if matches(glob, path):
            return glob
    return None


def parse_globs(values: Sequence[str] | str) -> list[str]:
    """``--protected-paths`` values (repeatable, each may be a comma list), checked; ``[]``
    means "the defaults". Raises ValueError naming the bad value."""
    given = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for value in given:
        for raw in value.split(","):
            glob = raw.strip()
            if not glob:
                continue
            problem = None
            if len(glob) > _MAX_GLOB_CHARS:
                problem = f"at most {_MAX_GLOB_CHARS} characters"
            elif any(ord(c) < 32 or ord(c) == 127 for c in glob):
                problem = "no control characters"
            elif ".." in PurePosixPath(glob.strip("/")).parts:
                problem = "relative to the top of the repo, without '..'"
            elif glob.strip("/") in ("", "**", "*"):
                problem = "that would protect every file (a change could not touch any)"
            if problem is None:
                try:
                    compile_glob(glob)
                except re.error as exc:
                    problem = f"not a glob: {exc}"
            if problem is not None:
                msg = f"--protected-paths {glob!r}: {problem}"
                raise ValueError(msg)
            if glob not in out:
                out.append(glob)
    if len(out) > _MAX_GLOBS:
        msg = f"--protected-paths: at most {_MAX_GLOBS} globs (got {len(out)})"
        raise ValueError(msg)
    return out


def globs_of(options: Mapping[str, object] | None) -> tuple[tuple[str, ...], str]:
    """(globs, whose): the repo's ``protected_paths`` option, else the defaults.

    A stored value that is not a list of strings is not read as "nothing protected": the
    defaults hold, and ``whose`` says so.
    """
    raw = (options or {}).get("protected_paths")
    if raw is None:
        return DEFAULT_PROTECTED_PATHS, "the default protected paths"
    if isinstance(raw, list) and raw and all(isinstance(g, str) and g for g in raw):
        return tuple(raw), "the repo's protected paths"
    return DEFAULT_PROTECTED_PATHS, "the default protected paths (the repo's are malformed)"


def is_test_file(path: str) -> bool:
    """Whether a new file at ``path`` is a test file: a test name, or in a test folder."""
    parts = PurePosixPath(path).parts
    name = parts[-1] if parts else path
    if name in SUITE_CONFIG_NAMES:
        return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in TEST_FILE_NAMES):
        return True
    return any(part in TEST_DIR_NAMES for part in parts[:-1])


def uncollected(path: str) -> bool:
    """Whether ``path`` lies in a folder pytest does not collect from by default."""
    folders = PurePosixPath(path).parts[:-1]
    return any(fnmatch.fnmatchcase(f, pattern) for f in folders for pattern in UNCOLLECTED_DIRS)
