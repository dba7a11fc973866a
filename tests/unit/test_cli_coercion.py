"""Every value a parameter of `orch` is given is coerced as typer coerces it.

typer (0.2x) coerces each value through a pydantic TypeAdapter it builds on first use, even
for an option left out; ``cli.root._SparePydantic`` answers a left-out value (None) and a
str for a plain ``str`` parameter itself, and hands every other value to typer's own
coercion. Here both coerce the same values, for every parameter of every command (each
command made, its ``--help`` too): the same result of the same type, or the same error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
import typer.main

from orchestrator.cli import app, root

coercion = pytest.importorskip("typer._coercion", reason="an older typer coerces through click")

SAMPLES: list[Any] = [
    None,
    "",
    "demo",
    "a title with spaces, [markup] and ; $(shell)",
    "\udcff",  # an argument that was not UTF-8 (surrogateescape)
    "-",
    "0",
    "12",
    "1.5",
    "true",
    "/nowhere/at/all",
    ("a", "b,c"),
]


def _every_param() -> Iterator[tuple[str, Any, Any]]:
    """(command path, parameter, context) for every parameter `orch` parses."""
    group = typer.main.get_command(app)

    def walk(command: Any, path: str, parent: Any) -> Iterator[tuple[str, Any, Any]]:
        ctx = typer.Context(command, info_name=path.split()[-1], parent=parent)
        for param in command.get_params(ctx):
            yield path, param, ctx
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}", ctx)

    yield from walk(group, "orch", None)


def _outcome(coerce: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        got = coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the error a user would see: its type and its words
        return "error", (type(exc).__name__, str(exc))
    return "value", (type(got), got)


def test_every_parameter_is_given_the_spared_coercion() -> None:
    spared = [
        f"{path} {param.name}"
        for path, param, _ctx in _every_param()
        if isinstance(param._runtime_param, root._SparePydantic)
    ]
    every = [f"{path} {param.name}" for path, param, _ctx in _every_param()]
    assert spared == every
    assert "orch task add title" in spared
    assert "orch home" in spared
    assert "orch status help" in spared  # --help, which click makes when first asked


def test_spared_coercion_is_typers(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a path value is looked up here, in an empty folder
    compared = 0
    for path, param, ctx in _every_param():
        descriptor = param.type_descriptor
        for value in SAMPLES:
            ours = root._SparePydantic(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
            )
            theirs = coercion.build_runtime_param(descriptor)
            param._runtime_param = ours  # ours hands a value on by replacing itself
            expected = _outcome(theirs.coerce, value, param, ctx)
            assert _outcome(ours.coerce, value, param, ctx) == expected, (path, param.name, value)
            compared += 1
    assert compared > 100


def test_a_value_only_typer_can_coerce_is_handed_to_it() -> None:
    (_path, param, ctx) = next(p for p in _every_param() if p[0] == "orch" and p[1].name == "home")
    spare = root._SparePydantic(
        parameter_info=param.type_descriptor.parameter_info,
        annotation=param.type_descriptor.annotation,
    )
    param._runtime_param = spare
    assert spare.coerce(None, param=param, ctx=ctx) is None
    assert param._runtime_param is spare  # nothing built for a value left out
    assert str(spare.coerce("~/x", param=param, ctx=ctx)) == "~/x"
    assert isinstance(param._runtime_param, coercion.RuntimeParam)
    assert not isinstance(param._runtime_param, root._SparePydantic)
