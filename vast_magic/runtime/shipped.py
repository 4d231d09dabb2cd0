"""What generated modules call while they run on the worker: their values, and their links.

Each module that ships as source is generated under its own name (``mylib/app.py``,
``vast_magic_app.py`` for notebook cells). Such a module
- reads each captured value with ``value(__name__, "NAME")``: the values of every
  module live in ``vast_magic_values.pkl`` at the bundle root; shipped classes
  inside them travel by location (``("vast_magic_class", "mylib.app:Point")``)
  and are resolved by importing that module, so ``isinstance`` holds;
- ends with ``ready(__name__, links)``: ``links`` are globals that are another
  shipped module's functions, used only when code runs. They are bound as soon
  as both modules have run, so two modules that use each other import in any
  order.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any

from . import wire

__all__ = ["VALUES_FILE", "resolve", "BY_LOCATION", "bundle_root", "value", "ready", "unbound_links"]

VALUES_FILE = "vast_magic_values.pkl"

_lock = threading.RLock()
_values: dict[str, dict[str, dict[str, bytes]]] = {}   # bundle root -> {module: {name: payload}}
_ready: set[str] = set()
_pending: list[tuple[str, str, str, str]] = []          # (module, name, module it comes from, attr or "" for the module)


def resolve(where: str) -> Any:
    """The object at ``"module:attr"`` (the module itself for ``"module:"``), importing the module."""
    module_name, _, attr = where.rpartition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class _ByLocation:
    """The ``resolve_class`` mapping of ``wire.loads``: any location, looked up when asked."""

    def __getitem__(self, where: str) -> type:
        try:
            found = resolve(where)
        except (ImportError, AttributeError, ValueError) as exc:
            raise KeyError(f"{where} ({exc})") from None
        if not isinstance(found, type):
            raise KeyError(f"{where} is not a class")
        return found


BY_LOCATION = _ByLocation()


def bundle_root(module_name: str) -> str:
    """The folder a generated module was imported from: its file, up one level per package."""
    path = os.path.abspath(sys.modules[module_name].__file__)
    depth = module_name.count(".") + 1 + (os.path.basename(path) == "__init__.py")
    for _ in range(depth):
        path = os.path.dirname(path)
    return path


def value(module_name: str, name: str) -> Any:
    """The captured value ``name`` of generated module ``module_name``."""
    root = bundle_root(module_name)
    with _lock:
        if root not in _values:
            with open(os.path.join(root, VALUES_FILE), "rb") as fh:
                _values[root] = wire.loads(fh.read())
        payload = _values[root][module_name][name]
    return wire.loads(payload, [], BY_LOCATION)


def ready(module_name: str, links: dict[str, tuple[str, str]]) -> None:
    """Called last by each generated module: bind its links, and others' links to it, that can be bound."""
    with _lock:
        _ready.add(module_name)
        _pending.extend((module_name, name, source, attr) for name, (source, attr) in sorted(links.items()))
        progress = True
        while progress:
            progress = False
            for link in list(_pending):
                if _bind(*link):
                    _pending.remove(link)
                    progress = True


def _bind(module_name: str, name: str, source: str, attr: str) -> bool:
    module, origin = sys.modules.get(module_name), sys.modules.get(source)
    if module is None or origin is None or source not in _ready or (attr and not hasattr(origin, attr)):
        return False
    setattr(module, name, getattr(origin, attr) if attr else origin)
    return True


def unbound_links() -> list[str]:
    """Links still waiting (for a module that never ran): ``module.name -> source:attr``."""
    with _lock:
        return [f"{module}.{name} -> {source}:{attr}" for module, name, source, attr in _pending]
