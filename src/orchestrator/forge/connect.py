"""Build a repo's ``Forge`` from its settings and the token its environment variable holds.

The token is read here, when a forge is built, from the variable the repo names
(``--forge-token-env``, default ``GITHUB_TOKEN``); it is never stored, and a missing one is
a ``ConfigError`` that names the variable, never a forge call that fails later with a 401.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from orchestrator.errors import ConfigError
from orchestrator.forge.base import Forge
from orchestrator.forge.settings import ForgeSettings, forge_settings

__all__ = ["ForgeFactory", "HasForgeOptions", "forge_for", "token_of"]


class HasForgeOptions(Protocol):
    """What building a forge reads of a repo (a ``RepoRow``): its name and options."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> dict[str, Any]: ...


class ForgeFactory(Protocol):
    """``forge_for``'s shape: tests pass one that returns an in-memory forge."""

    def __call__(self, repo: HasForgeOptions, environ: Mapping[str, str]) -> Forge | None: ...


def token_of(repo_name: str, settings: ForgeSettings, environ: Mapping[str, str]) -> str:
    """The token in the repo's token variable; a ``ConfigError`` naming it when unset."""
    token = environ.get(settings.token_env, "").strip()
    if not token:
        msg = (
            f"repo {repo_name}: its {settings.kind} token is read from the environment "
            f"variable {settings.token_env}, which is not set in this process (set it, or "
            f"name another with `orch repo set {repo_name} --forge-token-env VAR`)"
        )
        raise ConfigError(msg)
    return token


def forge_for(repo: HasForgeOptions, environ: Mapping[str, str]) -> Forge | None:
    """The repo's forge, or None when it has none; a ``ConfigError`` when its token is not
    in ``environ``."""
    settings = forge_settings(repo.options)
    if settings is None:
        return None
    token = token_of(repo.name, settings, environ)
    if settings.kind == "github":
        # Imported here: githubkit is loaded only by processes that speak to GitHub.
        from orchestrator.forge.github import GitHubForge

        forge: Forge = GitHubForge(settings.repo, token, base_url=settings.api_url)
        return forge
    msg = f"repo {repo.name}: unknown forge {settings.kind!r} (give --forge github)"
    raise ConfigError(msg)
