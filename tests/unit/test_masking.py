"""The one rule of what is a secret (``orchestrator.masking``), and its four users.

Before it there were four rules: the job log's env header (``proc_group``), the API's
settings (``api/reads``), git's environment (``gitops/git``) and the agents' environment
(``agent_env``). Each old rule is written out below as it was, and the shared rule is shown
to hide every name the old ones hid, on the names each old rule was written for.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from orchestrator import agent_env, masking
from orchestrator.gitops.git import git_environment
from orchestrator.masking import (
    ENV_MASK,
    MASK,
    is_secret_name,
    mask_env,
    masked_remote,
    masked_setting,
    masked_url,
    without_secrets,
)
from orchestrator.store.rows import RepoRow

# ---- the four old rules, as they were --------------------------------------------------


def _old_log_header(name: str) -> bool:
    parts = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL")
    upper = name.upper()
    return (
        any(part in upper for part in parts)
        or upper == "DATABASE_URL"
        or upper.endswith("_DATABASE_URL")
    )


def _old_api_setting(name: str) -> bool:
    return name in {"api_token", "alert_webhook_url", "database_url"} or bool(
        re.search(r"token|secret|password|passwd|credential", name, re.IGNORECASE)
    )


def _old_git(name: str) -> bool:
    # Besides the ORCH_ prefix, which git_environment still drops on its own.
    parts = ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "DATABASE_URL", "API_KEY")
    return any(part in name.upper() for part in parts)


OLD_RULES: dict[str, Callable[[str], bool]] = {
    "log header": _old_log_header,
    "api settings": _old_api_setting,
    "git": _old_git,
}

NAMES = (
    # The log header's cases.
    "API_TOKEN",
    "github_token",
    "AWS_SECRET_ACCESS_KEY",
    "DB_PASSWORD",
    "MYSQL_PASSWD",
    "SSH_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DATABASE_URL",
    "ORCH_DATABASE_URL",
    "TEST_DATABASE_URL",
    # The API's settings.
    "api_token",
    "alert_webhook_url",
    "database_url",
    "some_future_secret",
    "smtp_password",
    "ldap_passwd",
    "cloud_credential_file",
    # git's.
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GH_TOKEN",
    "NPM_CONFIG_CREDENTIAL",
    # Not secrets.
    "PATH",
    "HOME",
    "LANG",
    "TZ",
    "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE",
    "DATABASE_URL_HINT",
    "home",
    "api_port",
    "max_parallel_jobs",
)


def _leaked(rule: str) -> list[str]:
    """The names the old ``rule`` hid and the shared rule shows: for git (and every other
    process's environment) the rule of ``without_secrets``, which also drops any name that
    holds DATABASE_URL, as git's old rule did; elsewhere ``is_secret_name``."""
    old = OLD_RULES[rule]

    def shown(name: str) -> bool:
        if rule == "git":
            return name in masking.without_secrets({name: ""})
        return not is_secret_name(name)

    return [n for n in NAMES if old(n) and shown(n)]


@pytest.mark.parametrize("rule", sorted(OLD_RULES))
def test_the_shared_rule_hides_every_name_an_old_rule_hid(rule: str) -> None:
    assert _leaked(rule) == []


def test_the_comparison_fails_on_a_weaker_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking, "SECRET_PARTS", ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"))
    assert {"SSH_KEY", "MYSQL_PASSWD"} <= set(_leaked("log header"))
    assert {"OPENAI_API_KEY"} <= set(_leaked("git"))
    assert {"alert_webhook_url", "ldap_passwd"} <= set(_leaked("api settings"))


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True),
        ("github_token", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("MYSQL_PASSWD", True),
        ("SSH_KEY", True),
        ("ANTHROPIC_API_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("ORCH_ALERT_WEBHOOK_URL", True),
        ("alert_webhook_url", True),
        ("DATABASE_URL", True),
        ("database_url", True),
        ("ORCH_DATABASE_URL", True),
        ("PATH", False),
        ("HOME", False),
        ("DATABASE_URL_HINT", False),
        ("api_port", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_a_named_secret_is_matched_exactly() -> None:
    assert is_secret_name("MODEL_FOR_X", {"MODEL_FOR_X"})
    assert not is_secret_name("MODEL_FOR", {"MODEL_FOR_X"})
    assert not is_secret_name("MODEL_FOR_X")


# ---- the log header --------------------------------------------------------------------


def test_mask_env_masks_values_with_four_stars() -> None:
    env = {"API_TOKEN": "t", "PATH": "/bin", "CUSTOM": "c", "DATABASE_URL": "postgresql://u:p@h"}
    assert mask_env(env, ["CUSTOM"]) == {
        "API_TOKEN": ENV_MASK,
        "PATH": "/bin",
        "CUSTOM": ENV_MASK,
        "DATABASE_URL": ENV_MASK,
    }
    assert ENV_MASK == "****"


# ---- the API's settings ----------------------------------------------------------------


def test_masked_setting() -> None:
    assert masked_setting("api_token", "t0k") == MASK == "***"
    assert masked_setting("api_token", "") == ""  # unset is shown as unset
    assert masked_setting("alert_webhook_url", "http://h/hooks/T0KEN") == MASK
    assert masked_setting("some_future_secret", 1) == MASK
    assert masked_setting("database_url", "postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert masked_setting("database_url", "") == ""
    assert masked_setting("api_port", 8765) == 8765
    assert masked_setting("home", "/x") == "/x"


def test_masked_url() -> None:
    assert masked_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert masked_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert masked_url("not a url with pw@x") == MASK
    # libpq takes the password as a query parameter too (so does SQLAlchemy's psycopg).
    assert masked_url("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert masked_url("postgresql:///db?host=/run/pg&sslpassword=pw") == (
        "postgresql:///db?host=%2Frun%2Fpg&sslpassword=***"
    )


@pytest.mark.parametrize(
    ("remote", "shown"),
    [
        ("https://x-access-token:t0k@github.com/o/r.git", "https://***@github.com/o/r.git"),
        # GitHub takes a token as the user alone.
        ("https://t0k@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://u:p@ss@h:8443/r", "https://***@h:8443/r"),
        ("ssh://git@github.com/o/r.git", "ssh://***@github.com/o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("origin", "origin"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("file:///srv/git/r.git", "file:///srv/git/r.git"),
    ],
)
def test_masked_remote(remote: str, shown: str) -> None:
    assert masked_remote(remote) == shown


# ---- git's environment -----------------------------------------------------------------


def test_git_environment_drops_settings_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORCH_HOME", "ORCH_API_TOKEN", "GH_TOKEN", "OPENAI_API_KEY", "MY_DATABASE_URL"):
        monkeypatch.setenv(name, "v")
    monkeypatch.setenv("KEEP_ME", "kept")
    env = git_environment()
    assert env["KEEP_ME"] == "kept"
    assert not {"ORCH_HOME", "ORCH_API_TOKEN", "GH_TOKEN", "OPENAI_API_KEY", "MY_DATABASE_URL"} & (
        set(env)
    )


def test_without_secrets() -> None:
    assert without_secrets({"A_TOKEN": 1, "PATH": 2}) == {"PATH": 2}


# ---- the agents' and suites' environment -----------------------------------------------


def _repo(agent_env_names: list[str]) -> RepoRow:
    return RepoRow(
        id=1,
        name="demo",
        path="/x",
        main_branch="main",
        remote=None,
        key_prefix="DEMO",
        next_task_number=1,
        test_cmd=None,
        staging_cmd=None,
        deploy_cmd=None,
        health_url=None,
        stages=[],
        agents={},
        agent_env=agent_env_names,
        options={},
        self_hosting=False,
        created_at=0.0,
        updated_at=0.0,
    )


def test_scrubbed_env_passes_only_the_named_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_API_KEY", "model-key")
    monkeypatch.setenv("ORCH_API_TOKEN", "orch-token")
    monkeypatch.setenv("LANG", "C.UTF-8")
    repo = _repo(["MODEL_API_KEY"])
    extra = {"HOME": "/h", "ORCH_TASK": "DEMO-1", "LEAKED_TOKEN": "x"}

    agent = agent_env.scrubbed_env(repo, extra)
    assert agent["MODEL_API_KEY"] == "model-key"  # named by the repo: the agent's own key
    assert agent["HOME"] == "/h"
    assert agent["ORCH_TASK"] == "DEMO-1"
    assert agent["LANG"] == "C.UTF-8"
    assert "ORCH_API_TOKEN" not in agent
    assert "LEAKED_TOKEN" not in agent  # a secret handed in by mistake does not get through

    suite = agent_env.scrubbed_env(repo, extra, agent_keys=False)
    assert not [name for name in suite if is_secret_name(name)]
    assert suite["HOME"] == "/h"


def test_git_environment_follows_every_change_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The answer is kept between git calls; a change made in between is seen at once.
    monkeypatch.setenv("KEEP_ME", "one")
    assert git_environment()["KEEP_ME"] == "one"
    monkeypatch.setenv("KEEP_ME", "two")
    monkeypatch.setenv("NEW_TOKEN", "v")
    env = git_environment()
    assert env["KEEP_ME"] == "two"
    assert "NEW_TOKEN" not in env
    env["KEEP_ME"] = "changed by a caller"
    assert git_environment()["KEEP_ME"] == "two"
    monkeypatch.delenv("KEEP_ME")
    assert "KEEP_ME" not in git_environment()
