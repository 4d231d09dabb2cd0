"""One generated module while capture assembles it: what is bound, its items, and the order they run in.

A generated module runs top to bottom on the worker, so an item must come
after every item it needs *while it is defined* (decorators, defaults, bases,
class bodies; a value needs the shipped classes it holds). Everything else is
free, and the order is then fixed by kind (imports, values, deployment
variables, sources) and name, so cell order and hash seeds never change the
text. A reference to another shipped module's function that only runs later
is a ``LinkDef``, bound once both modules have run; when it is needed at
definition time it becomes an import line placed like any other item.
"""
from __future__ import annotations

import heapq
from typing import Any

from ..errors import CaptureError
from .digests import sha256_text
from .model import CELLS_MODULE, DeploymentRef, ImportDef, Item, LinkDef, SourceDef, SourceModule, ValueDef

__all__ = ["module_path", "ModuleBuild", "definition_order"]

_MISSING = object()
_RANK = {ImportDef: 0, ValueDef: 1, DeploymentRef: 2, SourceDef: 3}


def module_path(name: str, is_package: bool) -> str:
    """``a.b`` -> ``a/b.py`` (``a/b/__init__.py`` for a package): where the worker's import finds it."""
    base = name.replace(".", "/")
    return f"{base}/__init__.py" if is_package else f"{base}.py"


class ModuleBuild:
    """The items of one generated module and what each needs at definition time."""

    def __init__(self, name: str, namespace: dict, is_package: bool):
        self.name, self.namespace, self.is_package = name, namespace, is_package
        self.bound: dict[str, Any] = {}              # global name -> the object it carries (conflict check)
        self.items: dict[str, Item] = {}
        self.needs: dict[str, frozenset[str]] = {}   # item -> global names read while it is defined
        self.provider: dict[str, str] = {}           # global name -> the item that binds it
        self.links: dict[str, LinkDef] = {}

    @property
    def path(self) -> str:
        return module_path(self.name, self.is_package)

    def bind(self, name: str, value: Any, used_by: str | None) -> bool:
        """Record ``name -> value``; False if already there, CaptureError if bound to something else."""
        current = self.bound.get(name, _MISSING)
        if current is value:
            return False
        if current is not _MISSING:
            where = "" if self.name == CELLS_MODULE else f" in module {self.name}"
            raise CaptureError(f"The name {name!r}{where} (used by {used_by or 'a root'!r}) refers to two different "
                               "objects among the code to ship (for example a function and an older version kept "
                               "under an alias, or two modules' globals). Rename one of them.")
        self.bound[name] = value
        return True

    def add(self, item: Item, needs: frozenset[str] = frozenset(), also_binds: tuple[str, ...] = ()) -> None:
        self.items[item.name] = item
        self.needs[item.name] = needs
        for name in (item.name, *also_binds):
            self.provider[name] = item.name

    def link(self, name: str, module: str, attr: str) -> None:
        self.links[name] = LinkDef(name, module, attr)

    def finish(self) -> SourceModule:
        """The module as data: links needed at definition time become imports, then items in run order."""
        needed_now = set().union(*self.needs.values()) if self.needs else set()
        items, needs = dict(self.items), dict(self.needs)
        links = []
        for name, link in sorted(self.links.items()):
            if name in needed_now:
                line = f"import {link.module} as {name}" if not link.attr else \
                    f"from {link.module} import {link.attr}" + ("" if link.attr == name else f" as {name}")
                items[name], needs[name] = ImportDef(name, line, sha256_text(line)), frozenset()
            else:
                links.append(link)
        provider = {**{name: name for name in items}, **self.provider}
        deps = {name: {provider[n] for n in needs[name] if n in provider} - {name} for name in items}
        order = definition_order(deps, {name: _RANK[type(item)] for name, item in items.items()})
        return SourceModule(self.name, self.path, tuple(items[name] for name in order), tuple(links))


def definition_order(deps: dict[str, set[str]], rank: dict[str, int]) -> list[str]:
    """Topological order (what an item needs first), ties broken by (rank, name)."""
    waiting = {name: set(needed) & deps.keys() for name, needed in deps.items()}
    ready = [(rank[name], name) for name, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for other, needed in waiting.items():
            if name in needed:
                needed.discard(name)
                if not needed:
                    heapq.heappush(ready, (rank[other], other))
    # a definition-time cycle cannot come from code that ran; keep a stable order anyway
    return order + sorted(set(deps) - set(order), key=lambda n: (rank[n], n))
