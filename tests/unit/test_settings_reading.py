"""The settings read without pydantic are the settings pydantic-settings reads.

``config.load_settings`` reads the environment itself (``read_plainly``) when every
``ORCH_*`` value is a spelling whose meaning is beyond doubt, and hands anything else to
pydantic-settings (``read_by_pydantic``). The property: for any environment, whenever the
plain reading reads, pydantic reads the same settings (each value equal, of the same type);
where pydantic refuses, the plain reading leaves it to pydantic. It is also shown to fail on
a plain reading that misreads one spelling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from orchestrator import config
from orchestrator.config import Settings, load_settings, read_by_pydantic, read_plainly
from orchestrator.errors import ConfigError

KINDS = {f.name: str(f.type) for f in fields(Settings)}

# Spellings at the edge of "beyond doubt", for every type: pydantic reads some of them and
# refuses others; the plain reading must take none it would read differently.
# fmt: off
ODD = [
    "", " ", "1 ", " 1", "+1", "-1", "-0", "01", "007", "1_000", "1e3", "1E3", "1.", ".5",
    "0.0", "1.0", "2.50", "00.5", "inf", "-inf", "nan", "True", "TRUE", "False", "yes",
    "no", "on", "off", "t", "f", "y", "n", "none", "null", "\u0661", "\uff11", "1\n",
    "~", "~/x", "/tmp/orch home", "a=b,c", "shared", "none", "agent=none,suite=shared",
    "127.0.0.1", "0.0.0.0", "example.org", "http://x", "ORCH_SECRET", "sekrit",
    "acceptEdits", "plan", "read-only", "bogus", "99999999999999999999", "65535", "65536",
]
# fmt: on

# What an environment variable can hold: no NUL, no lone surrogate.
_TEXT = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))

PLAIN_FOR = {
    "int": st.integers(0, 10**7).map(str),
    "float": st.builds(
        lambda whole, part: f"{whole}.{part}" if part is not None else str(whole),
        st.integers(0, 10**6),
        st.none() | st.integers(0, 999),
    ),
    "bool": st.sampled_from(["true", "false", "1", "0", "on", "off", "yes", "no", "t", "f"]),
    "str": st.text(_TEXT, max_size=12),
    "Path": st.text(_TEXT, min_size=1, max_size=12),
}

_VALUE = st.sampled_from(ODD)


def _value(kind: str) -> st.SearchStrategy[str]:
    return PLAIN_FOR[kind] | _VALUE


def _spelling(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([f"ORCH_{name.upper()}", f"orch_{name}", f"Orch_{name.title()}"])


# Each setting's (spelling, value), made once: strategies made inside flatmap were made and
# validated anew for every example, most of these properties' time.
_VARIABLE_FOR = {n: st.tuples(_spelling(n), _value(KINDS[n])) for n in sorted(KINDS)}

# A name may come twice, spelled apart (ORCH_PAUSED and orch_paused): the last one wins.
ENVIRONMENTS = st.lists(
    st.sampled_from(sorted(KINDS)).flatmap(_VARIABLE_FOR.__getitem__), max_size=8
).map(dict)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` without any ``ORCH_*`` variable of its own, plus ``values``."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.upper().startswith("ORCH_")]:
            del os.environ[key]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _by_pydantic() -> Settings | str:
    try:
        return read_by_pydantic({})
    except ConfigError as exc:
        return str(exc)


def _same(a: Settings, b: Settings) -> bool:
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        and type(getattr(a, f.name)) is type(getattr(b, f.name))
        for f in fields(Settings)
    )


def check_one_reading(env: dict[str, str]) -> bool:
    """The property on one environment; True when the plain reading read it."""
    with environment(env):
        plain = read_plainly({})
        if plain is None:
            return False
        pydantic = _by_pydantic()
    assert isinstance(pydantic, Settings), (env, pydantic)
    assert _same(plain, pydantic), env
    return True


def the_property(env: dict[str, str]) -> None:
    check_one_reading(env)


@pytest.fixture
def in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here: the plain reading may read


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(env=ENVIRONMENTS)
def test_the_plain_reading_is_pydantics(in_empty_folder: None, env: dict[str, str]) -> None:
    the_property(env)


# Arguments as a caller passes them: of the field's own type, or of one pydantic converts
# (a bool or a str for an int, an int for a float, a str for a path).
ARGUMENT_FOR = {
    "int": st.integers(-5, 10**6) | st.booleans() | st.integers(0, 99).map(str),
    "float": st.floats(-1, 10**6, allow_nan=False) | st.integers(0, 9),
    "bool": st.booleans() | st.integers(0, 1),
    "str": st.text(_TEXT, max_size=12),
    "Path": st.text(_TEXT, min_size=1, max_size=12).map(Path) | st.just("/tmp/x"),
}
_ARGUMENT_PAIR = {
    n: st.tuples(st.just(n), ARGUMENT_FOR[k]) for n, k in sorted(KINDS.items()) if k in ARGUMENT_FOR
}
ARGUMENTS = st.lists(
    st.sampled_from(sorted(_ARGUMENT_PAIR)).flatmap(_ARGUMENT_PAIR.__getitem__),
    max_size=4,
    unique_by=lambda pair: pair[0],
).map(dict)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(env=ENVIRONMENTS, arguments=ARGUMENTS)
def test_the_plain_reading_of_arguments_is_pydantics(
    in_empty_folder: None, env: dict[str, str], arguments: dict[str, object]
) -> None:
    with environment(env):
        plain = read_plainly(arguments)
        if plain is None:
            return
        try:
            pydantic: Settings | str = read_by_pydantic(arguments)
        except ConfigError as exc:
            pydantic = str(exc)
    assert isinstance(pydantic, Settings), (env, arguments, pydantic)
    assert _same(plain, pydantic), (env, arguments)


def test_orch_serves_arguments_are_read_plainly(in_empty_folder: None, tmp_path: Path) -> None:
    # `orch serve --port 8123 --host localhost`: without this the property above would hold
    # on a reading that never takes an argument.
    arguments = {"home": tmp_path, "api_port": 8123, "api_host": "localhost"}
    with environment({}):
        plain = read_plainly(arguments)
        assert plain is not None
        assert _same(plain, read_by_pydantic(arguments))
        assert (plain.api_port, plain.api_host) == (8123, "localhost")
        for converted in ({"api_port": "8123"}, {"api_port": True}, {"home": str(tmp_path)}):
            assert read_plainly(converted) is None, converted


def test_the_plain_reading_reads_plain_values(in_empty_folder: None) -> None:
    # Without this the property would hold on a plain reading that never reads.
    plain = {
        "ORCH_HOME": "/tmp/orch-home",
        "ORCH_MAX_PARALLEL_JOBS": "8",
        "ORCH_DB_POOL_SIZE": "12",
        "ORCH_LLM_BUDGET_PER_DAY_USD": "2.50",
        "ORCH_JOB_LEASE_S": "60",
        "ORCH_PAUSED": "true",
        "ORCH_SANDBOX": "0",
        "ORCH_CLAUDE_MODEL": "opus",
        "ORCH_SANDBOX_NETWORK": "agent=none",
        "orch_api_allowed_hosts": "Orch.Internal.",
    }
    assert check_one_reading({})
    assert check_one_reading(plain)
    with environment(plain):
        read = load_settings()
    assert (read.home, read.max_parallel_jobs, read.paused, read.sandbox) == (
        Path("/tmp/orch-home"),
        8,
        True,
        False,
    )
    assert read.llm_budget_per_day_usd == 2.5


@pytest.mark.parametrize(
    "env",
    [
        {"ORCH_PAUSED": "Yes"},  # pydantic reads it; not a plain spelling (lower case is)
        {"ORCH_DB_POOL_SIZE": "0"},  # out of bounds: pydantic's error
        {"ORCH_MAX_PARALLEL_JOBS": "1", "ORCH_MAX_PARALLEL_JOBS_PER_REPO": "2"},  # invariant
        {"ORCH_SANDBOX_NETWORK": "bogus"},  # the setting's check
        {"ORCH_HOME": ""},
    ],
)
def test_what_is_not_plain_goes_to_pydantic(in_empty_folder: None, env: dict[str, str]) -> None:
    with environment(env):
        assert read_plainly({}) is None
        pydantic = _by_pydantic()
        loaded: Settings | str
        try:
            loaded = load_settings()
        except ConfigError as exc:
            loaded = str(exc)
    if isinstance(pydantic, str):
        assert loaded == pydantic  # pydantic's error, word for word
    else:
        assert isinstance(loaded, Settings)
        assert _same(loaded, pydantic)


@pytest.mark.parametrize("word", ["on", "off", "yes", "no"])
def test_the_documented_words_for_a_switch_are_read_plainly(
    in_empty_folder: None, word: str
) -> None:
    # ORCH_SANDBOX=off is how the docs say to switch the sandbox off: no pydantic for it
    # (~85 ms of every command that reads the settings).
    with environment({"ORCH_SANDBOX": word}):
        plain = read_plainly({})
        pydantic = _by_pydantic()
    assert plain is not None
    assert not isinstance(pydantic, str)
    assert _same(plain, pydantic)
    assert plain.sandbox is (word in ("on", "yes"))


def test_a_dotenv_file_or_another_argument_goes_to_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with environment({}):
        assert read_plainly({"home": tmp_path}) is not None
        assert read_plainly({"home": str(tmp_path)}) is None  # pydantic turns it into a Path
        assert read_plainly({"home": tmp_path, "paused": "true"}) is None  # pydantic's word
        (tmp_path / ".env").write_text("ORCH_PAUSED=true\n")
        assert read_plainly({}) is None
        assert load_settings(home=tmp_path).paused is True


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        # Every plain word for a bool read the other way round ("1" as false, "off" as true).
        ("_PLAIN_BOOL", {word: not value for word, value in config._PLAIN_BOOL.items()}),
        # A value out of its bounds taken (ORCH_DB_POOL_SIZE=0).
        ("_within", lambda value, bounds: True),
        # No setting's own check: `~` not expanded, a bad sandbox network taken.
        ("CHECKS", {}),
    ],
)
def test_the_property_catches_a_misreading(
    in_empty_folder: None, monkeypatch: pytest.MonkeyPatch, name: str, broken: Any
) -> None:
    monkeypatch.setattr(config, name, broken)
    # Without shrinking (as test_parser_properties' broken parsers): the same search for a
    # failing environment, which is what shows the property can fail; making it minimal
    # took most of the time (CHECKS: ~200 examples to find, seconds to shrink).
    bad = settings(
        max_examples=3000, database=None, deadline=None, phases=(Phase.explicit, Phase.generate)
    )(given(env=ENVIRONMENTS)(the_property))
    with pytest.raises(AssertionError):
        bad()
