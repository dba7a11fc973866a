"""A repo's forge options from the CLI: checked, stored, shown by `orch repo show` and the
API, and the token itself never stored or shown, only its variable's name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from memory_forge import MemoryForge
from tests.integration.api_client import api_client
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import load_settings
from orchestrator.forge.base import Forge
from orchestrator.forge.connect import token_of
from orchestrator.forge.settings import forge_settings
from orchestrator.intake import poll_intake
from orchestrator.store import make_engine, metadata
from orchestrator.store.rows import RepoRow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MakeRepo = Callable[..., Path]
Orch = Callable[..., Any]
TOKEN = "ghp_NeverStoredNeverShown0123456789abcd"
FORGE = ("--forge", "github", "--forge-repo", "octo/demo")


@pytest.fixture
def orch(tmp_path: Path, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Orch:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCH_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def call(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        assert TOKEN not in result.output
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return call


def test_forge_options_are_set_shown_and_changed(orch: Orch, make_repo: MakeRepo) -> None:
    data = orch("repo", "add", "demo", str(make_repo()), *FORGE, "--json")
    assert data["forge"] == {
        "kind": "github",
        "repo": "octo/demo",
        "api_url": "https://api.github.com",
        "token_env": "GITHUB_TOKEN",
        "required_checks": [],
        "merge_method": "squash",
        "intake_label": "orch",
    }
    assert data["land"] == "push"
    data = orch(
        "repo",
        "set",
        "demo",
        "--forge-api-url",
        "http://127.0.0.1:8931",
        "--forge-token-env",
        "ORCH_GH_TOKEN",
        "--land",
        "pr",
        "--required-checks",
        "ci,lint",
        "--merge-method",
        "rebase",
        "--intake-label",
        "agent",
        "--json",
    )
    assert data["forge"] == {
        "kind": "github",
        "repo": "octo/demo",
        "api_url": "http://127.0.0.1:8931",
        "token_env": "ORCH_GH_TOKEN",
        "required_checks": ["ci", "lint"],
        "merge_method": "rebase",
        "intake_label": "agent",
    }
    assert data["land"] == "pr"
    assert orch("repo", "show", "demo", "--json")["forge"] == data["forge"]
    shown = orch("repo", "show", "demo").output
    assert "octo/demo" in shown
    assert "$ORCH_GH_TOKEN" in shown
    # '' clears the checks: those the branch protection requires.
    assert (
        orch("repo", "set", "demo", "--required-checks", "", "--json")["forge"]["required_checks"]
        == []
    )
    data = orch("repo", "set", "demo", "--forge", "none", "--json")
    assert (data["forge"], data["land"]) == (None, "push")


def test_forge_options_on_add_land_pr_at_once(orch: Orch, make_repo: MakeRepo) -> None:
    data = orch("repo", "add", "demo", str(make_repo()), *FORGE, "--land", "pr", "--json")
    assert (data["forge"]["repo"], data["land"]) == ("octo/demo", "pr")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--forge", "gitlab", "--forge-repo", "a/b"), "--forge 'gitlab'"),
        (("--forge", "github"), "--forge-repo"),
        (("--forge-repo", "a/b"), "no forge yet"),
        ((*FORGE[:3], "not-owner-slash-name"), "OWNER/NAME"),
        ((*FORGE, "--forge-api-url", "http://github.example.com"), "plain http"),
        ((*FORGE, "--forge-api-url", "https://me:pw@ghe.example.com"), "credentials"),
        ((*FORGE, "--forge-api-url", "gopher://x"), "http(s)"),
        ((*FORGE, "--forge-token-env", TOKEN), "never the token itself"),
        ((*FORGE, "--forge-token-env", "lower_case"), "NAME"),
        (("--land", "pr"), "--land pr needs a forge"),
        ((*FORGE, "--land", "fax"), "--land"),
        ((*FORGE, "--merge-method", "octopus"), "--merge-method"),
        ((*FORGE, "--intake-label", ""), "--intake-label"),
    ],
)
def test_a_bad_forge_option_is_refused_and_nothing_written(
    orch: Orch, make_repo: MakeRepo, args: tuple[str, ...], words: str
) -> None:
    repo = make_repo()
    result = orch("repo", "add", "demo", str(repo), *args, code=2)
    assert words in result.output
    assert orch("repo", "list", "--json") == []
    orch("repo", "add", "demo", str(repo))
    result = orch("repo", "set", "demo", *args, code=2)
    assert words in result.output
    assert orch("repo", "show", "demo", "--json")["forge"] is None


def test_one_repo_per_forge_repository(orch: Orch, make_repo: MakeRepo) -> None:
    orch("repo", "add", "demo", str(make_repo()), *FORGE)
    result = orch(
        "repo",
        "add",
        "twin",
        str(make_repo()),
        "--forge",
        "github",
        "--forge-repo",
        "Octo/Demo",
        code=2,
    )
    assert "repo demo is already that forge repository" in result.output
    orch("repo", "add", "twin", str(make_repo()))
    orch("repo", "set", "twin", "--forge", "github", "--forge-repo", "OCTO/demo", code=2)
    orch("repo", "set", "twin", "--forge", "github", "--forge-repo", "octo/twin")


def _every_value(engine: sa.Engine) -> str:
    """Every row of every table, as text."""
    parts: list[str] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in conn.execute(sa.select(table)))
    return "\n".join(parts)


def test_the_token_is_never_stored_or_shown(
    orch: Orch, make_repo: MakeRepo, migrated_db_url: str, tmp_path: Path
) -> None:
    orch("repo", "add", "demo", str(make_repo()), *FORGE, "--land", "pr")
    orch("repo", "set", "demo", "--intake-label", "agent", "--forge-api-url", "http://[::1]:9")
    assert orch("repo", "show", "demo", "--json")["forge"]["token_env"] == "GITHUB_TOKEN"
    orch("repo", "show", "demo")
    orch("repo", "list", "--json")
    # A round of intake reads the token (as GitHubForge is given it) and files a task.
    engine = make_engine(migrated_db_url)
    forge = MemoryForge()
    forge.open("Fix it", labels=("agent",), author="grace")
    used: list[str] = []

    def forge_for(repo: RepoRow, environ: Any) -> Forge | None:
        settings = forge_settings(repo.options)
        assert settings is not None
        used.append(token_of(repo.name, settings, environ))
        return forge

    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    [report] = poll_intake(engine, settings, forge_for=forge_for)
    assert (report.filed, used) == (["DEMO-1"], [TOKEN])
    orch("task", "show", "DEMO-1", "--json")
    # The API's repo output too.
    client = api_client(settings, engine)
    answer = client.get("/repos/demo")
    assert answer.status_code == 200
    assert answer.json()["forge"]["token_env"] == "GITHUB_TOKEN"
    assert answer.json()["land"] == "pr"
    assert [r["name"] for r in client.get("/repos").json()] == ["demo"]
    assert TOKEN not in client.get("/repos").text
    assert TOKEN not in client.get("/status").text
    assert client.get("/repos/nope").status_code == 404
    client.close()
    # Nowhere in the database: not in a column, not in a JSON option.
    stored = _every_value(engine)
    assert "GITHUB_TOKEN" in stored  # the check reads what is stored
    assert TOKEN not in stored
    engine.dispose()
    if migrated_db_url.startswith("sqlite:///"):
        db_file = Path(migrated_db_url.removeprefix("sqlite:///"))
        for path in (db_file, db_file.with_name(db_file.name + "-wal")):
            if path.exists():
                assert TOKEN.encode() not in path.read_bytes()
