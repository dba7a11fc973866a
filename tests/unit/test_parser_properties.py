"""Every parser's properties (tests/unit/parser_properties), at suite size: each holds on
the real parser, and each fails on a broken copy of it, so none of them cannot fail.

``bench/parsers_fuzz.py`` runs the same properties at 100,000 examples.
"""

from __future__ import annotations

import pytest
from hypothesis.errors import FailedHealthCheck, InvalidArgument, Unsatisfiable
from parser_properties import PROPERTIES

# A few hundred examples each keeps the suite fast; the bench goes to 100,000.
SUITE_EXAMPLES = 200
# Without shrinking, a property finds its broken parser well within this.
BROKEN_EXAMPLES = 3000

NAMES = sorted(PROPERTIES)


@pytest.mark.parametrize("name", NAMES)
def test_property_holds(name: str) -> None:
    prop = PROPERTIES[name]
    prop.runs = 0
    prop.hypothesis_test(SUITE_EXAMPLES)()
    assert prop.runs > 0


@pytest.mark.parametrize("name", NAMES)
def test_property_catches_a_broken_parser(name: str) -> None:
    prop = PROPERTIES[name]
    prop.runs = 0
    test = prop.hypothesis_test(BROKEN_EXAMPLES, database=False, shrink=False)
    with prop.broken(), pytest.raises(Exception) as caught:  # noqa: PT011 (any failure)
        test()
    # Hypothesis refusing to run is not the property catching anything.
    assert not isinstance(caught.value, FailedHealthCheck | InvalidArgument | Unsatisfiable)
    assert prop.runs > 0


def test_every_parser_has_a_property() -> None:
    parsers = {p.parser for p in PROPERTIES.values()}
    wanted = [
        "parse_artifact",
        "PARSERS",
        "parse_keys",
        "render_artifact",
        "map_exit_code_to_status",
        "map_outcome",
        "parse_claude",
        "parse_codex",
        "parse_aider",
        "read_junit",
        "read_total",
        "parse_agent_spec",
        "parse_agent_assignments",
        "parse_stage",
        "validate_pipeline",
        "parse_markers",
        "classify_retest_failure",
        "classify_git_failure",
        "parse_loopback_url",
        "parse_worker_id",
        "split_command",
    ]
    missing = [w for w in wanted if not any(w in p for p in parsers)]
    assert not missing, missing
