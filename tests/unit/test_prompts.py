"""Role prompts: every role renders with the contract's artifact and keys; a repo override
wins; a template error is a PromptError, never a half prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.agents.prompts import (
    MAX_FAILURE_CHARS,
    MAX_PROMPT_BYTES,
    ROLES,
    PromptError,
    key_docs,
    render_prompt,
)
from orchestrator.domain import artifacts as A
from orchestrator.domain.quoting import fence_text
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.errors import OrchestratorError

ART = Path("/orch/tasks/DEMO-7")
TASK = (
    "---\ntask: DEMO-7\nrepo: demo\n---\n\n# Task\n\n## Fix the parser\n\n"
    "It crashes on {{ braces }}.\n"
)


def render(role: str, stage: Stage, *, failure: str | None = None, wt: Path | None = None) -> str:
    return render_prompt(role, stage, "DEMO-7", TASK, ART, failure, wt)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("stage", list(Stage))
def test_every_role_names_the_exact_artifact_and_keys(role: str, stage: Stage) -> None:
    text = render(role, stage)
    artifact = STAGE_TRANSITIONS[stage].artifact
    assert f"`{ART / artifact}`" in text
    for key in A.ARTIFACTS[artifact].keys:
        assert f"\n{key.name}: " in text
        if key.values:
            assert "|".join(sorted(key.values)) in text
    assert "DEMO-7" in text
    # Task text is data: its braces are not template syntax.
    assert "It crashes on {{ braces }}." in text
    assert "previous attempt failed" not in text


@pytest.mark.parametrize(
    ("text", "ticks"),
    [
        ("plain", 3),
        ("`inline` and ``two``", 3),
        ("```\nopen", 4),
        ("a line of ten\n``````````", 11),
        ("~~~~~\n~~~", 3),
    ],
)
def test_fence_is_longer_than_any_backtick_run(text: str, ticks: int) -> None:
    fenced = fence_text(text)
    first, *middle, last = fenced.split("\n")
    assert (first, last) == ("`" * ticks + "text", "`" * ticks)
    assert middle == text.splitlines()


def test_fence_makes_every_line_break_one_kind() -> None:
    assert fence_text("a\r\nb\rc\u2028d\x85e") == "```text\na\nb\nc\nd\ne\n```"


def test_dev_report_keys_read_as_the_contract_says() -> None:
    (doc,) = key_docs(A.DEV_REPORT)
    assert (doc.name, doc.choices, doc.success) == ("dev_status", "DONE|FAILED", "DONE")
    failed = {d.name: d for d in key_docs(A.TEST_REPORT)}["failed"]
    assert failed.choices == "<count>"
    assert failed.success == "0"


def test_rollback_quotes_the_failing_report_cut_to_size() -> None:
    text = render("developer", Stage.DEVELOPMENT, failure="tests: 2 failed\nresult: FAILED")
    assert "## The previous attempt failed" in text
    assert "```text\ntests: 2 failed\nresult: FAILED\n```" in text
    long = render("developer", Stage.DEVELOPMENT, failure="x" * (MAX_FAILURE_CHARS + 500))
    assert "[... cut: 500 more characters]" in long


def test_repo_override_wins(tmp_path: Path) -> None:
    override = tmp_path / ".orchestrator" / "agents" / "developer.md"
    override.parent.mkdir(parents=True)
    override.write_text("House rules for {{ task_key }}: write {{ artifact_path }}.\n")
    text = render("developer", Stage.DEVELOPMENT, wt=tmp_path)
    assert text == f"House rules for DEMO-7: write {ART / A.DEV_REPORT}.\n"
    # Other roles still come from the package.
    assert "You are the analyst" in render("analyst", Stage.ANALYSIS, wt=tmp_path)


def test_an_override_changed_between_prompts_is_the_one_rendered(tmp_path: Path) -> None:
    # Compiled templates are kept (prompts._compiled): by their text, so an override edited
    # (or broken, then mended) between two jobs is what the next prompt renders.
    override = tmp_path / ".orchestrator" / "agents" / "developer.md"
    override.parent.mkdir(parents=True)
    for template, expected in (
        ("One: {{ task_key }}\n", "One: DEMO-7\n"),
        ("Two: {{ task_key }}\n", "Two: DEMO-7\n"),
        ("{% if %}\n", PromptError),
        ("One: {{ task_key }}\n", "One: DEMO-7\n"),
        ("Three {{ task_key }}\n", "Three DEMO-7\n"),
    ):
        override.write_text(template)
        if expected is PromptError:
            with pytest.raises(PromptError, match="syntax error"):
                render("developer", Stage.DEVELOPMENT, wt=tmp_path)
        else:
            assert render("developer", Stage.DEVELOPMENT, wt=tmp_path) == expected
    assert "You are the developer" in render("developer", Stage.DEVELOPMENT)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Do {{ task_key }} and {{ missing }}\n", "'missing' is undefined"),
        ("{% if %}\n", "syntax error at line 1"),
        ("{{ task_key.__class__.__mro__ }}\n", "prompt template"),
        ("{{ keys[0].name.__globals__ }}\n", "prompt template"),
        ("{% for k in keys %}{{ k }}\n", "syntax error"),
        ("   \n", "rendered empty"),
    ],
)
def test_broken_override_is_a_prompt_error(tmp_path: Path, template: str, expected: str) -> None:
    override = tmp_path / ".orchestrator" / "agents" / "tester.md"
    override.parent.mkdir(parents=True)
    override.write_text(template)
    with pytest.raises(PromptError) as info:
        render("tester", Stage.TESTING, wt=tmp_path)
    assert expected in str(info.value)
    assert "repo override" in str(info.value) or "rendered empty" in str(info.value)
    assert isinstance(info.value, OrchestratorError)


def test_oversized_prompt_is_refused() -> None:
    huge = "y" * (MAX_PROMPT_BYTES + 1)
    with pytest.raises(PromptError, match="shorten"):
        render_prompt("developer", Stage.DEVELOPMENT, "DEMO-7", huge, ART, None, None)


def test_unknown_role() -> None:
    with pytest.raises(PromptError, match="no prompt for role"):
        render("janitor", Stage.DEVELOPMENT)


def test_templates_ship_as_package_data() -> None:
    from importlib import resources

    folder = resources.files("orchestrator.agents").joinpath("prompts")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".md")) == sorted(
        f"{r}.md" for r in ROLES
    )
