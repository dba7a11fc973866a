"""The environment every process we start for a repo gets: an allowlist, nothing more.

Agents, runners and the merge gate's re-test all see the same scrubbed environment plus the
variables the repo names (`--agent-env`). The API token, the database URL and every other
secret of the orchestrator stay with the orchestrator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from orchestrator.store.queries import RepoRow

# Every suite we run on a task's code (test-runner, merge re-test, coverage, staging): no
# bytecode in the worktree, a by-product a later step could commit and that spoils the
# validated-tree record.
SUITE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR", "VIRTUAL_ENV")


def scrubbed_env(repo: RepoRow, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An allowlisted environment plus the repo's named agent variables, then ``extra``."""
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.setdefault("PATH", os.defpath)
    for name in repo.agent_env:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env
