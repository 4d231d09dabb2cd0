"""What capture produces: shippable code as data.

The bundle turns a ``CapturedCode`` into one generated module
(``vast_magic_app.py``) executed on the worker in this order: imports, values,
sources (in ``sources`` order, which respects definition dependencies).
Every item carries a canonical ``digest`` (hex SHA-256) so the Manifest never
hashes pickle bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
    payload: bytes     # cloudpickle protocol 5, in-band
    digest: str        # canonical digest (sorted JSON, numpy dtype+shape+bytes, ...)
    by_value_code: bool = False  # True for lambdas/closures (refused for backend="vast")


@dataclass(frozen=True)
class ModuleFile:
    """A local module (outside stdlib/site-packages) shipped as a file."""

    module: str        # dotted name, e.g. "helpers" or "pkg.sub"
    relpath: str       # path inside the bundle, e.g. "helpers.py" or "pkg/sub.py"
    content: bytes
    digest: str


@dataclass(frozen=True)
class CapturedCode:
    sources: tuple[SourceDef, ...] = ()
    imports: tuple[ImportDef, ...] = ()
    values: tuple[ValueDef, ...] = ()
    modules: tuple[ModuleFile, ...] = ()
    deployment_names: tuple[str, ...] = ()   # globals bound to a Deployment: rebound to the worker registry
    warnings: tuple[str, ...] = ()
    # every shipped class with its live object, so the wire pickles instances by reference to it
    class_objects: tuple[tuple[str, type], ...] = field(default=(), compare=False, repr=False)

    def names(self) -> tuple[str, ...]:
        return tuple(item.name for group in (self.imports, self.values, self.sources) for item in group) + self.deployment_names
