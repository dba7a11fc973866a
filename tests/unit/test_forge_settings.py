"""A repo's forge settings (forge/settings.py): every option checked, the token never kept."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.forge.settings import (
    ForgeInput,
    ForgeSettings,
    check_forge_options,
    forge_option_changes,
    forge_settings,
    land_of,
)

FIRST = ForgeInput(forge="github", repo="octo-org/demo")


def test_a_first_forge_gets_every_default() -> None:
    changes = forge_option_changes({}, FIRST)
    assert changes == {
        "forge": {
            "kind": "github",
            "repo": "octo-org/demo",
            "api_url": "https://api.github.com",
            "token_env": "GITHUB_TOKEN",
            "required_checks": [],
            "merge_method": "squash",
            "intake_label": "orch",
        }
    }
    settings = forge_settings(changes)
    assert settings == ForgeSettings(
        kind="github", repo="octo-org/demo", api_url=changes["forge"]["api_url"]
    )
    assert settings is not None
    assert settings.land == "push"


def test_later_options_change_only_what_is_given() -> None:
    options: dict[str, Any] = forge_option_changes({}, FIRST)
    options |= forge_option_changes(
        options,
        ForgeInput(
            api_url="http://127.0.0.1:9999/",
            token_env="ORCH_GH_TOKEN",
            required_checks=["ci", " lint", "ci", ""],
            merge_method="rebase",
            intake_label="agent",
            land="pr",
        ),
    )
    got = forge_settings(options)
    assert got == ForgeSettings(
        kind="github",
        repo="octo-org/demo",
        api_url="http://127.0.0.1:9999",
        token_env="ORCH_GH_TOKEN",
        required_checks=("ci", "lint"),
        merge_method="rebase",
        intake_label="agent",
        land="pr",
    )
    # '' clears the checks (the branch protection's then) and the API URL (the default).
    options |= forge_option_changes(options, ForgeInput(required_checks=[""], api_url=""))
    got = forge_settings(options)
    assert got is not None
    assert got.required_checks == ()
    assert got.api_url == "https://api.github.com"


def test_no_option_given_changes_nothing() -> None:
    assert forge_option_changes({"forge": {"kind": "github"}}, ForgeInput()) == {}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ForgeInput(forge="gitlab", repo="a/b"), "--forge 'gitlab'"),
        (ForgeInput(forge="github"), "--forge-repo"),
        (ForgeInput(forge="github", repo="no-slash"), "OWNER/NAME"),
        (ForgeInput(forge="github", repo="a/b/c"), "OWNER/NAME"),
        (ForgeInput(forge="github", repo="-bad/name"), "OWNER/NAME"),
        (ForgeInput(forge="github", repo="owner/.."), "OWNER/NAME"),
        (ForgeInput(repo="a/b"), "no forge yet"),
        (ForgeInput(intake_label="x"), "no forge yet"),
        (ForgeInput(land="pr"), "--land pr needs a forge"),
        (ForgeInput(land="carrier-pigeon"), "--land"),
        (ForgeInput(forge="github", repo="a/b", merge_method="fast-forward"), "squash"),
        (ForgeInput(forge="github", repo="a/b", api_url="ftp://x"), "http(s)"),
        (ForgeInput(forge="github", repo="a/b", api_url="http://example.com"), "plain http"),
        (ForgeInput(forge="github", repo="a/b", api_url="https://u:p@ghe.example"), "credentials"),
        (ForgeInput(forge="github", repo="a/b", api_url="https://ghe.example/?a=1"), "query"),
        (ForgeInput(forge="github", repo="a/b", api_url="https://h:port/"), "--forge-api-url"),
        (ForgeInput(forge="github", repo="a/b", token_env="ghp_0123456789abcdef"), "never"),
        (ForgeInput(forge="github", repo="a/b", token_env="github_pat_11AB"), "never"),
        (ForgeInput(forge="github", repo="a/b", token_env="MY TOKEN"), "NAME"),
        (ForgeInput(forge="github", repo="a/b", token_env="1ABC"), "NAME"),
        (ForgeInput(forge="github", repo="a/b", intake_label=""), "--intake-label"),
        (ForgeInput(forge="github", repo="a/b", intake_label="x" * 51), "--intake-label"),
        (ForgeInput(forge="github", repo="a/b", intake_label="a\nb"), "--intake-label"),
        (ForgeInput(forge="github", repo="a/b", required_checks=["a\x1b[2J"]), "check"),
        (
            ForgeInput(
                forge="github",
                repo="a/b",
                required_checks=[",".join(f"c{i}" for i in range(51))],
            ),
            "at most",
        ),
        (ForgeInput(forge="none", repo="a/b"), "no other forge option"),
        (ForgeInput(forge="none", land="pr"), "--land pr"),
    ],
)
def test_a_bad_option_is_refused_by_name(spec: ForgeInput, words: str) -> None:
    with pytest.raises(UsageError) as err:
        forge_option_changes({}, spec)
    assert words in str(err.value)


def test_forge_none_removes_it_and_a_pr_landing_with_it() -> None:
    options: dict[str, Any] = forge_option_changes(
        {}, ForgeInput(forge="github", repo="a/b", land="pr")
    )
    assert land_of(options) == "pr"
    changes = forge_option_changes(options, ForgeInput(forge="none"))
    assert changes == {"forge": None, "land": "push"}
    assert forge_settings({**options, **changes}) is None


def test_options_written_as_data_pass_the_same_checks() -> None:
    good = forge_option_changes({}, FIRST)
    check_forge_options(good)
    check_forge_options({**good, "land": "pr"})
    for bad, words in [
        ({"land": "pr"}, "needs a forge"),
        ({"land": "teleport"}, "land must be"),
        ({"forge": "octo/demo"}, "must be an object"),
        ({"forge": {**good["forge"], "token": "ghp_x"}}, "unknown key"),
        ({"forge": {**good["forge"], "token_env": "ghp_secret"}}, "never"),
        ({"forge": {**good["forge"], "required_checks": "ci"}}, "list of names"),
        ({"forge": {**good["forge"], "repo": 7}}, "must be text"),
    ]:
        with pytest.raises(UsageError) as err:
            check_forge_options(bad)
        assert words in str(err.value), bad


def test_settings_read_back_tolerate_what_is_not_a_forge() -> None:
    assert forge_settings(None) is None
    assert forge_settings({}) is None
    assert forge_settings({"forge": None}) is None
    assert land_of({"land": "sideways"}) == "push"
