"""Imports point one way: the module import graph of vast_magic has no cycle and no upward edge.

Every module is parsed with ``ast`` (nothing is imported); every import counts,
at module level, inside functions and under ``if TYPE_CHECKING:``, with
relative imports resolved. The layers are written here, top to bottom; a
module may import its own layer, any layer below it, and the foundations.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.package_modules import PACKAGE, module_files

#: top to bottom; a name covers the module and everything under it (the longest name wins)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("vast_magic", "vast_magic.__main__", "vast_magic.cli", "vast_magic.notebook",
                      "vast_magic.testing")),
    ("deployment", ("vast_magic.deployment", "vast_magic.remote", "vast_magic.remote_options",
                    "vast_magic.deploy_pipeline", "vast_magic.caller", "vast_magic.call_handle",
                    "vast_magic.known", "vast_magic.call_stats", "vast_magic.watch")),
    # DESIGN.md: "display ◄── events": views of the one event stream, used by the deployment layer
    # (ensure_ready and map render progress in the calling cell), the notebook and the CLI; never by
    # what they show (capture, bundle, backends).
    ("display", ("vast_magic.display",)),
    ("capture and bundle", ("vast_magic.capture", "vast_magic.bundle")),
    ("backends", ("vast_magic.backends",)),
    # the data the layers above describe a deployment with; backends consume it, it never calls them
    ("specs", ("vast_magic.image", "vast_magic.query", "vast_magic._query_columns", "vast_magic._env_string",
               "vast_magic.autoscaling", "vast_magic.pricing")),
    # shipped inside every bundle as vast_magic_runtime: it imports nothing else from vast_magic
    ("runtime", ("vast_magic.runtime",)),
]
#: importable by every layer but the runtime; they import only each other
FOUNDATIONS = ("vast_magic.errors", "vast_magic.loop", "vast_magic.settings", "vast_magic.events",
               "vast_magic.reports", "vast_magic.secret")


# -- the graph ---------------------------------------------------------------------------------------------
def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:     # ``import a.b.c`` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = module_files(package)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


# -- the rules ---------------------------------------------------------------------------------------------
def _covers(prefix: str, module: str) -> bool:
    return module == prefix or (prefix != "vast_magic" and module.startswith(prefix + "."))


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, layer name), rank 0 at the top; foundations have rank None -> returned as (-1, "foundations")."""
    if any(_covers(prefix, module) for prefix in FOUNDATIONS):
        return -1, "foundations"
    best = None
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _covers(prefix, module) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, layer)
    return (best[1], best[2]) if best else None


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    """Every edge from a lower layer to a higher one, or out of the runtime or the foundations."""
    bad = []
    runtime = len(LAYERS) - 1
    for source, targets in sorted(graph.items()):
        (rank, layer) = layer_of(source)
        for target in sorted(targets):
            (target_rank, target_layer) = layer_of(target)
            if rank == runtime:
                allowed = target_rank == runtime
            elif rank == -1:
                allowed = target_rank == -1
            else:
                allowed = target_rank == -1 or target_rank >= rank
            if not allowed:
                bad.append(f"{source} ({layer}) imports {target} ({target_layer})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    edges = {source: sorted(targets) for source, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


# -- the package -------------------------------------------------------------------------------------------
GRAPH = import_graph()


def test_the_graph_sees_every_kind_of_import():
    """Module level, relative and function level imports are all edges (``TYPE_CHECKING`` ones too: the
    package has none left, so the checker's own table below holds that case)."""
    assert "vast_magic.errors" in GRAPH["vast_magic.backends.base"]              # ``from ..errors import``
    assert "vast_magic.backends.vast.backend" in GRAPH["vast_magic.backends"]    # inside get_backend()
    assert "vast_magic.events" in GRAPH["vast_magic.backends.local.backend"]     # ``from ... import events``
    assert len(GRAPH) > 80


def test_every_module_has_a_layer():
    assert [module for module in GRAPH if layer_of(module) is None] == []


def test_no_import_points_up():
    assert upward_edges(GRAPH) == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


# -- the checker itself ------------------------------------------------------------------------------------
def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "vast_magic" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "vast_magic"


@pytest.mark.parametrize("files, upward, found_cycles", [
    ({"__init__.py": "", "errors.py": "", "image.py": "from .errors import X\n"}, [], []),
    ({"__init__.py": "", "image.py": "def f():\n    from .backends.vast import offers\n",
      "backends/__init__.py": "", "backends/vast/__init__.py": "", "backends/vast/offers.py": ""},
     ["vast_magic.image (specs) imports vast_magic.backends.vast.offers (backends)"], []),
    ({"__init__.py": "", "errors.py": "", "runtime/__init__.py": "", "runtime/wire.py": "from .. import errors\n"},
     ["vast_magic.runtime.wire (runtime) imports vast_magic.errors (foundations)"], []),
    ({"__init__.py": "", "events.py": "import vast_magic.display.text\n", "display/__init__.py": "",
      "display/text.py": ""},
     ["vast_magic.events (foundations) imports vast_magic.display.text (display)"], []),
    ({"__init__.py": "", "display/__init__.py": "from .progress import P\n",
      "display/progress.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import Q\n"},
     [], [["vast_magic.display", "vast_magic.display.progress"]]),
])
def test_the_checker_itself(tmp_path, files, upward, found_cycles):
    graph = import_graph(write_package(tmp_path, files))
    assert upward_edges(graph) == upward
    assert cycles(graph) == found_cycles
