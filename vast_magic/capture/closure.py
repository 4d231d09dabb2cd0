"""The closure walk: from the roots to every global they need, and nothing else.

Each global name reached is classified once (see ``_Walk.visit``): a
Deployment is rebound on the worker, a function or class defined in the
session ships as source (and is walked in turn), a module or importable object
as an import line, a local module also as files, anything else by value. The
walk never looks at a name the shipped code does not read, so the rest of the
notebook namespace stays home.
"""
from __future__ import annotations

import ast
import builtins
import heapq
import inspect
import sys
import types
from typing import Any, Sequence

from ..errors import CaptureError
from .digests import sha256_text, source_digest, value_digest
from .model import CapturedCode, ImportDef, ModuleFile, SourceDef, ValueDef
from .modules import is_local_module, local_dependencies, module_files, top_level
from .names import is_session_module, used_names
from .source import class_source, function_source, strip_decorators
from .values import check_value, describe, modules_used_by, pickle_value

_MISSING = object()


def capture_code(roots: Sequence[object], *, backend: str = "local",
                 forbidden_strings: Sequence[str] = ()) -> CapturedCode:
    """Turn live remote functions, context classes and helpers into shippable code as data."""
    walk = _Walk(backend, tuple(s for s in forbidden_strings if s))
    for root in roots:
        walk.add_root(root)
    walk.run()
    return walk.result()


def is_deployment(value: Any) -> bool:
    """A Deployment instance (marker attribute, so capture never imports deployment.py)."""
    return not isinstance(value, type) and inspect.getattr_static(value, "__vast_magic_deployment__", False) is True


def unproxy(value: Any) -> Any:
    """The plain function behind a RemoteFunction proxy, else the value itself."""
    if isinstance(value, type):
        return value
    return inspect.getattr_static(value, "__vast_magic_wrapped__", value)


class _Walk:
    def __init__(self, backend: str, forbidden: tuple[str, ...]):
        self.backend, self.forbidden = backend, forbidden
        self.pending: list[tuple[str, Any, str | None]] = []
        self.bound: dict[str, Any] = {}              # global name -> the object it carries (conflict check)
        self.provider: dict[str, str] = {}           # name bound by a source -> that source's name
        self.sources: dict[str, SourceDef] = {}
        self.definition_deps: dict[str, frozenset[str]] = {}
        self.imports: dict[str, ImportDef] = {}
        self.values: dict[str, ValueDef] = {}
        self.modules: dict[str, ModuleFile] = {}     # by relpath
        self.shipped_packages: set[str] = set()
        self.deployments: set[str] = set()
        self.classes: dict[str, type] = {}
        self.warnings: set[str] = set()

    # -- driving ------------------------------------------------------------
    def add_root(self, root: object) -> None:
        target = unproxy(root)
        if not (isinstance(target, type) or callable(target)) or is_deployment(target):
            raise CaptureError(f"capture_code got {type(root).__name__} {root!r} as a root: roots are the remote "
                               "functions, context classes and helper functions to ship.")
        name = getattr(target, "__name__", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise CaptureError(f"{root!r} has no usable name ({name!r}): a remote function, context or helper "
                               "must be a top-level `def` or `class` in a cell or module, not a lambda.")
        self.pending.append((_root_name(root, target, name), root, None))

    def run(self) -> None:
        while self.pending:
            self.visit(*self.pending.pop())

    def visit(self, name: str, value: Any, used_by: str | None) -> None:
        """Classify one global and ship it; queue what it needs in turn."""
        if is_deployment(value):
            self._bind(name, value, used_by)
            self.deployments.add(name)
            return
        value = unproxy(value)
        if not self._bind(name, value, used_by):
            return  # already shipped under this name
        kind = _session_kind(value)
        if isinstance(value, types.ModuleType):
            self._ship_module(name, value)
        elif kind == "class":
            self._ship_class(name, value)
        elif kind == "function" and self._ship_function(name, value):
            return
        elif (line := _import_line(name, value)) is not None:
            self._ship_import(name, line, sys.modules[value.__module__])
        else:
            self._ship_value(name, value, used_by)

    def _bind(self, name: str, value: Any, used_by: str | None) -> bool:
        """Record ``name -> value``; False if already there, CaptureError if bound to something else."""
        current = self.bound.get(name, _MISSING)
        if current is value:
            return False
        if current is not _MISSING:
            raise CaptureError(f"The name {name!r} (used by {used_by or 'a root'!r}) refers to two different "
                               "objects among the code to ship (for example a function and an older version kept "
                               "under an alias, or two modules' globals). Rename one of them.")
        self.bound[name] = value
        return True

    # -- the kinds ------------------------------------------------------------
    def _ship_module(self, name: str, module: types.ModuleType) -> None:
        line = f"import {module.__name__}" + ("" if name == module.__name__ else f" as {name}")
        self._ship_import(name, line, module)

    def _ship_import(self, name: str, line: str, module: types.ModuleType) -> None:
        self.imports[name] = ImportDef(name=name, line=line, digest=sha256_text(line))
        if module.__name__.partition(".")[0] == "vast_magic":
            self.warnings.add(f"{name!r} comes from vast_magic, which workers do not have installed: "
                              "use it only in notebook code, not in remote code.")
        if is_local_module(module):
            self._ship_local_module(module)

    def _ship_local_module(self, module: types.ModuleType) -> None:
        top = top_level(module.__name__) or module
        if top.__name__ in self.shipped_packages:
            return
        self.shipped_packages.add(top.__name__)
        for file in module_files(module):
            self.modules[file.relpath] = file
        for dependency in local_dependencies(top):
            self._ship_local_module(dependency)

    def _ship_function(self, name: str, value: Any) -> bool:
        """Ship a session function as source; False when it must go by value instead."""
        source = function_source(value, name)
        decorated = inspect.unwrap(value) is not value
        if decorated and not ast.parse(source).body[0].decorator_list:
            return False  # wrapped by a call (`g = cache(f)`): only the live object is faithful
        namespace = inspect.unwrap(value).__globals__
        self._add_source(name, "function", strip_decorators(source, namespace, is_deployment), namespace, value)
        return True

    def _ship_class(self, name: str, cls: type) -> None:
        namespace = _class_namespace(cls)
        source = strip_decorators(class_source(cls, name), namespace, is_deployment)
        self.classes[name] = cls
        self._add_source(name, "class", source, namespace, cls)

    def _add_source(self, name: str, kind: str, source: str, namespace: dict, value: Any) -> None:
        defined = ast.parse(source).body[0].name
        if defined != name:  # bound under an alias: keep both names working on the worker
            self._bind(defined, value, name)
            source = source.rstrip("\n") + f"\n\n{name} = {defined}\n"
        for secret in self.forbidden:
            if secret in source:
                raise CaptureError(f"The source of {name!r} contains your Vast API key. Remove it from the code; "
                                   "if the worker needs a credential, pass it with image.env(NAME=Secret(...)).")
        self.provider.update({name: name, defined: name})
        used = used_names(source)
        self.sources[name] = SourceDef(name=name, kind=kind, source=source, digest=source_digest(source))
        self.definition_deps[name] = used.at_definition - {name, defined}
        for needed in sorted(used.all - {name, defined}, reverse=True):
            self._queue_name(needed, namespace, used.assigned, name)

    def _queue_name(self, needed: str, namespace: dict, assigned: frozenset[str], used_by: str) -> None:
        value = namespace.get(needed, _MISSING)
        if value is not _MISSING:
            if getattr(builtins, needed, _MISSING) is not value:
                self.pending.append((needed, value, used_by))
            return
        if needed in assigned or _is_builtin(needed, namespace):
            return
        raise CaptureError(f"{used_by!r} uses the name {needed!r}, which is not defined yet. Run the cell that "
                           f"defines {needed!r} first (or define it), then deploy again.")

    def _ship_value(self, name: str, value: Any, used_by: str | None) -> None:
        check_value(name, value, self.forbidden, used_by)
        payload, code_by_value = pickle_value(name, value, used_by)
        if code_by_value and self.backend == "vast":
            raise CaptureError(
                f"{describe(name, used_by)} ships Python code by value (a lambda, a closure, or an object whose "
                "class is defined in the notebook), but code objects do not unpickle across Python versions and "
                "Vast workers may run another one. Make it a top-level `def` (or move the class to a module "
                "file) so it ships as source.")
        self.values[name] = ValueDef(name=name, payload=payload, digest=value_digest(value),
                                     by_value_code=code_by_value)
        for module_name in sorted(modules_used_by(name, value)):
            module = sys.modules.get(module_name)
            if module is not None and is_local_module(module):
                self._ship_local_module(module)
        cls = type(value)
        if _session_kind(cls) == "class" and not isinstance(value, types.FunctionType):
            self.warnings.add(f"{name!r} is an instance of {cls.__qualname__}, defined in the notebook: it ships "
                              f"with its own copy of the class, so isinstance({name}, {cls.__qualname__}) is False "
                              "on the worker. Create it inside the function if that matters.")

    # -- output ---------------------------------------------------------------
    def result(self) -> CapturedCode:
        order = _definition_order({name: {self.provider[d] for d in deps if d in self.provider}
                                   for name, deps in self.definition_deps.items()})
        return CapturedCode(
            sources=tuple(self.sources[name] for name in order),
            imports=tuple(self.imports[name] for name in sorted(self.imports)),
            values=tuple(self.values[name] for name in sorted(self.values)),
            modules=tuple(self.modules[path] for path in sorted(self.modules)),
            deployment_names=tuple(sorted(self.deployments)),
            warnings=tuple(sorted(self.warnings)),
            class_objects=tuple(sorted(self.classes.items())),
        )


def _definition_order(deps: dict[str, set[str]]) -> list[str]:
    """Topological order (dependencies first), ties broken by name so cell order never matters."""
    waiting = {name: set(needed) - {name} for name, needed in deps.items()}
    ready = [name for name, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for other, needed in waiting.items():
            if name in needed:
                needed.discard(name)
                if not needed:
                    heapq.heappush(ready, other)
    # a definition-time cycle cannot come from code that ran; keep a stable order anyway
    return order + sorted(set(deps) - set(order))


def _root_name(root: object, target: Any, name: str) -> str:
    """The global name a root is bound to where it was defined (its own name if unbound or ambiguous)."""
    namespace = _namespace_of(target)
    if namespace.get(name) is root or unproxy(namespace.get(name)) is target:
        return name
    aliases = sorted(key for key, value in namespace.items() if value is root or value is target)
    return aliases[0] if aliases else name


def _namespace_of(target: Any) -> dict:
    if isinstance(target, type):
        return _class_namespace(target)
    function = inspect.unwrap(target) if callable(target) else target
    return getattr(function, "__globals__", {})


def _class_namespace(cls: type) -> dict:
    """Globals a class body ran in: a method's, else its module's, else the IPython user namespace."""
    for member in vars(cls).values():
        member = getattr(member, "__func__", member)
        if isinstance(member, types.FunctionType) and member.__qualname__.startswith(cls.__qualname__ + "."):
            return member.__globals__
    module = sys.modules.get(cls.__module__)
    if module is not None:
        return vars(module)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _defined_in_session(obj: Any) -> bool:
    """Defined in ``__main__`` (a notebook cell or script) or in no importable module."""
    module = getattr(obj, "__module__", None)
    return not isinstance(module, str) or module not in sys.modules or is_session_module(module)


def _session_kind(value: Any) -> str | None:
    """``"class"``/``"function"`` for what ships as source; None for everything else."""
    if isinstance(value, type):
        return "class" if _defined_in_session(value) else None
    try:
        function = inspect.unwrap(value) if callable(value) else None
    except ValueError:  # a __wrapped__ cycle
        return None
    if not isinstance(function, types.FunctionType) or not _defined_in_session(function):
        return None
    if function.__name__ == "<lambda>" or function.__closure__:
        return None  # needs its captured cells: only the live object carries them
    return "function"


def _import_line(name: str, value: Any) -> str | None:
    """``from module import attr [as name]`` when ``value`` is reachable that way, else None."""
    module_name = getattr(value, "__module__", None)
    if not isinstance(module_name, str) or module_name not in sys.modules or is_session_module(module_name):
        return None
    module = sys.modules[module_name]
    for attr in (getattr(value, "__qualname__", None), getattr(value, "__name__", None), name):
        if isinstance(attr, str) and attr.isidentifier() and getattr(module, attr, _MISSING) is value:
            return f"from {module_name} import {attr}" + ("" if attr == name else f" as {name}")
    return None


def _is_builtin(name: str, namespace: dict) -> bool:
    scope = namespace.get("__builtins__", builtins)
    return name in (scope if isinstance(scope, dict) else vars(scope)) or hasattr(builtins, name)
