"""Fixtures of the forge tests: one fake GitHub per module, a fresh repository per test.

- ``fake``: a started ``FakeGitHub`` (module scope: starting one is cheap, but the tests
  of a module share it to stay fast); faults, the token and the webhook URL are reset
  after each test, so a test that fails midway leaves nothing to the next.
- ``repo``: a new repository ``acme/r<N>`` on it with one commit on main.
- ``forge``: a ``GitHubForge`` on ``repo`` with the fake's token (timeout 5 s).
- ``git_env``: an environment for running git against the fake (no GIT_* inherited, no
  prompt for credentials).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.github import GitHubForge

_names = itertools.count(1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path_factory.mktemp("fake-github")) as gh:
        yield gh


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    if "fake" not in request.fixturenames:
        yield
        return
    gh: FakeGitHub = request.getfixturevalue("fake")
    token = gh.token
    yield
    gh.clear_faults()
    gh.set_token(token)
    gh.set_webhook(None)


@pytest.fixture
def repo(fake: FakeGitHub) -> str:
    name = f"acme/r{next(_names)}"
    fake.create_repo(name, files={"README.md": "# app\n", "app.py": "x = 1\n"})
    return name


@pytest.fixture
def forge(fake: FakeGitHub, repo: str) -> GitHubForge:
    return GitHubForge(repo, fake.token, base_url=fake.url, timeout_s=5.0)


@pytest.fixture
def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", GIT_CONFIG_NOSYSTEM="1")
    return env
