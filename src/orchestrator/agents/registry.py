"""Who can do a stage: LLM backends, deterministic backends and the reserved runners.

An agent spec is a string: a backend name (``claude``, ``patch``, ``manual`` ...), a
reserved runner (``test-runner`` ...), or ``command:<argv template>``. Templates are split
with shlex into argv; they never reach a shell.
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.domain.stages import PIPELINE, STAGE_TRANSITIONS, Stage
from orchestrator.errors import UsageError


class AgentKind(StrEnum):
    """How an agent is run."""

    LLM = "llm"
    DETERMINISTIC = "deterministic"
    RUNNER = "runner"
    HUMAN = "human"


LLM_BACKENDS = frozenset({"claude", "codex", "aider"})
DETERMINISTIC_BACKENDS = frozenset({"command", "patch"})
HUMAN_BACKENDS = frozenset({"manual"})

# Reserved deterministic runners, each bound to the one stage it can do.
RESERVED_RUNNERS: dict[str, Stage] = {
    "test-runner": Stage.TESTING,
    "staging-runner": Stage.DEPLOY_STAGING,
    "deploy-finalizer": Stage.DEPLOY,
    "post-deploy-monitor": Stage.POST_DEPLOY_MONITOR,
}

# The LLM role that does a stage when its agent is an LLM (and the hybrid fallback when a
# reserved runner is switched off or out of scope).
STAGE_ROLES: dict[Stage, str] = {
    Stage.ANALYSIS: "analyst",
    Stage.DEVELOPMENT: "developer",
    Stage.TESTING: "tester",
    Stage.DEPLOY_STAGING: "deployer",
    Stage.DEPLOY: "deployer",
    Stage.POST_DEPLOY_MONITOR: "deployer",
}

# Templates may name these fields; anything else is refused when the repo is registered.
TEMPLATE_FIELDS = frozenset({"prompt_file", "worktree", "artifact_dir", "task", "stage"})

DEFAULT_LLM_BACKEND = "claude"


@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec."""

    spec: str
    backend: str
    kind: AgentKind
    template: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The agent's name as shown and logged (``command`` for templates)."""
        return self.backend


@functools.lru_cache(maxsize=256)
def parse_agent_spec(spec: str, stage: Stage | None = None) -> AgentSpec:
    """Parse and validate an agent spec, optionally for a given stage (pure, so cached)."""
    spec = spec.strip()
    if spec.startswith("command:"):
        template = spec.removeprefix("command:").strip()
        try:
            argv = tuple(shlex.split(template))
        except ValueError as exc:
            msg = f"agent {spec!r}: cannot split the command: {exc}"
            raise UsageError(msg) from exc
        if not argv:
            msg = "agent 'command:' needs an argv template, e.g. command:python agent.py {task}"
            raise UsageError(msg)
        _check_template(argv, spec)
        return AgentSpec(spec, "command", AgentKind.DETERMINISTIC, argv)
    if spec in RESERVED_RUNNERS:
        bound = RESERVED_RUNNERS[spec]
        if stage is not None and stage is not bound:
            msg = f"{spec} can only do the {bound.value} stage, not {stage.value}"
            raise UsageError(msg)
        return AgentSpec(spec, spec, AgentKind.RUNNER)
    if spec in LLM_BACKENDS:
        if spec == "aider" and stage is not None and stage is not Stage.DEVELOPMENT:
            # aider edits the repository and cannot write an artifact outside it.
            msg = f"aider can only do the development stage, not {stage.value}"
            raise UsageError(msg)
        return AgentSpec(spec, spec, AgentKind.LLM)
    if spec in HUMAN_BACKENDS:
        return AgentSpec(spec, spec, AgentKind.HUMAN)
    if spec == "patch":
        if stage is not None and stage is not Stage.DEVELOPMENT:
            msg = f"patch is a developer backend; it cannot do {stage.value}"
            raise UsageError(msg)
        return AgentSpec(spec, spec, AgentKind.DETERMINISTIC)
    known = sorted(LLM_BACKENDS | HUMAN_BACKENDS | {"patch"} | set(RESERVED_RUNNERS))
    msg = f"unknown agent {spec!r} (known: {', '.join(known)}, or command:<argv template>)"
    raise UsageError(msg)


def _check_template(argv: tuple[str, ...], spec: str) -> None:
    import string

    for part in argv:
        try:
            fields = [(f, c, s) for _, f, s, c in string.Formatter().parse(part) if f is not None]
        except ValueError as exc:
            msg = f"agent {spec!r}: bad template {part!r}: {exc}"
            raise UsageError(msg) from exc
        # A conversion or format spec ({task!x}, {task:d}, {task:{stage}}) passes parse()
        # but can fail when the job is launched: a template names plain fields only.
        decorated = [f for f, conversion, format_spec in fields if conversion or format_spec]
        if decorated:
            msg = (
                f"agent {spec!r}: template {part!r}: fields take no conversion or format spec "
                f"({', '.join(decorated)}); write plain fields such as {{task}}"
            )
            raise UsageError(msg)
        names = [f for f, _, _ in fields]
        unknown = [n for n in names if n not in TEMPLATE_FIELDS]
        if unknown:
            msg = (
                f"agent {spec!r}: unknown template field(s) {unknown}; "
                f"known: {sorted(TEMPLATE_FIELDS)}"
            )
            raise UsageError(msg)


def default_agents(stages: tuple[Stage, ...]) -> dict[str, str]:
    """The default agent of each stage of a pipeline (``STAGE_TRANSITIONS``'s table)."""
    defaults = {
        Stage.ANALYSIS: DEFAULT_LLM_BACKEND,
        Stage.DEVELOPMENT: DEFAULT_LLM_BACKEND,
    }
    out: dict[str, str] = {}
    for stage in stages:
        out[stage.value] = defaults.get(stage, STAGE_TRANSITIONS[stage].default_agent)
    return out


def parse_agent_assignments(pairs: list[str], stages: tuple[Stage, ...]) -> dict[str, str]:
    """``STAGE=SPEC`` pairs, validated against the pipeline."""
    from orchestrator.domain.stages import parse_stage

    out: dict[str, str] = {}
    for pair in pairs:
        stage_name, sep, spec = pair.partition("=")
        if not sep or not spec.strip():
            msg = f"--agent wants STAGE=SPEC, got {pair!r}"
            raise UsageError(msg)
        stage = parse_stage(stage_name)
        if stage not in stages:
            msg = f"--agent {pair!r}: stage {stage.value} is not in this repo's pipeline"
            raise UsageError(msg)
        out[stage.value] = parse_agent_spec(spec, stage).spec
    return out


ALL_STAGE_NAMES = tuple(s.value for s in PIPELINE)
