"""What capture produces: shippable code as data.

Code travels per *origin module*. Each module that ships as source becomes one
generated module on the worker (``SourceModule``), importable under the
module's logical name (``mylib.app`` -> ``mylib/app.py``; notebook cells ->
``vast_magic_app.py``), holding only the items the shipped code uses, in the
order they must run. Local modules that ship unchanged travel as files
(``ModuleFile``). Every item carries a canonical ``digest`` (hex SHA-256) so the
Manifest never hashes pickle bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

__all__ = [
    "CELLS_MODULE", "location", "qualified", "SourceDef", "ImportDef", "ValueDef", "DeploymentRef", "LinkDef",
    "Item", "SourceModule", "ModuleFile", "CapturedCode"
]

CELLS_MODULE = "vast_magic_app"   # the logical module of notebook cells (they have no module name of their own)


def location(module: str, attr: str) -> str:
    """``"mylib.app:square"``: where a shipped object lives on the worker (module, then global name)."""
    return f"{module}:{attr}"


def qualified(module: str, name: str) -> str:
    """How a person reads an item's name: bare for notebook cells, ``module.name`` otherwise."""
    return name if module == CELLS_MODULE else f"{module}.{name}"


@dataclass(frozen=True)
class SourceDef:
    """A function or class shipped as source text, our own decorators removed."""

    name: str          # the global name it is bound to in the generated module
    kind: str          # "function" | "class"
    source: str        # dedented, ready to exec at module level
    digest: str        # sha256 of ast.dump(ast.parse(source without !VAST_IGNORE_CHANGES lines))


@dataclass(frozen=True)
class ImportDef:
    """A global that is a module or an importable object, shipped as an import line."""

    name: str          # the global name it binds
    line: str          # "import numpy as np", "from os import path as p"
    digest: str


@dataclass(frozen=True)
class ValueDef:
    """A plain value (constant, array, dict, closure, lambda) shipped by value."""

    name: str
    payload: bytes     # cloudpickle protocol 5, in-band; shipped classes inside it travel by reference
    digest: str        # canonical digest (sorted JSON, numpy dtype+shape+bytes, ...)
    by_value_code: bool = False  # True for lambdas/closures (refused for backend="vast")


@dataclass(frozen=True)
class DeploymentRef:
    """A global bound to a Deployment: on the worker it is the worker's registry app."""

    name: str


@dataclass(frozen=True)
class LinkDef:
    """A global that is another shipped module's object, needed only when functions run.

    Bound once that module has run (``vast_magic_runtime.shipped.ready``), so
    two modules that use each other's functions import in either order.
    """

    name: str          # the global name in this module
    module: str        # the shipped module that defines it
    attr: str          # its global name there


Item = Union[SourceDef, ImportDef, ValueDef, DeploymentRef]


@dataclass(frozen=True)
class SourceModule:
    """One generated module: what its code uses, in the order it runs on the worker."""

    name: str                       # logical module name: "mylib.app", "pkg.__main__", CELLS_MODULE
    path: str                       # path in the bundle: "mylib/app.py", "pkg/__init__.py"
    items: tuple[Item, ...] = ()    # definition dependencies first, ties broken by kind then name
    links: tuple[LinkDef, ...] = ()

    def get(self, name: str) -> Item | None:
        return next((item for item in self.items if item.name == name), None)


@dataclass(frozen=True)
class ModuleFile:
    """A local module (outside stdlib/site-packages) shipped as a file."""

    module: str        # dotted name, e.g. "helpers" or "pkg.sub"
    relpath: str       # path inside the bundle, e.g. "helpers.py" or "pkg/sub.py"
    content: bytes
    digest: str
    # (top-level definition name, digest) plus ("", digest of everything else): tier reasons name the function
    parts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CapturedCode:
    source_modules: tuple[SourceModule, ...] = ()   # sorted by name
    file_modules: tuple[ModuleFile, ...] = ()       # sorted by relpath
    entries: tuple[str, ...] = ()                   # location of each root, in the order capture_code got them
    packages: tuple[str, ...] = ()                  # third-party top-level packages the shipped code imports
    warnings: tuple[str, ...] = ()
    # every class shipped as source with its live object, keyed by location: the wire pickles instances by reference
    class_objects: tuple[tuple[str, type], ...] = field(default=(), compare=False, repr=False)

    def module(self, name: str) -> SourceModule | None:
        return next((m for m in self.source_modules if m.name == name), None)

    def definition(self, where: str) -> SourceDef | None:
        """The SourceDef at ``"module:attr"``, or None."""
        module_name, _, attr = where.rpartition(":")
        module = self.module(module_name)
        item = module.get(attr) if module is not None else None
        return item if isinstance(item, SourceDef) else None

    def _items(self, kind: type) -> tuple:
        return tuple(item for m in self.source_modules for item in m.items if isinstance(item, kind))

    @property
    def sources(self) -> tuple[SourceDef, ...]:
        return self._items(SourceDef)

    @property
    def imports(self) -> tuple[ImportDef, ...]:
        return self._items(ImportDef)

    @property
    def values(self) -> tuple[ValueDef, ...]:
        return self._items(ValueDef)

    @property
    def deployment_names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self._items(DeploymentRef))

    def names(self) -> tuple[str, ...]:
        return tuple(item.name for m in self.source_modules for item in m.items)
