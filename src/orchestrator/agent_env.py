"""The environment every process we start for a repo gets: an allowlist, nothing more.

Agents see the allowlist plus the variables the repo names (`--agent-env`: a model key, say).
Suites run on a task's code (test-runner, merge re-test, coverage, staging) see the
allowlist only: that code is the agent's too, and must not get the agent's keys. The API
token, the database URL and every other secret of the orchestrator stay with the
orchestrator: whatever ``masking`` calls a secret is dropped, but the keys the repo names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from orchestrator.masking import without_secrets
from orchestrator.store.rows import RepoRow

# Every suite we run on a task's code (test-runner, merge re-test, coverage, staging): no
# bytecode in the worktree, a by-product a later step could commit and that spoils the
# validated-tree record.
SUITE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR", "VIRTUAL_ENV")


def scrubbed_env(
    repo: RepoRow, extra: Mapping[str, str] | None = None, *, agent_keys: bool = True
) -> dict[str, str]:
    """An allowlisted environment, plus the repo's named agent variables when
    ``agent_keys`` (agents, and the deploy with the user's credentials; never a suite),
    then ``extra``. Of the allowlist and ``extra``, nothing ``masking`` calls a secret:
    the named agent variables are the only secrets a process gets."""
    allowed = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    allowed.setdefault("PATH", os.defpath)
    keys = {n: os.environ[n] for n in (repo.agent_env if agent_keys else ()) if n in os.environ}
    return {**without_secrets(allowed), **keys, **without_secrets(extra or {})}
