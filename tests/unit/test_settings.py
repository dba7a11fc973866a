"""Settings: invariants named by their keys, and .env.example / configuration.md in step."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from orchestrator.config import Settings, in_scope, load_settings
from orchestrator.config_docs import render_configuration_md, render_env_example, settings_rows
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def env_example_problems(text: str) -> list[str]:
    """Every difference between a .env.example text and the Settings class."""
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            declared[key.strip()] = value.strip()
    problems = []
    for env, _type, default, _desc in settings_rows():
        if env not in declared:
            problems.append(f"{env} missing from .env.example")
        elif declared[env] != default:
            problems.append(f"{env}: .env.example says {declared[env]!r}, code says {default!r}")
    known = {row[0] for row in settings_rows()}
    problems += [f"{k} in .env.example is no setting" for k in declared if k not in known]
    return problems


def test_env_example_matches_settings() -> None:
    text = (ROOT / ".env.example").read_text()
    assert env_example_problems(text) == []
    assert text == render_env_example(), "regenerate: orch config env-example > .env.example"


def test_drift_check_fails_on_a_mutated_copy() -> None:
    text = render_env_example()
    assert env_example_problems(text.replace("ORCH_PAUSED=false", "ORCH_PAUSED=true"))
    assert env_example_problems(text.replace("ORCH_API_TOKEN=", "# gone"))
    assert env_example_problems(text + "\nORCH_NOT_A_SETTING=1\n")


def test_configuration_md_matches_settings() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == render_configuration_md()


def test_every_setting_has_a_description_and_unit_names() -> None:
    for field in fields(Settings):
        name = field.name
        assert field.metadata["description"], name
        if name.endswith("_timeout") or name.endswith("_backoff"):
            pytest.fail(f"{name}: put the unit in the name (_s)")


def test_defaults_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(home=tmp_path)
    assert s.merge_retest_timeout_s == 900
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'orchestrator.db'}"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_MAX_PARALLEL_JOBS", "9")
    monkeypatch.setenv("ORCH_PAUSED", "true")
    s = load_settings()
    assert s.max_parallel_jobs == 9
    assert s.paused is True


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ORCH_DEVELOPER_RETRY_BUDGET=7\n")
    assert load_settings().developer_retry_budget == 7


def test_invariant_names_the_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_MERGE_RETEST_TIMEOUT_S", "4000")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "merge_retest_timeout_s" in str(err.value)
    assert "reaper_max_running_s" in str(err.value)


def test_bad_type_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_MAX_PARALLEL_JOBS", "many")
    with pytest.raises(ConfigError, match="ORCH_MAX_PARALLEL_JOBS"):
        load_settings()


def test_non_loopback_needs_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="api_token"):
        load_settings(api_host="0.0.0.0")
    assert load_settings(api_host="0.0.0.0", api_token="t").api_host == "0.0.0.0"


def test_in_scope() -> None:
    assert in_scope("*", "a")
    assert in_scope("a, b", "b")
    assert not in_scope("a,b", "c")
    assert not in_scope("", "c")


def test_a_settings_repr_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Settings in a traceback, a log line or a debugger's print must not carry the API
    # token, a database password or the alert hook's URL (Slack's carries its secret).
    monkeypatch.setenv("ORCH_API_TOKEN", "tok-s3cr3t-1")
    monkeypatch.setenv("ORCH_DATABASE_URL", "postgresql://u:pw-s3cr3t-2@127.0.0.1:5432/x")
    monkeypatch.setenv("ORCH_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook/s3cr3t-3")
    s = load_settings()
    assert s.api_token == "tok-s3cr3t-1"  # read, only not shown
    shown = repr(s)
    assert "s3cr3t" not in shown, shown
    assert "api_host='127.0.0.1'" in shown  # the rest is still shown
