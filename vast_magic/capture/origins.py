"""Where live code comes from, and how its module travels: as source, as files, or as an import line.

The decision is made once per origin module, by what the module *is*, never
by how it was loaded:

- ``source``: notebook cells, ``__main__`` (a script, ``%run``, ``python -m``),
  code in no importable module, and any module that holds a Deployment or a
  remote function or defines a registered function or context. Shipping such a
  module as a file would re-run ``Deployment(...)`` on a worker that has no
  vast_magic, so what its code uses ships as source, as a generated module of
  the same logical name.
- ``files``: other local modules (outside stdlib, site-packages and vast_magic),
  shipped unchanged.
- ``installed``: everything else, which the worker imports from its own Python.

The logical name is what makes fingerprints independent of the load style:
``python -m pkg.app`` and ``import pkg.app`` both give ``pkg.app``, ``python
app.py``, ``%run app.py`` and ``import app`` all give ``app``.
"""
from __future__ import annotations

import functools
import inspect
import site
import sys
import sysconfig
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .model import CELLS_MODULE
from .source import own_methods

__all__ = [
    "SOURCE", "FILES", "INSTALLED", "Origin", "is_deployment", "is_remote_proxy", "unproxy", "is_local_module",
    "is_local_file",
    "module_name_for_file", "logical_name", "namespace_of", "defines_deployment_code", "Classifier", "bound_name"
]

SOURCE, FILES, INSTALLED = "source", "files", "installed"


@dataclass(frozen=True)
class Origin:
    kind: str            # SOURCE | FILES | INSTALLED
    module: str          # logical module name (what the worker imports)
    namespace: dict      # the globals the object's code reads


def is_deployment(value: Any) -> bool:
    """A Deployment instance (marker attribute, so capture never imports deployment.py)."""
    return not isinstance(value, type) and inspect.getattr_static(value, "__vast_magic_deployment__", False) is True


def is_remote_proxy(value: Any) -> bool:
    """A RemoteFunction (what ``@app.remote`` leaves where the function was)."""
    return not isinstance(value, type) and \
        inspect.getattr_static(value, "__vast_magic_wrapped__", None) is not None


def unproxy(value: Any) -> Any:
    """The plain function behind a RemoteFunction proxy, else the value itself."""
    if isinstance(value, type):
        return value
    return inspect.getattr_static(value, "__vast_magic_wrapped__", value)


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[Path, ...]:
    """Folders whose modules the worker gets from its own Python or pip, never from the bundle."""
    paths = sysconfig.get_paths()
    roots = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    roots += list(getattr(site, "getsitepackages", lambda: [])())
    roots.append(site.getusersitepackages())
    roots.append(str(Path(__file__).resolve().parent.parent))  # vast_magic itself
    return tuple(Path(p).resolve() for p in roots if p)


def is_local_module(module: types.ModuleType) -> bool:
    """True for a ``.py`` module (or package) outside stdlib, site-packages and vast_magic."""
    file = getattr(module, "__file__", None)
    return bool(file) and module.__name__ != "__main__" and is_local_file(file)


def is_local_file(file: str) -> bool:
    """True for a ``.py`` file outside stdlib, site-packages and vast_magic (a file of the user's project)."""
    if not file.endswith(".py"):
        return False
    path = Path(file).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(path.is_relative_to(root) for root in _installed_roots())


def module_name_for_file(path: str | Path) -> str:
    """The dotted name a ``.py`` file has when imported: its stem, prefixed by the packages it sits in."""
    file = Path(path).resolve()
    parts = [] if file.stem == "__init__" else [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) or file.stem


def logical_name(namespace: Mapping[str, Any]) -> str:
    """The module name code in ``namespace`` ships under, the same whatever the load style."""
    name = namespace.get("__name__")
    if isinstance(name, str) and name and name != "__main__":
        return name
    spec_name = getattr(namespace.get("__spec__"), "name", None)
    if isinstance(spec_name, str) and spec_name and spec_name != "__main__":
        return spec_name                                   # python -m pkg.app
    file = namespace.get("__file__")
    if isinstance(file, str) and file.endswith(".py"):
        return module_name_for_file(file)                  # python app.py, %run app.py
    return CELLS_MODULE                                    # notebook cells


def namespace_of(obj: Any) -> dict:
    """The globals a function's or class's code reads (IPython's namespace for cell classes)."""
    if isinstance(obj, type):
        return _class_namespace(obj)
    function = inspect.unwrap(obj)
    return getattr(function, "__globals__", {})


def _class_namespace(cls: type) -> dict:
    """Globals a class body ran in: a method's, else the ``%run`` file's or its module's, else IPython's."""
    for _, method in own_methods(cls):
        return method.__globals__
    shell = _ipython()
    if cls.__module__ == "__main__" and shell is not None:
        # %run runs a file in its own namespace (with __file__) that IPython keeps; a class without
        # methods of its own can only be traced back to it there
        for module in list(getattr(shell, "_main_mod_cache", {}).values()):
            if vars(module).get(cls.__name__) is cls:
                return vars(module)
    module = sys.modules.get(cls.__module__)
    if module is not None:
        return vars(module)
    return shell.user_ns if shell is not None else {}


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    return get_ipython()


def defines_deployment_code(namespace: Mapping[str, Any]) -> bool:
    """The module holds a Deployment or a remote function: it must never run on a worker as a file."""
    return any(is_deployment(value) or is_remote_proxy(value) for value in list(namespace.values()))


class Classifier:
    """Decides once per module how it travels; ``registered`` are the modules of registered roots."""

    def __init__(self, registered: Iterable[str] = ()):
        self.registered = frozenset(registered)
        self._kinds: dict[str, str] = {}

    def module_kind(self, module: types.ModuleType) -> str:
        name = module.__name__
        if name not in self._kinds:
            self._kinds[name] = self._decide(name, module)
        return self._kinds[name]

    def _decide(self, name: str, module: types.ModuleType) -> str:
        if name == "__main__" or name in self.registered or defines_deployment_code(vars(module)):
            return SOURCE
        return FILES if is_local_module(module) else INSTALLED

    def origin(self, obj: Any) -> Origin | None:
        """Where a function or class comes from; None for anything else (values, builtins, callables)."""
        target = _code_object(obj)
        if target is None:
            return None
        namespace = namespace_of(target)
        module = sys.modules.get(getattr(target, "__module__", None) or "")
        if module is None or target.__module__ == "__main__":
            return Origin(SOURCE, logical_name(namespace), namespace)
        kind = self.module_kind(module)
        return Origin(kind, logical_name(namespace) if kind == SOURCE else module.__name__, namespace)


def _code_object(obj: Any) -> Any:
    """``obj`` itself for a class or a Python function (decorators unwrapped), else None."""
    if isinstance(obj, type):
        return obj
    try:
        function = inspect.unwrap(obj) if callable(obj) else None
    except ValueError:  # a __wrapped__ cycle
        return None
    return function if isinstance(function, types.FunctionType) else None


def bound_name(obj: Any, namespace: Mapping[str, Any], preferred: str) -> str | None:
    """The global name ``obj`` (or its proxy) has in ``namespace``: ``preferred`` if it fits, else the first alias."""
    def holds(value: Any) -> bool:
        return value is obj or unproxy(value) is obj
    if holds(namespace.get(preferred)):
        return preferred
    aliases = sorted(key for key, value in list(namespace.items()) if isinstance(key, str) and holds(value))
    return aliases[0] if aliases else None
