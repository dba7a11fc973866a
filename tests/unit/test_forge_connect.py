"""forge.connect.forge_for: a repo's forge built from its settings and its token variable."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.forge.connect import forge_for
from orchestrator.forge.settings import ForgeInput, forge_option_changes


@dataclass
class Repo:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def _with_forge(**given: Any) -> Repo:
    spec = ForgeInput(forge="github", repo="octo/demo", **given)
    return Repo("demo", forge_option_changes({}, spec))


class _Made:
    def __init__(self, repo: str, token: str, *, base_url: str) -> None:
        self.kwargs = {"repo": repo, "token": token, "base_url": base_url}


@pytest.fixture
def github_module(monkeypatch: pytest.MonkeyPatch) -> type[_Made]:
    """forge/github.py's GitHubForge(repo, token, *, base_url=), without githubkit."""
    module = types.ModuleType("orchestrator.forge.github")
    module.GitHubForge = _Made  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "orchestrator.forge.github", module)
    return _Made


def test_a_repo_without_a_forge_has_none() -> None:
    assert forge_for(Repo("demo"), {"GITHUB_TOKEN": "t"}) is None


def test_the_token_comes_from_the_named_variable(github_module: type[_Made]) -> None:
    repo = _with_forge(token_env="ORCH_GH", api_url="http://127.0.0.1:8999")
    made = forge_for(repo, {"ORCH_GH": "s3cret", "GITHUB_TOKEN": "not-this-one"})
    assert isinstance(made, github_module)
    assert made.kwargs == {
        "repo": "octo/demo",
        "token": "s3cret",
        "base_url": "http://127.0.0.1:8999",
    }


@pytest.mark.parametrize("environ", [{}, {"GITHUB_TOKEN": ""}, {"GITHUB_TOKEN": "  "}])
def test_a_missing_token_is_a_clear_error_naming_the_variable(
    github_module: type[_Made], environ: dict[str, str]
) -> None:
    del github_module
    with pytest.raises(ConfigError) as err:
        forge_for(_with_forge(), environ)
    assert "GITHUB_TOKEN" in str(err.value)
    assert "not set" in str(err.value)
    assert "orch repo set demo --forge-token-env" in str(err.value)
