"""Properties of the agent parsers: the LLM backends' output parsers (claude, codex,
aider) and the agent spec and ``--agent STAGE=SPEC`` readers."""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from orchestrator.agents import aider, claude, codex, registry
from orchestrator.agents.common import MAX_COST_USD, MAX_TOKENS, LlmResult
from orchestrator.agents.stall import is_stall
from orchestrator.domain import stages
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import PIPELINE, Stage
from orchestrator.errors import UsageError
from orchestrator.proc_group import Outcome

from .core import hostile_text, patched, prop
from .props_domain import outcomes

# --------------------------------------------------------------------------- strategies

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
number = st.one_of(
    st.integers(-10, 10**7), st.floats(), st.sampled_from([0, 0.0, -1, 1.5, True, "12"])
)


def _dumps(obj: object) -> str:
    return json.dumps(obj)


# Lines a CLI prints: its JSON, warnings, half-written JSON, and JSON nested deeper than
# the decoder's recursion limit.
noise_line = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["{not json", "{", "[]", "null", '{"type": "result"', "   {}  "]),
    st.sampled_from([3, 3000]).map(lambda n: '{"type": "result", "x": ' + "[" * n + "]" * n + "}"),
    json_value.map(_dumps),
)

denial = st.fixed_dictionaries(
    {"tool_name": st.text(max_size=8)},
    optional={"tool_input": st.dictionaries(st.sampled_from(["command", "path"]), st.text())},
)
_claude_fields = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["result", "result", "assistant", "system"]) | st.text(max_size=6),
        "subtype": st.sampled_from(
            ["success", "error_max_turns", "error_max_budget_usd", "error_during_execution"]
        )
        | json_value,
        "is_error": st.sampled_from([False, True, None, "false", "true", 0, 1]),
        "permission_denials": st.just([]) | st.lists(denial, max_size=2) | json_value,
        "total_cost_usd": number,
        "usage": st.dictionaries(
            st.sampled_from(["input_tokens", "output_tokens", "cache_read_input_tokens"]), number
        )
        | json_value,
        "api_error_status": st.none() | st.integers(100, 599),
        "num_turns": number,
        "result": st.none() | st.text(max_size=20),
        "errors": st.lists(st.text(max_size=10), max_size=2) | json_value,
    },
)
_CLAUDE_SUCCESS = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "num_turns": 2,
    "total_cost_usd": 0.01,
    "usage": {"input_tokens": 10, "output_tokens": 5},
    "permission_denials": [],
}
# A real success with a few of its fields changed, or any mix of result-ish fields.
claude_result = st.one_of(
    _claude_fields.map(lambda changed: _dumps({**_CLAUDE_SUCCESS, **changed})),
    _claude_fields.map(_dumps),
)
claude_output = st.one_of(
    st.lists(claude_result | noise_line, max_size=6).map("\n".join),
    # A first and a last result object, which need not agree.
    st.tuples(claude_result, st.lists(claude_result | noise_line, max_size=3), claude_result).map(
        lambda t: "\n".join([t[0], *t[1], t[2]])
    ),
)


def _json_lines(output: str) -> list[dict[str, Any]]:
    """Independent oracle: each line that is, by itself, a JSON object."""
    found = []
    for text_line in output.splitlines():
        stripped = text_line.strip()
        if not stripped.startswith("{"):
            continue
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _ran_clean(o: Outcome) -> bool:
    """The process started, was neither stopped nor killed, and exited 0 by itself."""
    return (
        o.start_error is None
        and not o.timed_out
        and not o.cancelled
        and o.signal is None
        and o.exit_code == 0
        and not is_stall(o.stop_reason)
    )


def _check_figures(r: LlmResult) -> None:
    assert r.outcome in OutcomeKind
    assert r.reasons
    # At most MAX_COST_USD: PostgreSQL's SUM of two larger (finite) costs overflows.
    assert r.cost_usd is None or 0 <= r.cost_usd <= MAX_COST_USD, r.cost_usd
    for tokens in (r.tokens_in, r.tokens_out):
        # At most MAX_TOKENS: what the jobs table's INTEGER columns hold on PostgreSQL.
        assert tokens is None or (isinstance(tokens, int) and 0 <= tokens <= MAX_TOKENS), tokens


# --------------------------------------------------------------------------- claude

_real_result_object = claude._result_object


def _first_result_wins() -> Any:
    """Broken: takes the first result object instead of the last one."""

    def first(output: str) -> dict[str, Any] | None:
        return next((o for o in _json_lines(output) if o.get("type") == "result"), None)

    return patched(claude, "_result_object", first)


@prop("agents/claude.py parse_claude", outcomes, claude_output, broken=_first_result_wins)
def claude_completed_only_on_a_clean_success(outcome: Outcome, output: str) -> None:
    """COMPLETED only when the run ended by itself and its last result object is a success
    (subtype success, is_error false, no permission denials, exit 0), or the CLI's own
    limit (max turns, its budget cap: any exit code), which ``cut_short`` then says."""
    r = claude.parse_claude(outcome, output, max_turns=3, permission_mode="acceptEdits")
    _check_figures(r)
    if r.outcome is not OutcomeKind.COMPLETED:
        assert not r.cut_short, r
        return
    results = [o for o in _json_lines(output) if o.get("type") == "result"]
    assert results, output
    last = results[-1]
    if r.cut_short:
        assert _ran_clean(replace(outcome, exit_code=0)), outcome
        assert outcome.exit_code is not None, outcome
        assert last.get("subtype") in ("error_max_turns", "error_max_budget_usd"), last
        return
    assert _ran_clean(outcome), outcome
    assert last.get("subtype") == "success", last
    assert last.get("is_error") is False, last
    denials = last.get("permission_denials")
    assert not (isinstance(denials, list) and denials), last


# --------------------------------------------------------------------------- codex

codex_event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["turn.completed", "turn.failed", "error", "item.completed", "thread.started"]
        )
        | st.text(max_size=6)
    },
    optional={
        "usage": st.dictionaries(st.sampled_from(["input_tokens", "output_tokens"]), number)
        | json_value,
        "error": st.fixed_dictionaries({"message": st.text(max_size=10)}) | json_value,
        "message": json_value,
    },
).map(_dumps)


def _turn(kind: str) -> st.SearchStrategy[str]:
    return st.fixed_dictionaries(
        {"type": st.just(kind)}, optional={"usage": json_value, "error": json_value}
    ).map(_dumps)


codex_output = st.one_of(
    st.lists(codex_event | noise_line, max_size=6).map("\n".join),
    # A failed turn and a completed one in the same run, in either order.
    st.tuples(_turn("turn.failed"), _turn("turn.completed"), st.lists(codex_event, max_size=3))
    .flatmap(lambda t: st.permutations([t[0], t[1], *t[2]]))
    .map("\n".join),
)
prices = st.floats(0, 1000)

_real_parse_codex = codex.parse_codex


def _completed_turn_wins() -> Any:
    """Broken: one turn.completed on a clean exit is enough, whatever else failed."""

    def parse(outcome: Outcome, output: str, **kw: Any) -> LlmResult:
        r = _real_parse_codex(outcome, output, **kw)
        seen = any(e.get("type") == "turn.completed" for e in _json_lines(output))
        if seen and outcome.exit_code == 0 and r.outcome is OutcomeKind.CRASHED:
            return replace(r, outcome=OutcomeKind.COMPLETED)
        return r

    return patched(codex, "parse_codex", parse)


@prop(
    "agents/codex.py parse_codex",
    outcomes,
    codex_output,
    prices,
    prices,
    broken=_completed_turn_wins,
)
def codex_completed_only_on_clean_turns(
    outcome: Outcome, output: str, price_in: float, price_out: float
) -> None:
    """COMPLETED only for a clean run with a turn.completed event and no turn.failed."""
    r = codex.parse_codex(outcome, output, price_in_per_mtok=price_in, price_out_per_mtok=price_out)
    _check_figures(r)
    if r.outcome is not OutcomeKind.COMPLETED:
        return
    assert _ran_clean(outcome), outcome
    kinds = [e.get("type") for e in _json_lines(output)]
    assert "turn.completed" in kinds, kinds
    assert "turn.failed" not in kinds, kinds


# --------------------------------------------------------------------------- aider

aider_event = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["message_send", "message_send_exception", "launched"])
        | st.text(max_size=6)
    },
    optional={
        "properties": st.dictionaries(
            st.sampled_from(["prompt_tokens", "completion_tokens", "cost", "exception"]), number
        )
        | json_value
    },
).map(_dumps)
analytics = st.none() | st.lists(aider_event | noise_line, max_size=6).map("\n".join)

_real_parse_aider = aider.parse_aider


def _done_without_diff() -> Any:
    """Broken: an answered run is DONE, diff or no diff."""

    def parse(outcome: Outcome, log: str | None, **kw: Any) -> aider.AiderResult:
        r = _real_parse_aider(outcome, log, **kw)
        return replace(r, dev_status="DONE") if r.dev_status else r

    return patched(aider, "parse_aider", parse)


@prop(
    "agents/aider.py parse_aider",
    outcomes,
    analytics,
    st.booleans(),
    st.text(max_size=20),
    broken=_done_without_diff,
)
def aider_done_only_with_an_answer_and_a_diff(
    outcome: Outcome, log: str | None, has_diff: bool, output: str
) -> None:
    """COMPLETED only for a clean run whose analytics log has a message_send; DONE needs a
    diff, FAILED is the answer without one, and anything else writes no dev_status."""
    parsed = aider.parse_aider(outcome, log, has_diff=has_diff, output=output)
    r = parsed.result
    _check_figures(r)
    if r.outcome is not OutcomeKind.COMPLETED:
        assert parsed.dev_status is None
        return
    assert _ran_clean(outcome), outcome
    assert log is not None
    assert any(e.get("event") == "message_send" for e in _json_lines(log)), log
    assert parsed.dev_status == ("DONE" if has_diff else "FAILED")


# --------------------------------------------------------------------------- agent specs

_NAMES = sorted(
    registry.LLM_BACKENDS
    | registry.HUMAN_BACKENDS
    | registry.DETERMINISTIC_BACKENDS
    | set(registry.RESERVED_RUNNERS)
)
template_token = st.one_of(
    st.sampled_from(
        [
            *(f"{{{f}}}" for f in sorted(registry.TEMPLATE_FIELDS)),
            "{nope}",
            "{task!r}",
            "{task!x}",
            "{task:>5}",
            "{task:d}",
            "{task:{stage}}",
            "{}",
            "{0}",
            "{task.upper}",
            "{task[0]}",
            "{{",
            "}}",
            "{",
            "}",
            "'",
            '"',
            "\\",
            " ",
            " ",
            "python",
            "agent.py",
            "-x",
            "--",
        ]
    ),
    st.text(max_size=6),
)
_plain_token = st.sampled_from(
    [*(f"{{{f}}}" for f in sorted(registry.TEMPLATE_FIELDS)), "python", "a.py", "-x", "{{", "}}"]
)
# A template right in every part but one field with a conversion or a format spec.
_near_template = st.tuples(
    st.lists(_plain_token, max_size=3),
    st.sampled_from(["{task!r}", "{task!x}", "{task:>5}", "{task:d}", "{task:{stage}}"]),
    st.lists(_plain_token, max_size=3),
).map(lambda t: "command:" + " ".join([*t[0], t[1], *t[2]]))
agent_spec = st.one_of(
    _near_template,
    st.lists(template_token, max_size=8).map(lambda parts: "command:" + "".join(parts)),
    st.builds(
        lambda pad, name, end: pad + name + end,
        st.sampled_from(["", " ", "\t"]),
        st.sampled_from([*_NAMES, "Claude", "command", "command:"]),
        st.sampled_from(["", " ", "\n", "x"]),
    ),
    hostile_text,
)
field_values = st.fixed_dictionaries({f: st.text() for f in registry.TEMPLATE_FIELDS})


@contextlib.contextmanager
def _unchecked_templates() -> Iterator[None]:
    """Broken: command templates are split but their fields are not checked."""
    registry.parse_agent_spec.cache_clear()
    try:
        with patched(registry, "_check_template", lambda argv, spec: None):
            yield
    finally:
        # What the broken copy accepted must not stay cached for the real one.
        registry.parse_agent_spec.cache_clear()


@prop(
    "agents/registry.py parse_agent_spec",
    agent_spec,
    st.none() | st.sampled_from(PIPELINE),
    field_values,
    broken=_unchecked_templates,
)
def agent_spec_accepts_only_what_can_run(
    spec: str, stage: Stage | None, fields: dict[str, str]
) -> None:
    """An AgentSpec that can run (a command template formats with any field values; a
    runner or backend only on a stage it can do), or a UsageError."""
    try:
        parsed = registry.parse_agent_spec(spec, stage)
    except UsageError:
        return
    assert parsed.spec == spec.strip()
    if parsed.backend == "command":
        assert parsed.template
        for part in parsed.template:
            string.Formatter().vformat(part, (), fields)
        return
    assert parsed.backend == spec.strip()
    assert parsed.backend in _NAMES
    if parsed.backend in registry.RESERVED_RUNNERS:
        assert stage in (None, registry.RESERVED_RUNNERS[parsed.backend])
    if parsed.backend in ("aider", "patch"):
        assert stage in (None, Stage.DEVELOPMENT)


def _lenient_assignments() -> Any:
    """Broken: takes any stage, in the pipeline or not, and any agent for it."""

    def parse(pairs: list[str], pipeline: tuple[Stage, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for pair in pairs:
            name, sep, spec = pair.partition("=")
            if not sep or not spec.strip():
                msg = f"--agent wants STAGE=SPEC, got {pair!r}"
                raise UsageError(msg)
            out[stages.parse_stage(name).value] = registry.parse_agent_spec(spec).spec
        return out

    return patched(registry, "parse_agent_assignments", parse)


def _pipeline(names: list[Stage]) -> tuple[Stage, ...]:
    try:
        return stages.validate_pipeline([s.value for s in names])
    except UsageError:
        return stages.DEFAULT_STAGES


pair = st.one_of(
    st.builds(
        lambda s, sep, spec: f"{s}{sep}{spec}",
        st.sampled_from([s.value for s in PIPELINE]) | st.sampled_from([" testing", "qa", ""]),
        st.sampled_from(["=", "=", "", "=="]),
        # Mostly a real agent name: whether it may do that stage is the question.
        st.one_of(st.sampled_from(_NAMES), st.sampled_from(_NAMES), agent_spec),
    ),
    hostile_text,
)


@prop(
    "agents/registry.py parse_agent_assignments",
    st.lists(pair, max_size=5),
    st.lists(st.sampled_from(PIPELINE)).map(_pipeline),
    broken=_lenient_assignments,
)
def agent_assignments_only_for_the_pipeline(pairs: list[str], pipeline: tuple[Stage, ...]) -> None:
    """Each stage of the pipeline gets the last agent given for it, one that can do that
    stage; a pair naming another stage, or no agent, is a UsageError."""
    try:
        out = registry.parse_agent_assignments(pairs, pipeline)
    except UsageError:
        return
    expected: dict[str, str] = {}
    for p in pairs:
        name, _, spec = p.partition("=")
        expected[Stage(name.strip()).value] = spec.strip()
    assert out == expected, (out, expected)
    for stage_value, spec in out.items():
        assert Stage(stage_value) in pipeline
        assert registry.parse_agent_spec(spec, Stage(stage_value)).spec == spec
