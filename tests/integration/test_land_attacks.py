"""Attacks on the cheaper transitions (issue 19): the merge gate's landing without a fetch,
a first attempt's gate told by its own commit. Real git repositories; outcomes, never
timings. Each case is the shortcut against what git itself (the long way) does."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gitops import commits, land, worktrees
from orchestrator.gitops.land import Judgement, LandRequest

try:
    from merge_helpers import run_git
    from test_git_calls import _workspace
except ImportError:  # imported as tests.integration.test_land_attacks
    from tests.integration.merge_helpers import run_git
    from tests.integration.test_git_calls import _workspace


def test_a_commit_landed_in_a_group_shared_clone_is_readable_by_its_group(
    tmp_path: Path, make_repo: Any
) -> None:
    # The commit the merge gate writes straight into the user's store is written as the
    # user's clone writes objects (core.sharedRepository): a group-shared clone whose main
    # names a commit only its owner can read is broken for everyone else in the group. The
    # fetch it replaces ran in the clone and honoured its config.
    old_umask = os.umask(0o077)
    try:
        repo = make_repo(files={"README.md": "demo\n"})
        run_git(repo, "config", "core.sharedRepository", "group")
        ws = _workspace(repo, tmp_path / "worktrees")
        (ws / "feature.txt").write_text("work\n")
        assert commits.commit_all(ws, "DEMO-1: work")
        assert worktrees.publish_branch(repo, ws, "DEMO-1")[0]
        request = LandRequest(
            repo_path=repo,
            main="main",
            remote=None,
            worktree=ws,
            key="DEMO-1",
            title="a task",
            author=None,
            main_seen=None,
            max_rounds=1,
        )
        landing = land.land(request, lambda _candidate: Judgement())
    finally:
        os.umask(old_umask)
    assert landing.status == "MERGED", landing.reasons
    main = run_git(repo, "rev-parse", "main").strip()
    loose = repo / ".git" / "objects" / main[:2] / main[2:]
    assert loose.is_file()  # written into the user's store (the shortcut was taken)
    assert loose.stat().st_mode & stat.S_IRGRP, oct(loose.stat().st_mode)
    folder = loose.parent.stat().st_mode
    assert folder & stat.S_IRGRP, oct(folder)
    assert folder & stat.S_IXGRP, oct(folder)


# Adversarial changes of a first attempt: attributes that move what `diff --check` calls a
# marker, names with line breaks, binary files, a by-product folder's own attributes.
_MARKERS = "<<<<<<< ours\nx\n=======\ny\n>>>>>>> theirs\n"
_FIRST_ATTEMPTS = [
    {".gitattributes": "*.txt conflict-marker-size=9\n", "a.txt": _MARKERS},
    {".gitattributes": "*.txt -text\n", "a.txt": _MARKERS},
    {".gitattributes": "*.txt binary\n", "a.txt": "<<<<<<< ours\n"},
    {".gitattributes": "* eol=crlf\n", "c.txt": _MARKERS.replace("\n", "\r\n")},
    {".gitattributes": "*.txt whitespace=-trailing-space\n", "a.txt": "x   \n"},
    {"a\nb.txt": _MARKERS},
    {"sub/.gitattributes": "* conflict-marker-size=99\n", "sub/x.txt": _MARKERS},
    {"__pycache__/.gitattributes": "* conflict-marker-size=99\n", "__pycache__/x.txt": _MARKERS},
    {"x.txt": "a\x00<<<<<<< ours\n"},
    {"x.txt": "=======\n"},
]


@pytest.mark.parametrize("files", _FIRST_ATTEMPTS)
def test_a_first_attempts_commit_tells_the_gate_what_git_would(
    tmp_path: Path, make_repo: Any, files: dict[str, str]
) -> None:
    # Whatever the agent leaves, the commit's word (branch_diff) is given only when the
    # gate's own git questions (diff --stat, diff --check main...HEAD) would pass it, and
    # says what `diff --stat` says.
    repo = make_repo(files={"README.md": "demo\n"})
    ws = _workspace(repo, tmp_path / "worktrees")
    for rel, text in files.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    done = commits.commit_all(ws, "DEMO-1: work", main="main")
    if done.status != "committed":
        assert done.branch_diff is None
        return
    assert done.branch_diff is not None
    assert commits.has_diff_vs(ws, "main") == (True, done.branch_diff)
    assert commits.branch_markers(ws, "main") == []
