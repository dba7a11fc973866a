"""Answers of ``git config`` in a repository, kept while git would read the same bytes.

Some questions are asked of the user's clone on every job or every landing (its local
remotes, which every sandbox hides; its ``user.name`` and ``user.email``, which the merge
gate's commit carries). ``KeptAnswers`` keeps git's answer with the bytes of every config
file git read for it (``config_inputs``) and gives it again only while those bytes are the
same: a change in any of them, in any way (even the same size and modification time), is a
new ``git config`` call.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

_T = TypeVar("_T")

# Environment that changes which config files git reads, or adds config of its own: with
# any of these set, git is asked every time.
CONFIG_ENV = (
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_WORK_TREE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
)


@functools.cache
def system_configs() -> tuple[Path, ...]:
    """Where git may keep its system-wide config: ``/etc/gitconfig`` (a build for
    ``/usr``), and ``<prefix>/etc/gitconfig`` for the prefix git runs from."""
    from orchestrator.gitops import git as gitcmd  # here: `orch status` needs no git

    found = [Path("/etc/gitconfig"), Path("/usr/local/etc/gitconfig")]
    res = gitcmd.git(["--exec-path"], Path("/"), timeout_s=15)
    exec_path = Path(res.stdout.strip()) if res else None
    # <prefix>/libexec/git-core or <prefix>/lib/git-core
    if exec_path is not None and exec_path.name == "git-core":
        found.append(exec_path.parent.parent / "etc" / "gitconfig")
    return tuple(dict.fromkeys(found))


def config_inputs(repo_path: Path) -> tuple[object, ...] | None:
    """Everything ``git config`` in ``repo_path`` reads, as bytes (None for a file that is
    not there), or None when that cannot be told without git: then git is asked.

    Git is asked whenever the environment points it elsewhere or adds config
    (``CONFIG_ENV``), the clone's ``.git`` is not a folder of its own (a ``git
    worktree``, a submodule, a link), or a file says ``include`` anywhere (``[include]``,
    ``[includeIf]``: files this cannot follow). The owners of the clone and its ``.git``
    are part of it: git refuses a repository of another user (``safe.directory``).
    """
    from orchestrator.gitops import git as gitcmd

    env = gitcmd.git_environment()
    if any(name in env for name in CONFIG_ENV):
        return None
    git_dir = repo_path / ".git"
    try:
        top, own = os.stat(repo_path), os.lstat(git_dir)
    except OSError:
        return None
    if not stat.S_ISDIR(own.st_mode) or (git_dir / "commondir").exists():
        return None
    home = env.get("HOME")
    xdg = env.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else None)
    files = [
        *system_configs(),
        *([Path(xdg, "git", "config")] if xdg else []),
        *([Path(home, ".gitconfig")] if home else []),
        git_dir / "config",
        git_dir / "config.worktree",
    ]
    contents: list[object] = [top.st_uid, own.st_uid, home, xdg]
    for path in files:
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError:
            return None
        if data is not None and b"include" in data.lower():
            return None
        contents.append((str(path), data))
    return tuple(contents)


class KeptAnswers(Generic[_T]):
    """One config question's answers, per repository, each kept with the bytes git read."""

    def __init__(self) -> None:
        # repo path -> (the config files' bytes git read, its answer then)
        self._seen: dict[Path, tuple[tuple[object, ...], _T]] = {}

    def ask(self, repo_path: Path, question: Callable[[], tuple[_T, bool]]) -> _T:
        """The answer kept for ``repo_path`` while no config byte changed, else
        ``question()``: (the answer, whether it may be kept: git answered)."""
        # Read before git is asked: a change made meanwhile is a change of bytes next time.
        inputs = config_inputs(repo_path)
        if inputs is not None:
            kept = self._seen.get(repo_path)
            if kept is not None and kept[0] == inputs:
                return kept[1]
        answer, keep = question()
        if inputs is not None and keep:
            self._seen[repo_path] = (inputs, answer)
        return answer


__all__ = ["CONFIG_ENV", "KeptAnswers", "config_inputs", "system_configs"]
