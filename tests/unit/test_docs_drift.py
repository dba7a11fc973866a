"""Docs that cannot drift: each check lists where a doc and the code disagree.

Every check is a function from doc text (or a docs folder) to a list of problems, so each
test can show the check failing on a mutated copy as well as passing on the real doc.

Machine-readable blocks are fenced code blocks whose info string is ``jsonl <name>``: one
JSON object per line. Blocks: ``orch-artifacts`` (docs/overview.md), ``orch-llm-call-sites``
(docs/llm-call-sites.md) and ``orch-llm-roadmap`` (docs/llm-determinization-roadmap.md).
Each docs/agents/<name>.md starts with ``<!-- orch-agent {json} -->``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import typer.main
from test_settings import env_example_problems  # the .env.example check, reused as is

from orchestrator.agents.registry import (
    DEFAULT_LLM_BACKEND,
    DETERMINISTIC_BACKENDS,
    HUMAN_BACKENDS,
    LLM_BACKENDS,
    RESERVED_RUNNERS,
    STAGE_ROLES,
    AgentKind,
    default_agents,
    parse_agent_spec,
)
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.config_docs import settings_rows
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import PIPELINE, STAGE_TRANSITIONS, Stage
from orchestrator.errors import UsageError
from orchestrator.runners.base import runner_available

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

Row = dict[str, Any]

# --------------------------------------------------------------------------- blocks


def read_block(text: str, name: str) -> tuple[list[Row], list[str]]:
    """The rows of the one ```` ```jsonl <name> ```` block in ``text``, and any problems."""
    opener = re.compile(rf"^```jsonl[ \t]+{re.escape(name)}[ \t]*$")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if opener.match(line)]
    if len(starts) != 1:
        return [], [f"expected one ```jsonl {name} block, found {len(starts)}"]
    rows: list[Row] = []
    problems: list[str] = []
    for n, line in enumerate(lines[starts[0] + 1 :], start=starts[0] + 2):
        if line.startswith("```"):
            return rows, problems
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(f"{name} line {n}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{name} line {n}: not a JSON object")
            continue
        rows.append(row)
    return rows, [*problems, f"the {name} block is not closed"]


def _by(rows: list[Row], key: str, name: str) -> tuple[dict[str, Row], list[str]]:
    out: dict[str, Row] = {}
    problems: list[str] = []
    for row in rows:
        value = row.get(key)
        if not isinstance(value, str):
            problems.append(f"{name}: a row without a {key!r}: {row}")
        elif value in out:
            problems.append(f"{name}: {key} {value!r} appears twice")
        else:
            out[value] = row
    return out, problems


def _compare(where: str, doc: Mapping[str, Any], code: Mapping[str, Any]) -> list[str]:
    problems = []
    for field, want in code.items():
        if field not in doc:
            problems.append(f"{where}: {field} missing; code says {want!r}")
        elif doc[field] != want:
            problems.append(f"{where}: {field} is {doc[field]!r} in the doc, {want!r} in code")
    return problems


# --------------------------------------------------------------------------- (a) call sites


def _alternatives(stage: Stage) -> list[str]:
    """The non-LLM agents the registry accepts for ``stage``."""
    found = []
    for spec in ("patch", "command:true", *sorted(HUMAN_BACKENDS), *sorted(RESERVED_RUNNERS)):
        try:
            parsed = parse_agent_spec(spec, stage)
        except UsageError:
            continue
        if parsed.kind is not AgentKind.LLM:
            found.append(parsed.backend)
    return sorted(found)


def _everything_off() -> Settings:
    """Settings with every ``*_enabled`` switch off and every ``*_repos`` scope empty.

    Made directly, ``Settings`` reads no environment and no ``.env``. A runner still
    available under these settings has no switch the engine could fall back on; a switch
    added later is caught without changing this test.
    """
    off: dict[str, Any] = {}
    for name in (f.name for f in fields(Settings)):
        if name.endswith("_enabled"):
            off[name] = False
        elif name.endswith("_repos"):
            off[name] = ""
    return Settings(**off)


def stage_status(stage: Stage) -> str:
    """``llm``, ``hybrid`` or ``deterministic``, from the default agent and launch's fallback.

    An LLM default is ``llm``. A reserved runner is ``hybrid`` when the engine can fall back
    to the LLM on its own (the runner has a kill-switch: with every switch off it is not
    available), else ``deterministic``.
    """
    default = default_agents(PIPELINE)[stage.value]
    kind = parse_agent_spec(default, stage).kind
    if kind is AgentKind.LLM:
        return "llm"
    if kind is AgentKind.RUNNER:
        available, _why = runner_available(_everything_off(), default, "any-repo")
        return "deterministic" if available else "hybrid"
    return "deterministic"


def _llm_for(backend: str, stage: Stage) -> bool:
    """Whether the registry accepts ``backend`` as an LLM agent of ``stage``."""
    try:
        return parse_agent_spec(backend, stage).kind is AgentKind.LLM
    except UsageError:
        return False


def code_call_sites() -> dict[str, Row]:
    """Every stage's LLM call site as the code has it (the registry and STAGE_TRANSITIONS)."""
    defaults = default_agents(PIPELINE)
    out: dict[str, Row] = {}
    for stage in PIPELINE:
        status = stage_status(stage)
        out[stage.value] = {
            "role": STAGE_ROLES[stage],
            "default_agent": defaults[stage.value],
            "status": status,
            "llm_backends": sorted(b for b in LLM_BACKENDS if _llm_for(b, stage)),
            "alternatives": _alternatives(stage),
            "llm_fallback": DEFAULT_LLM_BACKEND if status == "hybrid" else None,
            "checks": list(STAGE_TRANSITIONS[stage].checks),
        }
    return out


def _rank_problems(name: str, rows: dict[str, Row]) -> list[str]:
    """Ranks: null for deterministic stages, else 1..n, each once."""
    problems = []
    ranks = []
    for stage, row in rows.items():
        rank = row.get("roadmap_rank", "absent")
        deterministic = row.get("status") == "deterministic"
        if deterministic and rank is not None:
            problems.append(f"{name}: {stage} is deterministic, so its roadmap_rank is null")
        if not deterministic:
            if not isinstance(rank, int) or isinstance(rank, bool):
                problems.append(f"{name}: {stage} needs an integer roadmap_rank, has {rank!r}")
            else:
                ranks.append(rank)
    if sorted(ranks) != list(range(1, len(ranks) + 1)):
        problems.append(f"{name}: ranks {sorted(ranks)} are not 1..{len(ranks)}, each once")
    return problems


def call_sites_problems(text: str) -> list[str]:
    """Where the orch-llm-call-sites block of llm-call-sites.md and the code disagree."""
    rows, problems = read_block(text, "orch-llm-call-sites")
    doc, dup = _by(rows, "stage", "orch-llm-call-sites")
    problems += dup
    code = code_call_sites()
    problems += [f"call sites: stage {s} missing from the block" for s in code if s not in doc]
    problems += [f"call sites: stage {s} is not in STAGE_TRANSITIONS" for s in doc if s not in code]
    for stage, want in code.items():
        if stage in doc:
            problems += _compare(f"call sites: {stage}", doc[stage], want)
    return problems + _rank_problems("call sites", doc)


def roadmap_problems(roadmap_text: str, call_sites_text: str) -> list[str]:
    """Where the roadmap block disagrees with the code or with the call-sites block."""
    rows, problems = read_block(roadmap_text, "orch-llm-roadmap")
    doc, dup = _by(rows, "stage", "orch-llm-roadmap")
    problems += dup
    site_rows, _ = read_block(call_sites_text, "orch-llm-call-sites")
    sites, _ = _by(site_rows, "stage", "orch-llm-call-sites")
    defaults = default_agents(PIPELINE)
    for stage in PIPELINE:
        row = doc.get(stage.value)
        if row is None:
            problems.append(f"roadmap: stage {stage.value} missing from the block")
            continue
        default = defaults[stage.value]
        want: Row = {
            "status": stage_status(stage),
            "runner": default if default in RESERVED_RUNNERS else None,
        }
        problems += _compare(f"roadmap: {stage.value}", row, want)
        site_rank = sites.get(stage.value, {}).get("roadmap_rank", "absent")
        if row.get("roadmap_rank", "absent") != site_rank:
            problems.append(
                f"roadmap: {stage.value} has rank {row.get('roadmap_rank')!r}, "
                f"llm-call-sites.md says {site_rank!r}"
            )
        if not isinstance(row.get("next"), str) or not row["next"].strip():
            problems.append(f"roadmap: {stage.value} needs a 'next' sentence")
    known = {s.value for s in PIPELINE}
    problems += [f"roadmap: stage {s} is not in STAGE_TRANSITIONS" for s in doc if s not in known]
    return problems + _rank_problems("roadmap", doc)


def test_call_sites_match_the_registry() -> None:
    assert call_sites_problems((DOCS / "llm-call-sites.md").read_text()) == []


def test_call_sites_check_fails_on_mutated_copies() -> None:
    text = (DOCS / "llm-call-sites.md").read_text()
    testing = next(line for line in text.splitlines() if line.startswith('{"stage": "testing"'))
    assert any("testing missing" in p for p in call_sites_problems(text.replace(testing, "")))
    hybrid_as_llm = testing.replace('"status": "hybrid"', '"status": "llm"')
    assert call_sites_problems(text.replace(testing, hybrid_as_llm))
    other_role = testing.replace('"role": "tester"', '"role": "reviewer"')
    assert any("role" in p for p in call_sites_problems(text.replace(testing, other_role)))
    no_fallback = testing.replace('"llm_fallback": "claude"', '"llm_fallback": null')
    assert call_sites_problems(text.replace(testing, no_fallback))
    made_up = testing.replace('"stage": "testing"', '"stage": "review"')
    assert any(
        "review" in p for p in call_sites_problems(text.replace(testing, testing + "\n" + made_up))
    )
    assert call_sites_problems(text.replace(testing, testing[:-1]))  # broken JSON


def test_roadmap_matches_the_call_sites() -> None:
    sites = (DOCS / "llm-call-sites.md").read_text()
    assert roadmap_problems((DOCS / "llm-determinization-roadmap.md").read_text(), sites) == []


def test_roadmap_check_fails_on_mutated_copies() -> None:
    sites = (DOCS / "llm-call-sites.md").read_text()
    text = (DOCS / "llm-determinization-roadmap.md").read_text()
    deploy = next(line for line in text.splitlines() if line.startswith('{"stage": "deploy"'))
    assert any("deploy missing" in p for p in roadmap_problems(text.replace(deploy, ""), sites))
    assert roadmap_problems(
        text.replace(deploy, deploy.replace('"roadmap_rank": null', '"roadmap_rank": 5')), sites
    )
    reranked = re.sub(r'"roadmap_rank": 1\b', '"roadmap_rank": 9', text)
    assert any("rank" in p for p in roadmap_problems(reranked, sites))
    runner = deploy.replace('"runner": "deploy-finalizer"', '"runner": null')
    assert roadmap_problems(text.replace(deploy, runner), sites)


# --------------------------------------------------------------------------- (b) settings


def configuration_md_problems(text: str) -> list[str]:
    """Every setting missing from, or described differently in, a configuration.md text."""
    documented: dict[str, tuple[str, str, str]] = {}
    row = re.compile(r"^\|\s*`(ORCH_[A-Z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|(.*)\|\s*$")
    for line in text.splitlines():
        m = row.match(line)
        if m:
            shown = m.group(3).strip()
            default = "" if shown == "(empty)" else shown.strip("`")
            documented[m.group(1)] = (m.group(2).strip(), default, m.group(4).strip())
    problems = []
    for env, type_name, default, description in settings_rows():
        if env not in documented:
            problems.append(f"{env} missing from docs/configuration.md")
            continue
        if documented[env] != (type_name, default, description):
            problems.append(
                f"{env}: docs/configuration.md says {documented[env]}, "
                f"code says {(type_name, default, description)}"
            )
    known = {r[0] for r in settings_rows()}
    problems += [
        f"{k} in docs/configuration.md is no setting" for k in documented if k not in known
    ]
    return problems


def settings_docs_problems(env_example: str, configuration_md: str) -> list[str]:
    """Settings missing from, or out of step in, .env.example and docs/configuration.md."""
    return env_example_problems(env_example) + configuration_md_problems(configuration_md)


def test_every_setting_is_in_env_example_and_configuration_md() -> None:
    env = (ROOT / ".env.example").read_text()
    assert settings_docs_problems(env, (DOCS / "configuration.md").read_text()) == []


def test_settings_check_fails_on_mutated_copies() -> None:
    env = (ROOT / ".env.example").read_text()
    conf = (DOCS / "configuration.md").read_text()
    line = next(ln for ln in conf.splitlines() if ln.startswith("| `ORCH_JOB_LEASE_S`"))
    assert any(
        "ORCH_JOB_LEASE_S missing" in p for p in configuration_md_problems(conf.replace(line, ""))
    )
    assert configuration_md_problems(conf.replace(line, line.replace("`30`", "`60`")))
    assert configuration_md_problems(conf + "| `ORCH_NOT_A_SETTING` | int | `1` | no |\n")
    assert settings_docs_problems(env.replace("ORCH_JOB_LEASE_S=30", ""), conf)


# --------------------------------------------------------------------------- (c) artifacts


def code_artifacts() -> dict[str, Row]:
    """The artifact contract as the code has it: keys with allowed values, and success."""
    out: dict[str, Row] = {}
    for name, spec in A.ARTIFACTS.items():
        keys: dict[str, Any] = {}
        for key in spec.keys:
            if key.values is not None:
                keys[key.name] = sorted(key.values)
            else:
                keys[key.name] = "count" if key.integer else "text"
        out[name] = {
            "title": spec.title,
            "keys": keys,
            "success": dict(spec.success),
            "also_success": {k: sorted(v) for k, v in spec.also_success.items()},
        }
    return out


def artifact_contract_problems(text: str) -> list[str]:
    """Where the orch-artifacts block of overview.md and domain/artifacts.py disagree."""
    rows, problems = read_block(text, "orch-artifacts")
    doc, dup = _by(rows, "artifact", "orch-artifacts")
    problems += dup
    code = code_artifacts()
    problems += [f"artifacts: {n} missing from the block" for n in code if n not in doc]
    problems += [f"artifacts: {n} is not in ARTIFACTS" for n in doc if n not in code]
    for name, want in code.items():
        if name in doc:
            problems += _compare(f"artifacts: {name}", doc[name], want)
    return problems


def test_artifact_contract_matches_the_code() -> None:
    assert artifact_contract_problems((DOCS / "overview.md").read_text()) == []


def test_artifact_check_fails_on_mutated_copies() -> None:
    text = (DOCS / "overview.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith('{"artifact": "03-analysis.md"'))
    assert any(
        "03-analysis.md missing" in p for p in artifact_contract_problems(text.replace(line, ""))
    )
    assert artifact_contract_problems(text.replace(line, line.replace("NEEDS_INFO", "NEEDS_MORE")))
    assert artifact_contract_problems(text.replace(line, line.replace('": "READY"}', '": "DONE"}')))
    staging = next(ln for ln in text.splitlines() if '"15-staging-log.md"' in ln and "{" in ln)
    assert any(
        "also_success" in p
        for p in artifact_contract_problems(
            text.replace(
                staging, staging.replace(', "also_success": {"staging_status": ["SKIPPED"]}', "")
            )
        )
    )
    test_line = next(ln for ln in text.splitlines() if '"13-test-report.md"' in ln and "{" in ln)
    assert artifact_contract_problems(
        text.replace(test_line, test_line.replace('"count"', '"text"'))
    )


# --------------------------------------------------------------------------- (d) CLI in README


def cli_commands() -> list[str]:
    """Every command of ``orch``, subcommands as ``group sub`` (e.g. ``repo add``)."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[str]:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                if not getattr(sub, "hidden", False):
                    yield from walk(sub, (*path, name))
        elif path:
            yield " ".join(path)

    return list(walk(typer.main.get_command(app), ()))


def readme_command_problems(readme: str, commands: list[str]) -> list[str]:
    """Commands missing from the README's command table, and rows naming no command."""
    section = re.search(r"^## Commands\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if section is None:
        return ["README.md has no '## Commands' section"]
    documented: set[str] = set()
    for line in section.group(1).splitlines():
        if not line.startswith("|"):
            continue
        first_cell = line.split("|")[1]
        for span in re.findall(r"`orch ([^`]*)`", first_cell):
            words = []
            for token in span.split():
                if not re.fullmatch(r"[a-z][a-z0-9-]*", token):
                    break
                words.append(token)
            if words:
                documented.add(" ".join(words))
    problems = [f"`orch {c}` is missing from the README's command table" for c in commands]
    problems = [p for c, p in zip(commands, problems, strict=True) if c not in documented]
    prefixes = {" ".join(c.split()[:n]) for c in commands for n in range(1, len(c.split()) + 1)}
    problems += [
        f"the README's command table lists `orch {d}`, which orch does not have"
        for d in sorted(documented)
        if d not in prefixes
    ]
    return problems


def test_every_cli_command_is_in_the_readme() -> None:
    commands = cli_commands()
    assert {"init", "repo add", "task list", "db upgrade", "config docs"} <= set(commands)
    assert readme_command_problems((ROOT / "README.md").read_text(), commands) == []


def test_readme_check_fails_on_mutated_copies() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = cli_commands()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `orch worker`"))
    problems = readme_command_problems(readme.replace(row, ""), commands)
    assert problems == ["`orch worker` is missing from the README's command table"]
    extra = readme.replace(row, row + "\n| `orch frobnicate` | does nothing |")
    assert any("frobnicate" in p for p in readme_command_problems(extra, commands))
    assert readme_command_problems(readme, [*commands, "task frob"])
    assert readme_command_problems(readme.replace("## Commands", "## Orders"), commands)


def cli_options() -> dict[str, list[str]]:
    """Every command of ``orch`` with its long options (``--help`` aside)."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                if not getattr(sub, "hidden", False):
                    walk(sub, (*path, name))
        elif path:
            # A flag's negation (`--no-keep-branches`) goes with the flag.
            opts = [o for p in command.params for o in p.opts]
            found[" ".join(path)] = [o for o in opts if o.startswith("--") and o != "--help"]

    walk(typer.main.get_command(app), ())
    return found


# The README's `orch repo set` row says "change any of those later": the options of
# `orch repo add`'s row count for it too.
SHARED_ROWS = {"repo set": "repo add"}


def readme_option_problems(readme: str, options: Mapping[str, list[str]]) -> list[str]:
    """Options of a command that its row of the README's command table does not name. An
    option named in the section's text outside the table (``--json``) counts for every
    command."""
    section = re.search(r"^## Commands\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if section is None:
        return ["README.md has no '## Commands' section"]
    lines = section.group(1).splitlines()
    prose = " ".join(ln for ln in lines if not ln.startswith("|"))
    rows = [ln for ln in lines if ln.startswith("| `orch ")]

    def row_of(command: str) -> str:
        pattern = re.compile(r"`orch " + re.escape(command) + r"[ `]")
        return " ".join(r for r in rows if pattern.search(r.split("|")[1]))

    problems = []
    for command, opts in options.items():
        text = row_of(command) + " " + row_of(SHARED_ROWS.get(command, command))
        for opt in opts:
            if not re.search(re.escape(opt) + r"(?![\w-])", text + " " + prose):
                problems.append(f"`orch {command} {opt}` is not in the README's command table")
    return problems


def test_every_cli_option_is_in_its_readme_row() -> None:
    options = cli_options()
    assert "--remote" in options["repo add"]
    assert readme_option_problems((ROOT / "README.md").read_text(), options) == []


def test_option_check_fails_on_mutated_copies() -> None:
    readme = (ROOT / "README.md").read_text()
    options = cli_options()
    # An option the code has and the table does not.
    problems = readme_option_problems(readme, {**options, "task list": ["--frob"]})
    assert problems == ["`orch task list --frob` is not in the README's command table"]
    # An option named only in another command's row does not count for this one.
    assert readme_option_problems(readme, {"task cancel": ["--remote"]})
    # `--remote-name` does not stand in for `--remote`.
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `orch repo add NAME PATH`"))
    cut = readme.replace(row, row.replace("`--remote", "`--remote-name"))
    assert "`orch repo add --remote` is not in the README's command table" in (
        readme_option_problems(cut, options)
    )


# --------------------------------------------------------------------------- (f) set-up


def readme_setup_commands(readme: str) -> list[str]:
    """The one-line ``sh`` blocks of the README's set-up section, in order."""
    section = re.search(r"^## Set-up[^\n]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if section is None:
        return []
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section.group(1), re.S)]


ACTIVATE = {". .venv/bin/activate", "source .venv/bin/activate"}


def setup_problems(readme: str) -> list[str]:
    """The set-up commands must leave `orch` on the PATH for every later command that runs
    it bare: each makes `.venv` and activates it before anything else runs."""
    commands = readme_setup_commands(readme)
    if len(commands) != 2:
        return [f"the README's set-up section has {len(commands)} sh blocks, not 2"]
    problems = []
    for command in commands:
        steps = [s.strip() for s in command.split("&&")]
        if "\n" in command or steps[0] != "python3 -m venv .venv":
            problems.append(f"set-up command does not start with a fresh .venv: {command}")
        elif len(steps) < 2 or steps[1] not in ACTIVATE:
            problems.append(f"set-up command does not activate .venv: {command}")
        if any(".venv/bin/" in s for s in steps if s not in ACTIVATE):
            problems.append(f"set-up command runs a program by its .venv path: {command}")
    bare = [
        ln
        for block in re.findall(r"```sh\n(.*?)```", readme, re.S)
        for ln in block.splitlines()
        if ln.startswith("orch ")
    ]
    if not bare:
        problems.append("no README command runs `orch` bare: this check checks nothing")
    return problems


def test_the_setup_commands_put_orch_on_the_path() -> None:
    readme = (ROOT / "README.md").read_text()
    assert setup_problems(readme) == []
    # CI runs the first one exactly as printed.
    assert readme_setup_commands(readme)[0] in (ROOT / ".ci" / "run").read_text()


def test_setup_check_fails_on_mutated_copies() -> None:
    readme = (ROOT / "README.md").read_text()
    first = readme_setup_commands(readme)[0]
    # The set-up as it was: a venv made, never activated, `orch` run by its path.
    old = "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/orch demo"
    problems = setup_problems(readme.replace(first, old))
    assert any("does not activate" in p for p in problems)
    assert any("by its .venv path" in p for p in problems)
    assert setup_problems(readme.replace("## Set-up", "## Start"))


# --------------------------------------------------------------------------- (g) links


LINK = re.compile(r"\]\(([^)\s]+)\)")
UPWARD = re.compile(r"(?<![\w./])((?:\.\./)+[\w-][\w./-]*)")
CAPS_DOC = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")


def outside_reference_problems(root: Path, files: list[Path]) -> list[str]:
    """Links and paths in ``files`` that leave ``root`` or name a file it does not have:
    the project's docs must stand alone."""
    problems = []
    for path in files:
        text = path.read_text()
        where = path.relative_to(root)
        # Markdown links in the pages; code has brackets and parentheses of its own.
        links = LINK.findall(text) if path.suffix == ".md" else []
        targets = [t.split("#")[0] for t in links]
        for target in [t for t in targets if t and not re.match(r"[a-z]+:", t)]:
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(root):
                problems.append(f"{where}: link {target} leaves the repository")
            elif not resolved.exists():
                problems.append(f"{where}: link {target} names nothing in the repository")
        for target in UPWARD.findall(text):
            if not (path.parent / target).resolve().is_relative_to(root):
                problems.append(f"{where}: {target} leaves the repository")
        for name in CAPS_DOC.findall(text):
            if not (root / name).exists():
                problems.append(f"{where}: names {name}, which is not in the repository")
    return problems


def project_docs(root: Path) -> list[Path]:
    """The project's prose and code: README, AGENTS, CHANGELOG, docs/, src/."""
    files = [root / n for n in ("README.md", "AGENTS.md", "CHANGELOG.md")]
    files += sorted((root / "docs").rglob("*.md"))
    return files + sorted((root / "src" / "orchestrator").rglob("*.py"))


def test_the_docs_stand_alone() -> None:
    assert outside_reference_problems(ROOT, project_docs(ROOT)) == []


def test_outside_reference_check_fails_on_mutated_copies(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("see [here](docs/a.md) and `docs/a.md`\n")
    (tmp_path / "docs" / "a.md").write_text("back to [the README](../README.md#top)\n")
    files = [tmp_path / "README.md", tmp_path / "docs" / "a.md"]
    assert outside_reference_problems(tmp_path, files) == []
    (tmp_path / "docs" / "a.md").write_text(
        "See `../shared/DESIGN.md`, [it](../../shared/x.md), [gone](b.md), [web](https://x.org/a)"
    )
    problems = outside_reference_problems(tmp_path, files)
    assert problems == [
        "docs/a.md: link ../../shared/x.md leaves the repository",
        "docs/a.md: link b.md names nothing in the repository",
        "docs/a.md: ../../shared/x.md leaves the repository",
        "docs/a.md: names DESIGN.md, which is not in the repository",
    ]


# --------------------------------------------------------------------------- (e) agent docs

_HEADER = re.compile(r"\A<!-- orch-agent (\{.*?\}) -->")


def code_agents() -> dict[str, Row]:
    """Every role, reserved runner and non-LLM backend, with its kind and stages."""
    out: dict[str, Row] = {}
    for role in sorted(set(STAGE_ROLES.values())):
        stages = [s.value for s in PIPELINE if STAGE_ROLES[s] == role]
        out[role] = {"kind": "llm-role", "stages": stages}
    for runner, stage in RESERVED_RUNNERS.items():
        out[runner] = {"kind": "runner", "stages": [stage.value]}
    for backend in sorted(DETERMINISTIC_BACKENDS | HUMAN_BACKENDS):
        spec = "command:true" if backend == "command" else backend
        stages = []
        kind = ""
        for stage in PIPELINE:
            try:
                parsed = parse_agent_spec(spec, stage)
            except UsageError:
                continue
            stages.append(stage.value)
            kind = parsed.kind.value
        out[backend] = {"kind": kind, "stages": stages}
    return out


def agent_docs_problems(folder: Path) -> list[str]:
    """Agent docs missing, out of step with the registry, or about agents it does not know."""
    code = code_agents()
    problems = []
    docs: dict[str, Row] = {}
    for path in sorted(folder.glob("*.md")):
        m = _HEADER.match(path.read_text())
        if m is None:
            problems.append(f"{path.name}: no <!-- orch-agent {{...}} --> header on line 1")
            continue
        try:
            header = json.loads(m.group(1))
        except ValueError as exc:
            problems.append(f"{path.name}: header is not JSON ({exc})")
            continue
        if header.get("name") != path.stem:
            problems.append(f"{path.name}: header names {header.get('name')!r}")
        docs[path.stem] = header
    for name, want in code.items():
        if name not in docs:
            problems.append(f"docs/agents/{name}.md is missing")
        elif docs[name].get("status") == "planned":
            problems.append(f"docs/agents/{name}.md says planned, but the registry has it")
        else:
            problems += _compare(f"docs/agents/{name}.md", docs[name], want)
    for name, header in docs.items():
        if name not in code and header.get("status") != "planned":
            problems.append(f"docs/agents/{name}.md: the registry has no such agent")
    return problems


def test_every_agent_has_a_doc() -> None:
    assert agent_docs_problems(DOCS / "agents") == []
    assert {"analyst", "developer", "tester", "deployer", "test-runner", "patch", "manual"} <= {
        p.stem for p in (DOCS / "agents").glob("*.md")
    }


def test_agent_docs_check_fails_on_mutated_copies(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    shutil.copytree(DOCS / "agents", folder)
    (folder / "staging-runner.md").unlink()
    assert agent_docs_problems(folder) == ["docs/agents/staging-runner.md is missing"]
    shutil.copy(DOCS / "agents" / "staging-runner.md", folder)
    deployer = folder / "deployer.md"
    deployer.write_text(deployer.read_text().replace('"deploy-staging", ', "", 1))
    assert any("deployer.md: stages" in p for p in agent_docs_problems(folder))
    shutil.copy(DOCS / "agents" / "deployer.md", folder)
    (folder / "ghost.md").write_text('<!-- orch-agent {"name": "ghost", "kind": "runner"} -->\n')
    assert agent_docs_problems(folder) == ["docs/agents/ghost.md: the registry has no such agent"]


def test_a_planned_agent_must_not_be_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """reviewer.md says planned; once a stage uses the role, the doc must be rewritten."""
    assert agent_docs_problems(DOCS / "agents") == []
    roles = {**STAGE_ROLES, Stage.ANALYSIS: "reviewer"}
    monkeypatch.setattr(f"{__name__}.STAGE_ROLES", roles)
    problems = agent_docs_problems(DOCS / "agents")
    assert "docs/agents/reviewer.md says planned, but the registry has it" in problems
