"""The package's import graph has no circles and no import that runs back up.

Every module under ``src/orchestrator`` is read with ``ast`` (nothing is imported), and
each import of ``orchestrator.*`` becomes an edge: module level and inside functions
alike, since a lazy import only hides a circle from the interpreter, not from a reader.
``from orchestrator.x import y`` is an edge to ``orchestrator.x.y`` when ``y`` is a
submodule, else to ``orchestrator.x``. Imports under ``if TYPE_CHECKING:`` are left out:
they never run, and they are how an annotation names a type from above without a circle.
A package's ``__init__`` is its own node; importing ``orchestrator.x.y`` is an edge to
``orchestrator.x.y`` only (the interpreter runs ``x/__init__`` too, but a package's
``__init__`` that imports its children would otherwise make every child a circle).

The layers, from the bottom: two leaves every layer may import, ``errors`` (the one root
exception: ``domain`` raises ``UsageError`` for an unknown stage name) and ``money`` (how
an amount reads: the budget checks' reasons), and ``domain`` (pure);
``store``; ``agents``; ``engine``; ``ops``, ``cli`` and ``api`` on top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "orchestrator"


def module_name(path: Path, src: Path) -> str:
    """``src/orchestrator/engine/launch.py`` -> ``orchestrator.engine.launch``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(src: Path) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports at run time (any depth in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(name, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                # `import orchestrator.x.y` of a name that is not a module (an attribute
                # path) falls back to the longest prefix that is one.
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                found.add(target)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = all_modules(src)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and self-imports (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        nonlocal counter
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


# The leaves below every layer: they import nothing of the package (checked below):
# ``errors`` (the root exception) and ``money`` (how an amount reads).
ROOT_LEAVES = frozenset({"errors", "money"})


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run back up: agents -> engine; engine -> ops, cli, api; store -> above;
    domain -> outside domain (but the root leaves); a root leaf -> anything."""
    forbidden = {
        "agents": ({"engine"}, "agents/ never imports engine/"),
        "engine": (
            {"repo_ops", "task_ops", "backend_ops", "cli", "api"},
            "engine/ never imports the user's operations (*_ops), cli/ or api/",
        ),
        "store": ({"engine", "api", "cli"}, "store/ never imports engine/, api/ or cli/"),
        "forge": (
            {"engine", "api", "cli", "store", "repo_ops", "task_ops", "backend_ops"},
            "forge/ speaks to a forge only: it never imports store/, engine/, api/ or cli/",
        ),
    }
    found: list[str] = []
    for name in sorted(graph):
        layer = _layer(name)
        for target in sorted(graph[name]):
            target_layer = _layer(target)
            if layer in ROOT_LEAVES:
                found.append(f"{name} -> {target}: {name} is a leaf, it imports no module")
            elif layer == "domain" and target_layer not in {"domain", *ROOT_LEAVES}:
                found.append(f"{name} -> {target}: domain/ imports only domain/ and stdlib")
            elif layer in forbidden and target_layer in forbidden[layer][0]:
                found.append(f"{name} -> {target}: {forbidden[layer][1]}")
    return found


def test_the_package_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_runs_back_up() -> None:
    found = layer_violations(import_graph())
    assert not found, "upward imports:\n" + "\n".join(found)


def test_domain_imports_no_third_party_package() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {PACKAGE, "__future__"}
    bad: list[str] = []
    for name, path in all_modules(SRC).items():
        if _layer(name) != "domain":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_nodes(tree):
            roots: list[str] = []
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            bad.extend(f"{name} imports {r}" for r in roots if r not in allowed)
    assert not bad, "\n".join(bad)


# The checks themselves, shown able to fail on small made-up packages.


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for rel, text in files.items():
        path = src / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return src


def test_a_lazy_import_inside_a_function_still_makes_a_cycle(tmp_path: Path) -> None:
    src = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/launch.py": "from orchestrator.agents import backends\n",
            "agents/__init__.py": "",
            "agents/backends.py": (
                "def run():\n    from orchestrator.engine.launch import JobContext\n"
            ),
        },
    )
    graph = import_graph(src)
    assert cycles(graph) == [["orchestrator.agents.backends", "orchestrator.engine.launch"]]
    assert layer_violations(graph) == [
        "orchestrator.agents.backends -> orchestrator.engine.launch: agents/ never imports engine/"
    ]


def test_type_checking_imports_are_left_out_and_relative_ones_resolved(
    tmp_path: Path,
) -> None:
    src = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "api/__init__.py": "",
            "api/app.py": "from . import routes\n",
            "api/routes.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from orchestrator.api.app import Api\n"
            ),
            "gitops/__init__.py": "",
            "gitops/merge.py": "from .worktrees import lock\n",
            "gitops/worktrees.py": "from orchestrator.gitops import merge\n",
            "domain/__init__.py": "",
            "domain/x.py": "import orchestrator.store.db\n",
            "store/__init__.py": "",
            "store/db.py": "from ..api import app\n",
            "selfish.py": "import orchestrator.selfish\n",
            "errors.py": "from orchestrator import task_ops\n",
            "task_ops.py": "",
            "engine/__init__.py": "",
            "engine/apply.py": "from orchestrator.task_ops import add_task\n",
            "domain/stages.py": "from orchestrator.errors import UsageError\n",
        },
    )
    graph = import_graph(src)
    assert graph["orchestrator.api.routes"] == set()
    assert graph["orchestrator.api.app"] == {"orchestrator.api.routes"}
    assert cycles(graph) == [
        ["orchestrator.gitops.merge", "orchestrator.gitops.worktrees"],
        ["orchestrator.selfish"],
    ]
    assert layer_violations(graph) == [
        "orchestrator.domain.x -> orchestrator.store.db: domain/ imports only domain/ and stdlib",
        "orchestrator.engine.apply -> orchestrator.task_ops: engine/ never imports the "
        "user's operations (*_ops), cli/ or api/",
        "orchestrator.errors -> orchestrator.task_ops: orchestrator.errors is a leaf, "
        "it imports no module",
        "orchestrator.store.db -> orchestrator.api.app: store/ never imports engine/, api/ or cli/",
    ]
