"""Properties of the pure domain parsers: verdicts, the artifact key reader and renderer,
stages and pipelines, and the exit-code mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from orchestrator import self_deploy
from orchestrator.domain import artifacts as A
from orchestrator.domain import stages, verdicts
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import PIPELINE, Stage, TaskView, TransitionKind
from orchestrator.domain.verdicts import PARSERS, Verdict, VerdictStatus
from orchestrator.errors import UsageError
from orchestrator.proc_group import Outcome
from orchestrator.runners.base import fenced

from .core import LINE_BREAKS, hostile_text, patched, prop

# --------------------------------------------------------------------------- strategies

_CONTRACT_KEYS = sorted({k.name for spec in A.ARTIFACTS.values() for k in spec.keys})
_KEYS = [*_CONTRACT_KEYS, "other", "Result", "STATUS", "Failed"]
_CONTRACT_VALUES = {v for spec in A.ARTIFACTS.values() for k in spec.keys for v in k.values or ()}
_VALUES = [*sorted(_CONTRACT_VALUES), "0", "1", "", "passed", "pass", "OK", "true", "00", "٠"]

# A key line as agents really write them: bullets, bold, quotes and backticks around values.
key_line = st.builds(
    lambda bullet, bold, k, quote, v: f"{bullet}{bold}{k}{bold}: {quote}{v}{quote}",
    st.sampled_from(["", "- ", "* ", "+ ", "  "]),
    st.sampled_from(["", "**"]),
    st.sampled_from(_KEYS),
    st.sampled_from(["", "`", '"', "'"]),
    st.sampled_from(_VALUES),
)
line = st.one_of(
    key_line,
    st.builds(lambda a, b, c: a + b + c, key_line, st.sampled_from(LINE_BREAKS), key_line),
    st.sampled_from(["```", "~~~", "---", "# Test report", "", "result PASSED", "status=PASS"]),
    st.text(max_size=40),
)
artifact_text = st.lists(line, max_size=12).map("\n".join)


def claims(name: str) -> st.SearchStrategy[list[str]]:
    """Lines an agent might write for artifact ``name``: its own keys, each with its success
    value half the time, among other lines."""
    spec = A.ARTIFACTS[name]

    def claim(key: str, ok: bool, other: str, bold: bool) -> str:
        value = spec.success[key] if ok and key in spec.success else other
        return f"- **{key}**: {value}" if bold else f"{key}: {value}"

    one = st.builds(
        claim,
        st.sampled_from([k.name for k in spec.keys]),
        st.booleans(),
        st.sampled_from(_VALUES),
        st.booleans(),
    )
    return st.lists(one | line, max_size=12)


any_text = st.one_of(artifact_text, hostile_text)
parser_name = st.sampled_from(sorted(PARSERS))
# Each parser's strategy made once, not inside flatmap: one made there is made and validated
# anew for every example.
_NAMED_CLAIMS = {n: st.tuples(st.just(n), claims(n)) for n in sorted(PARSERS)}
parser_claims = parser_name.flatmap(_NAMED_CLAIMS.__getitem__)

BUDGETS = stages.Budgets(developer_retry_budget=2, infra_retry_budget=2, infra_retry_backoff_s=5)
OK = verdicts.passed("ok")
BAD = verdicts.failed("tests red")


def _consistent(text: str, name: str) -> bool:
    """Independent oracle: every success key of ``name`` given, always with one value, and
    that value a success value (``success`` or one of ``also_success``)."""
    found = A.parse_keys(text)
    spec = A.ARTIFACTS[name]
    return all(
        found.get(k) and len(set(found[k])) == 1 and found[k][0] in _passing(spec, k)
        for k in spec.success
    )


def _passing(spec: A.ArtifactSpec, key: str) -> set[str]:
    # Spelled out from the two fields, not through success_values, the code under test.
    return {spec.success[key], *spec.also_success.get(key, ())}


# --------------------------------------------------------------------------- broken parsers

_real_parse_artifact = verdicts.parse_artifact


def _first_value_wins(name: str, text: str | None) -> Verdict:
    """Broken: reads only the first line of each key, so a later contradiction is unseen."""
    if text is None:
        return verdicts.failed(f"{name} is missing")
    first = {k: v[:1] for k, v in A.parse_keys(text).items()}
    lines = [f"{k}: {v[0]}" for k, v in first.items() if v]
    return _real_parse_artifact(name, "\n".join(lines))


def _broken_parse_artifact() -> Any:
    return patched(verdicts, "parse_artifact", _first_value_wins)


def _raising_on_odd_counts() -> Any:
    """Broken: reads ``failed:`` with int(), which raises on a value that is not a number."""

    def parse(name: str, text: str | None) -> Verdict:
        for value in A.parse_keys(text or "").get("failed", []):
            int(value)
        return _real_parse_artifact(name, text)

    return patched(verdicts, "parse_artifact", parse)


def _first_key_decides() -> Any:
    """Broken: the first success key alone decides (13-test-report.md's status: unread)."""

    def parse(name: str, text: str | None) -> Verdict:
        v = _real_parse_artifact(name, text)
        key, want = next(iter(A.ARTIFACTS[name].success.items()))
        return verdicts.passed("first key", v.fields) if v.fields.get(key) == want else v

    return patched(verdicts, "parse_artifact", parse)


# --------------------------------------------------------------------------- verdicts


# A report that starts with all three success claims, then anything: a later line that
# contradicts one of them must still spoil it.
_success_first = st.tuples(
    st.permutations(["result: PASSED", "status: PASS", "failed: 0"]), claims(A.TEST_REPORT)
).map(lambda t: [*t[0], *t[1]])


@prop(
    "domain/verdicts.py _parse_tests_verdict",
    claims(A.TEST_REPORT) | _success_first,
    broken=_broken_parse_artifact,
)
def tests_report_no_pass_without_consistent_success(lines: list[str]) -> None:
    """13-test-report.md passes only when result, status and failed all say success."""
    text = "\n".join(lines)
    v = verdicts._parse_tests_verdict(text)
    if v.passed:
        assert _consistent(text, A.TEST_REPORT), text
        assert v.fields["result"] == "PASSED"
        assert v.fields["failed"] == "0"


@prop(
    "domain/verdicts.py parse_artifact",
    st.sampled_from(sorted(A.ARTIFACTS)) | hostile_text,
    st.none() | any_text,
    broken=_raising_on_odd_counts,
)
def parse_artifact_raises_only_key_error(name: str, text: str | None) -> None:
    """Any text, or none: a verdict with reasons; only an unknown artifact name raises."""
    if name not in A.ARTIFACTS:
        try:
            verdicts.parse_artifact(name, text)
        except KeyError:
            return
        raise AssertionError(f"unknown artifact {name!r} was parsed")
    v = verdicts.parse_artifact(name, text)
    assert v.status in (VerdictStatus.PASS, VerdictStatus.FAIL)
    assert v.reasons
    assert v.tool_error is None
    if v.passed:
        assert text is not None
        assert _consistent(text, name)


@prop("domain/verdicts.py PARSERS", parser_claims, broken=_broken_parse_artifact)
def every_parser_fails_closed(drawn: tuple[str, list[str]]) -> None:
    """Every stage's parser: a PASS only when each success key has its one success value."""
    name, lines = drawn
    text = "\n".join(lines)
    v = PARSERS[name](text)
    assert v.reasons
    if v.passed:
        assert _consistent(text, name), text
        spec = A.ARTIFACTS[name]
        assert all(v.fields.get(k) in _passing(spec, k) for k in spec.success), v.fields


@prop(
    "domain/verdicts.py PARSERS",
    parser_name,
    st.lists(
        st.sampled_from(["FAILED", "FAIL", "1", "NEEDS_INFO", "UNHEALTHY", "RED", "pass"]),
        min_size=1,
    ),
    st.booleans(),
    broken=_broken_parse_artifact,
)
def contradicting_line_spoils_success(name: str, bad: list[str], in_body: bool) -> None:
    """A rendered success plus any line giving a success key another value is not a PASS."""
    spec = A.ARTIFACTS[name]
    key = next(iter(spec.success))
    extra = "\n".join(f"- {key}: {b}" for b in bad)
    text = A.render_artifact(name, dict(spec.success), extra if in_body else "")
    if not in_body:
        text = f"{key}: {bad[0]}\n{text}"
    assert not PARSERS[name](text).passed


def _key_value(key: A.KeySpec) -> st.SearchStrategy[str | None]:
    value = (
        st.sampled_from(sorted(key.values))
        if key.values is not None
        else st.integers(0, 10**6).map(str) | st.just("0")
    )
    return st.none() | value | value


_KEY_VALUES = {
    n: st.tuples(
        st.just(n), st.fixed_dictionaries({k.name: _key_value(k) for k in A.ARTIFACTS[n].keys})
    )
    for n in sorted(PARSERS)
}
_rendered = parser_name.flatmap(_KEY_VALUES.__getitem__)


@prop(
    "domain/artifacts.py render_artifact -> domain/verdicts.py PARSERS",
    _rendered,
    hostile_text,
    broken=_first_key_decides,
)
def render_then_parse_round_trip(rendered: tuple[str, dict[str, str | None]], body: str) -> None:
    """What a producer renders (with any fenced body) is what the gate reads back."""
    name, drawn = rendered
    keys = {k: v for k, v in drawn.items() if v is not None}
    v = PARSERS[name](A.render_artifact(name, keys, fenced(body)))
    assert dict(v.fields) == keys, (v.fields, keys)
    spec = A.ARTIFACTS[name]
    assert v.passed == all(keys.get(k) in _passing(spec, k) for k in spec.success), v.reasons


# --------------------------------------------------------------------------- key reader


def _parse_keys_copy(*, split: Callable[[str], list[str]], fences: bool) -> Any:
    """A copy of parse_keys with one thing changed: how lines are split, or fences ignored."""

    def parse(text: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        in_fence = False
        for text_line in split(text):
            if fences and A._FENCE_RE.match(text_line):
                in_fence = not in_fence
                continue
            m = None if in_fence else A._KEY_LINE_RE.match(text_line)
            if m:
                value = m.group(2).strip().strip("`").strip("\"'").strip()
                found.setdefault(m.group(1).lower(), []).append(value)
        return found

    return patched(A, "parse_keys", parse)


def _split_on_newline_only() -> Any:
    """Broken: splits lines on \\n only, so a \\r or \\u2028 inside a value is kept."""
    return _parse_keys_copy(split=lambda t: t.split("\n"), fences=True)


def _reads_inside_fences() -> Any:
    """Broken: reads claims inside fenced code blocks (quoted output) too."""
    return _parse_keys_copy(split=str.splitlines, fences=False)


@prop("domain/artifacts.py parse_keys", any_text, broken=_split_on_newline_only)
def parse_keys_reads_one_line_claims(text: str) -> None:
    """Any text: keys are lower-case names, values are stripped and one line each."""
    found = A.parse_keys(text)
    lines = text.splitlines()
    for key, values in found.items():
        assert key == key.lower(), key
        assert key.isascii(), key
        assert key.isidentifier(), key
        for value in values:
            assert value == value.strip(), value
            assert not any(c in value for c in LINE_BREAKS), value
            assert any(key in line.lower() and value in line for line in lines), (key, value)


_canon_value = st.text().filter(
    lambda v: v == v.strip() and v[:1] not in "`\"'" and v[-1:] not in "`\"'"
)


@prop(
    "domain/artifacts.py render_artifact + parse_keys",
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True),
        _canon_value | hostile_text,
        max_size=6,
    ),
    any_text,
    broken=_reads_inside_fences,
)
def render_keys_parse_back_exactly(keys: dict[str, str], body: str) -> None:
    """Rendered keys (with a fenced body) read back as themselves, each once; a value that
    is not one line is refused by the renderer, never written as two claims."""
    try:
        text = A.render_artifact(A.TASK, keys, fenced(body))
    except ValueError:
        assert any(c in v for v in keys.values() for c in LINE_BREAKS), keys
        return
    found = A.parse_keys(text)
    assert set(found) == set(keys), (found, keys)
    for k, v in keys.items():
        assert len(found[k]) == 1, (k, found[k])
        canonical = v == v.strip() and v[:1] not in "`\"'" and v[-1:] not in "`\"'"
        if canonical:
            assert found[k] == [v], (k, found[k], v)


# --------------------------------------------------------------------------- stages

_real_parse_stage = stages.parse_stage
_real_validate_pipeline = stages.validate_pipeline
_real_next_transition = stages.next_transition


def _case_blind_parse_stage() -> Any:
    """Broken: any capitalisation of a stage name is taken."""

    def parse(name: str) -> Stage:
        return _real_parse_stage(name.lower())

    return patched(stages, "parse_stage", parse)


stage_name = st.one_of(
    st.builds(
        lambda pad1, s, pad2, case: pad1 + case(s.value) + pad2,
        st.sampled_from(["", " ", "\t", "\u00a0"]),
        st.sampled_from(PIPELINE),
        st.sampled_from(["", " ", "\n"]),
        st.sampled_from([str, str.upper, str.title]),
    ),
    st.sampled_from(["qa", "deploy_staging", "develop", "", "testing,deploy", "-"]),
    hostile_text,
)


@prop("domain/stages.py parse_stage", stage_name, broken=_case_blind_parse_stage)
def parse_stage_takes_only_stage_names(name: str) -> None:
    """A stage, exactly as named (whitespace aside), or a UsageError; round trips."""
    try:
        stage = stages.parse_stage(name)
    except UsageError as exc:
        refused = str(exc)
    else:
        assert stage.value == name.strip()
        assert stages.parse_stage(stage.value) is stage
        return
    assert "unknown stage" in refused
    assert name.strip() not in {s.value for s in PIPELINE}


def _monitor_without_deploy() -> Any:
    """Broken: forgets that the monitor needs the deploy stage."""

    def validate(names: Any) -> tuple[Stage, ...]:
        names = list(names)
        try:
            return _real_validate_pipeline(names)
        except UsageError as exc:
            if "needs the deploy stage" not in str(exc):
                raise
            chosen = {stages.parse_stage(n) for n in names}
            return tuple(s for s in PIPELINE if s in chosen)

    return patched(stages, "validate_pipeline", validate)


@prop(
    "domain/stages.py validate_pipeline",
    st.lists(stage_name, max_size=8)
    | st.sets(st.sampled_from([s.value for s in PIPELINE])).map(sorted),
    broken=_monitor_without_deploy,
)
def validate_pipeline_orders_and_requires(names: list[str]) -> None:
    """A valid pipeline in table order with every required stage, or a UsageError."""
    try:
        pipeline = stages.validate_pipeline(names)
    except UsageError:
        return
    assert list(pipeline) == sorted(set(pipeline), key=PIPELINE.index)
    assert set(pipeline) == {Stage(n.strip()) for n in names}
    for stage, spec in stages.STAGE_TRANSITIONS.items():
        assert spec.optional or stage in pipeline, stage
    assert Stage.POST_DEPLOY_MONITOR not in pipeline or Stage.DEPLOY in pipeline
    assert stages.validate_pipeline([s.value for s in pipeline]) == pipeline


def _outcome_blind_transition() -> Any:
    """Broken: decides on the verdict alone, as if every job had run."""

    def decide(task: TaskView, stage: Stage, outcome: OutcomeKind, *rest: Any) -> Any:
        return _real_next_transition(task, stage, OutcomeKind.COMPLETED, *rest)

    return patched(stages, "next_transition", decide)


@prop(
    "domain/stages.py next_transition",
    st.sampled_from(PIPELINE),
    st.sampled_from(list(OutcomeKind)),
    st.one_of(st.none(), st.sampled_from([OK, BAD])),
    st.integers(0, 5),
    st.integers(0, 5),
    broken=_outcome_blind_transition,
)
def only_completed_pass_moves_forward(
    stage: Stage, outcome: OutcomeKind, verdict: Verdict | None, dev: int, infra: int
) -> None:
    """Advance or done only for a job that ran and passed; a tool error defers or blocks."""
    task = TaskView("P-1", PIPELINE, developer_retries=dev, infra_retries=infra)
    t = stages.next_transition(task, stage, outcome, verdict, BUDGETS)
    forward = t.kind in (TransitionKind.ADVANCE, TransitionKind.DONE)
    assert forward == (outcome is OutcomeKind.COMPLETED and verdict is OK)
    assert t.reasons
    if outcome.is_tool_error:
        assert t.kind in (TransitionKind.DEFER, TransitionKind.BLOCK)


# --------------------------------------------------------------------------- exit codes

_real_map = self_deploy.map_exit_code_to_status


def _exit_code_first() -> Any:
    """Broken: looks at the exit code before asking whether our timeout killed it."""

    def mapping(exit_code: int | None, **kw: Any) -> self_deploy.ExitMapping:
        if exit_code == 0 and kw.get("kind", "command") == "command":
            return self_deploy.ExitMapping(self_deploy.ExitStatus.PASS, None, ["exit code 0"])
        return _real_map(exit_code, **kw)

    return patched(self_deploy, "map_exit_code_to_status", mapping)


# Weighted towards a process that ran and exited by itself, where the mapping has the most
# to decide; the rare flags and odd numbers still come up often.
exit_codes = st.one_of(
    st.sampled_from([0, 0, 1, 2, 5]), st.none(), st.integers(-300, 300), st.integers()
)
signals = st.one_of(st.none(), st.none(), st.none(), st.integers(-5, 70), st.integers())
start_errors = st.one_of(st.none(), st.none(), st.none(), st.text(max_size=20))
tests_ran = st.one_of(st.none(), st.sampled_from([-1, 0, 1]), st.integers(-5, 50), st.integers())
kinds = st.sampled_from(["pytest", "command"])
rarely = st.sampled_from([False, False, False, True])


def _check_mapping(
    m: self_deploy.ExitMapping, outcome: Outcome, kind: str, ran: int | None, collection: bool
) -> None:
    exit_code, signal, start_error = outcome.exit_code, outcome.signal, outcome.start_error
    timed_out, cancelled = outcome.timed_out, outcome.cancelled
    assert m.reasons
    assert (m.status is self_deploy.ExitStatus.TOOL_ERROR) == (m.tool_error is not None)
    assert m.outcome in OutcomeKind
    if m.status is self_deploy.ExitStatus.PASS:
        assert (exit_code, signal, start_error) == (0, None, None)
        assert not timed_out
        assert not cancelled
        if kind == "pytest":
            assert ran is not None
            assert ran > 0
            assert not collection
    if start_error is not None:
        assert m.tool_error == OutcomeKind.NOT_STARTED
    elif timed_out:
        assert m.tool_error == OutcomeKind.TIMEOUT
    elif cancelled or signal is not None or (exit_code is not None and exit_code < 0):
        assert m.tool_error == OutcomeKind.CRASHED
    elif kind == "pytest" and exit_code in (1, 5):
        assert m.status is self_deploy.ExitStatus.FAIL


def outcome_of(
    exit_code: int | None,
    signal: int | None,
    timed_out: bool,
    cancelled: bool,
    by_us: bool,
    uncertain: bool,
    start_error: str | None,
    stop_reason: str | None,
) -> Outcome:
    """A proc_group.Outcome with these fields (not every combination is one proc_group makes)."""
    return Outcome(
        exit_code=exit_code,
        signal=signal,
        timed_out=timed_out,
        cancelled=cancelled,
        signal_sent_by_us=by_us,
        duration_s=1.0,
        started_at=0.0,
        finished_at=1.0,
        log_path=Path("/nonexistent/run.log"),
        pid=None if start_error else 4242,
        pgid=None,
        marker="m",
        termination_uncertain=uncertain,
        start_error=start_error,
        stop_reason=stop_reason,
    )


stop_reasons = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(["stalled: no output for 3s", "timeout after 1s", "cancelled", "stalled"]),
    st.text(max_size=20),
)
_ended_by_itself = st.builds(
    outcome_of,
    st.sampled_from([0, 0, 0, 1, 2]),
    st.none(),
    st.just(False),
    st.just(False),
    st.just(False),
    st.booleans(),
    st.none(),
    st.none(),
)
# Half of them a process that ended by itself (where the parser's reading of its output
# decides), half any combination of fields, including ones proc_group never makes.
outcomes = st.one_of(
    _ended_by_itself,
    st.builds(
        outcome_of, exit_codes, signals, rarely, rarely, rarely, rarely, start_errors, stop_reasons
    ),
)


@prop(
    "self_deploy.py map_exit_code_to_status",
    outcomes,
    kinds,
    tests_ran,
    rarely,
    broken=_exit_code_first,
)
def exit_mapping_fails_closed(
    outcome: Outcome, kind: Any, ran: int | None, collection: bool
) -> None:
    """PASS only for a process that ran, exited 0 by itself, and (pytest) ran tests."""
    m = self_deploy.map_exit_code_to_status(
        outcome.exit_code,
        kind=kind,
        timed_out=outcome.timed_out,
        signal=outcome.signal,
        signal_sent_by_us=outcome.signal_sent_by_us,
        cancelled=outcome.cancelled,
        start_error=outcome.start_error,
        tests_ran=ran,
        collection_failed=collection,
    )
    _check_mapping(m, outcome, kind, ran, collection)


_real_map_outcome = self_deploy.map_outcome


def _drops_timeout() -> Any:
    """Broken: map_outcome forgets to pass on that our timeout fired."""
    from dataclasses import replace

    def mapping(outcome: Outcome, **kw: Any) -> self_deploy.ExitMapping:
        return _real_map_outcome(replace(outcome, timed_out=False), **kw)

    return patched(self_deploy, "map_outcome", mapping)


@prop(
    "self_deploy.py map_outcome", outcomes, kinds, tests_ran, st.booleans(), broken=_drops_timeout
)
def map_outcome_is_the_one_mapping(
    outcome: Outcome, kind: Any, ran: int | None, collection: bool
) -> None:
    """map_outcome says what map_exit_code_to_status says of the same fields, plus warnings."""
    m = self_deploy.map_outcome(outcome, kind=kind, tests_ran=ran, collection_failed=collection)
    _check_mapping(m, outcome, kind, ran, collection)
    if outcome.termination_uncertain:
        assert any("could not be confirmed dead" in r for r in m.reasons)
