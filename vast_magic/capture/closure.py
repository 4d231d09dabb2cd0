"""The closure walk: from the roots to every global they need, and nothing else.

Each global name reached is classified once (``_Walk.visit``): a Deployment is
rebound on the worker; a function or class whose module ships as source (see
``origins``) is shipped as source in *its own* module's generated module and
walked in turn, and a reference to it from another module becomes a link; a
module or importable object becomes an import line (a local module also
travels as files); anything else goes by value. The walk never looks at a name
the shipped code does not read, so the rest of a notebook or module stays home.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import sys
import types
from typing import Any, Sequence

from ..errors import CaptureError
from .builds import ModuleBuild
from .digests import sha256_text, source_digest, value_digest
from .model import CELLS_MODULE, CapturedCode, DeploymentRef, ImportDef, ModuleFile, SourceDef, ValueDef, location
from .modules import local_dependencies, module_files, top_level
from .names import attribute_uses, used_names
from .origins import (FILES, SOURCE, Classifier, Origin, bound_name, is_deployment, logical_name, namespace_of,
                      unproxy)
from .requirements import imported_names, third_party
from .source import class_source, function_source, strip_decorators
from .values import check_value, describe, modules_used_by, pickle_value

__all__ = ["capture_code"]

_MISSING = object()


def capture_code(roots: Sequence[object], *, helpers: Sequence[object] = (), backend: str = "local",
                 forbidden_strings: Sequence[str] = ()) -> CapturedCode:
    """Turn live code into shippable code as data.

    ``roots`` are the registered remote functions and context classes: each
    must ship as source, or capture says why it cannot. ``helpers`` (benchmark
    generators, workload calculators) ship however their module travels.
    ``entries`` in the result holds the location of each root, then of each
    helper, in the order given.
    """
    registered = [unproxy(root) for root in roots]
    walk = _Walk(backend, tuple(s for s in forbidden_strings if s),
                 Classifier(getattr(r, "__module__", None) for r in registered))
    entries = [walk.add_root(root, registered=True) for root in roots]
    entries += [walk.add_root(helper, registered=False) for helper in helpers]
    walk.run()
    return walk.result(tuple(entries))


class _Walk:
    def __init__(self, backend: str, forbidden: tuple[str, ...], classifier: Classifier):
        self.backend, self.forbidden, self.classify = backend, forbidden, classifier
        self.pending: list[tuple[ModuleBuild, str, Any, str | None, frozenset[str]]] = []
        self.builds: dict[str, ModuleBuild] = {}
        self.registered: dict[tuple[str, str], str] = {}   # (module, name) -> "remote function" | "context class"
        self.files: dict[str, ModuleFile] = {}             # by relpath
        self.shipped_packages: set[str] = set()
        self.classes: dict[str, type] = {}                 # location -> shipped class
        self.imported: set[str] = set()                    # top-level names the shipped code imports
        self.warnings: set[str] = set()

    # -- driving ------------------------------------------------------------
    def add_root(self, root: object, registered: bool) -> str:
        """Queue a root where it lives; return its location on the worker."""
        target = unproxy(root)
        if not (isinstance(target, type) or callable(target)) or is_deployment(target):
            raise CaptureError(f"capture_code got {type(root).__name__} {root!r} as a root: roots are the remote "
                               "functions, context classes and helper functions to ship.")
        name = getattr(target, "__name__", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise CaptureError(f"{root!r} has no usable name ({name!r}): a remote function, context or helper "
                               "must be a top-level `def` or `class` in a cell or module, not a lambda.")
        origin = self.classify.origin(target)
        if origin is None or origin.kind != SOURCE:
            return self._importable_root(root, target, name, registered)
        build = self.build(origin)
        target = _reloaded(target, origin, name)
        attr = bound_name(target, origin.namespace, name) or name
        if registered:
            self.registered[(build.name, attr)] = "context class" if isinstance(target, type) else "remote function"
        self.pending.append((build, attr, target, None, frozenset()))
        return location(build.name, attr)

    def _importable_root(self, root: object, target: Any, name: str, registered: bool) -> str:
        module = sys.modules.get(getattr(target, "__module__", None) or "")
        attr = _importable_attr(name, target)
        if registered or module is None or attr is None:
            role = "context class" if isinstance(target, type) else "remote function" if registered else "helper"
            raise CaptureError(f"{role} {name!r} is a {type(target).__name__} that is not defined in Python source "
                               "vast_magic can ship; define it with `def` (or `class`) at the top level of a cell "
                               "or module and register that.")
        self._note_import(module)
        return location(module.__name__, attr)

    def run(self) -> None:
        while self.pending:
            self.visit(*self.pending.pop())

    def build(self, origin: Origin) -> ModuleBuild:
        if origin.module not in self.builds:
            file = origin.namespace.get("__file__")
            is_package = "__path__" in origin.namespace or (isinstance(file, str) and file.endswith("__init__.py"))
            self.builds[origin.module] = ModuleBuild(origin.module, origin.namespace, is_package)
        return self.builds[origin.module]

    def _module_build(self, module: types.ModuleType) -> ModuleBuild:
        namespace = vars(module)
        return self.build(Origin(SOURCE, logical_name(namespace), namespace))

    def visit(self, build: ModuleBuild, name: str, value: Any, used_by: str | None, attrs: frozenset[str]) -> None:
        """Classify one global of ``build`` and ship it; queue what it needs in turn."""
        if is_deployment(value):
            if build.bind(name, value, used_by):
                build.add(DeploymentRef(name))
            return
        value = unproxy(value)
        if isinstance(value, types.ModuleType):
            self._queue_module_attributes(value, attrs, used_by)
        if not build.bind(name, value, used_by):
            return  # already shipped under this name
        if isinstance(value, types.ModuleType):
            self._ship_module(build, name, value)
        elif (origin := self.classify.origin(value)) is not None and origin.kind == SOURCE:
            self._ship_code(build, name, value, origin, used_by)
        elif (line := _import_line(name, value, self.classify)) is not None:
            self._ship_import(build, name, line, sys.modules[value.__module__])
        else:
            self._ship_value(build, name, value, used_by)

    # -- code that ships as source ---------------------------------------------
    def _ship_code(self, build: ModuleBuild, name: str, value: Any, origin: Origin, used_by: str | None) -> None:
        """Ship a function or class as source in its own module; from elsewhere, link to it there."""
        home = bound_name(value, origin.namespace, value.__name__)
        if origin.module != build.name and home is not None:
            target = self.build(origin)
            self.pending.append((target, home, value, used_by, frozenset()))
            build.link(name, target.name, home)
        elif isinstance(value, type):
            self._ship_class(build, name, value)
        elif not self._ship_function(build, name, value):
            self._ship_value(build, name, value, used_by)

    def _ship_function(self, build: ModuleBuild, name: str, value: Any) -> bool:
        """Ship a function as source; False when it must go by value instead (a registered one must not)."""
        function = inspect.unwrap(value)
        cause = _not_source_because(function)
        source = function_source(value, name) if cause is None else ""
        if cause is None and function is not value and not ast.parse(source).body[0].decorator_list:
            cause = f"it is wrapped by a call (`{name} = decorator(...)`), so only the live object is faithful"
        if cause is not None:
            role = self.registered.get((build.name, name))
            if role:
                raise CaptureError(f"The {role} {name!r} cannot ship as source: {cause}. Define it with `def` at "
                                   "the top level of a cell or module (decorators written with @ are fine) and "
                                   "register that.")
            return False
        self._add_source(build, name, "function", strip_decorators(source, function.__globals__, is_deployment),
                         function.__globals__, value)
        return True

    def _ship_class(self, build: ModuleBuild, name: str, cls: type) -> None:
        namespace = namespace_of(cls)
        source = strip_decorators(class_source(cls, name, namespace), namespace, is_deployment)
        self.classes[location(build.name, name)] = cls
        self._add_source(build, name, "class", source, namespace, cls)

    def _add_source(self, build: ModuleBuild, name: str, kind: str, source: str, namespace: dict, value: Any) -> None:
        defined = ast.parse(source).body[0].name
        if defined != name:  # bound under an alias: keep both names working on the worker
            build.bind(defined, value, name)
            source = source.rstrip("\n") + f"\n\n{name} = {defined}\n"
        for secret in self.forbidden:
            if secret in source:
                raise CaptureError(f"The source of {name!r} contains your Vast API key. Remove it from the code; "
                                   "if the worker needs a credential, pass it with image.env(NAME=Secret(...)).")
        used = used_names(source)
        self.imported |= imported_names(source)
        build.add(SourceDef(name=name, kind=kind, source=source, digest=source_digest(source)),
                  needs=used.at_definition - {name, defined}, also_binds=(defined,))
        attributes = attribute_uses(source)
        for needed in sorted(used.all - {name, defined}, reverse=True):
            attrs = frozenset(attr for base, attr in attributes if base == needed)
            self._queue_name(build, needed, namespace, used.assigned, name, attrs)

    def _queue_name(self, build: ModuleBuild, needed: str, namespace: dict, assigned: frozenset[str],
                    used_by: str, attrs: frozenset[str]) -> None:
        value = namespace.get(needed, _MISSING)
        if value is not _MISSING:
            if getattr(builtins, needed, _MISSING) is not value:
                self.pending.append((build, needed, value, used_by, attrs))
            return
        if needed in assigned or _is_builtin(needed, namespace):
            return
        raise CaptureError(f"{used_by!r} uses the name {needed!r}, which is not defined yet. Run the cell that "
                           f"defines {needed!r} first (or define it), then deploy again.")

    # -- modules and imports ----------------------------------------------------
    def _queue_module_attributes(self, module: types.ModuleType, attrs: frozenset[str], used_by: str | None) -> None:
        """``mylib.helper(x)`` with ``mylib`` shipped as source: ``helper`` ships in mylib's generated module."""
        if self.classify.module_kind(module) != SOURCE:
            return
        target, namespace = self._module_build(module), vars(module)
        for attr in sorted(attrs):
            if attr in namespace:
                self.pending.append((target, attr, namespace[attr], used_by, frozenset()))

    def _ship_module(self, build: ModuleBuild, name: str, module: types.ModuleType) -> None:
        if self.classify.module_kind(module) == SOURCE:
            build.link(name, self._module_build(module).name, "")
            return
        line = f"import {module.__name__}" + ("" if name == module.__name__ else f" as {name}")
        self._ship_import(build, name, line, module)

    def _ship_import(self, build: ModuleBuild, name: str, line: str, module: types.ModuleType) -> None:
        build.add(ImportDef(name=name, line=line, digest=sha256_text(line)))
        if module.__name__.partition(".")[0] == "vast_magic":
            self.warnings.add(f"{name!r} comes from vast_magic, which workers do not have installed: "
                              "use it only in notebook code, not in remote code.")
        self._note_import(module)

    def _note_import(self, module: types.ModuleType) -> None:
        self.imported.add(module.__name__.partition(".")[0])
        if self.classify.module_kind(module) == FILES:
            self._ship_local_module(module)

    def _ship_local_module(self, module: types.ModuleType) -> None:
        """Ship a local module's files (its whole top-level package), and the local modules it imports."""
        if self.classify.module_kind(module) == SOURCE:
            self._module_build(module)  # its generated module takes the file's place
            return
        top = top_level(module.__name__) or module
        if top.__name__ in self.shipped_packages:
            return
        self.shipped_packages.add(top.__name__)
        for file in module_files(module):
            self.files[file.relpath] = file
            self.imported |= imported_names(file.content.decode("utf-8", "replace"))
        for dependency in local_dependencies(top):
            self._ship_local_module(dependency)

    # -- values ---------------------------------------------------------------
    def _ship_value(self, build: ModuleBuild, name: str, value: Any, used_by: str | None) -> None:
        check_value(name, value, self.forbidden, used_by)
        payload, code_by_value, refs = pickle_value(name, value, used_by, self._class_ref)
        if code_by_value and self.backend == "vast":
            raise CaptureError(
                f"{describe(name, used_by)} ships Python code by value (a lambda, a closure, or an object whose "
                "class is defined in the notebook), but code objects do not unpickle across Python versions and "
                "Vast workers may run another one. Make it a top-level `def` (or move the class to a module "
                "file) so it ships as source.")
        same_module = frozenset(ref.rpartition(":")[2] for ref in refs if ref.rpartition(":")[0] == build.name)
        build.add(ValueDef(name=name, payload=payload, digest=value_digest(value),
                           by_value_code=code_by_value), needs=same_module)
        for module_name in sorted(modules_used_by(name, value)):
            module = sys.modules.get(module_name)
            if module is not None and module_name != "__main__" and self.classify.module_kind(module) != SOURCE:
                self._note_import(module)
        cls = type(value)
        origin = self.classify.origin(cls)
        if origin is not None and origin.kind == SOURCE and self._class_ref(cls) is None:
            self.warnings.add(f"{name!r} is an instance of {cls.__qualname__}, whose source cannot be found: it "
                              f"ships with its own copy of the class, so isinstance({name}, {cls.__qualname__}) is "
                              "False on the worker. Create it inside the function if that matters.")

    def _class_ref(self, cls: type) -> str | None:
        """Where a class that ships as source lives on the worker (queued for shipping); None to pickle it whole."""
        origin = self.classify.origin(cls)
        if origin is None or origin.kind != SOURCE or cls.__qualname__ != cls.__name__:
            return None
        home = bound_name(cls, origin.namespace, cls.__name__)
        if home is None:
            return None
        try:
            class_source(cls, home, origin.namespace)
        except CaptureError:
            return None
        target = self.build(origin)
        if target.bound.get(home) is not cls:
            self.pending.append((target, home, cls, None, frozenset()))
        return location(target.name, home)

    # -- output ---------------------------------------------------------------
    def result(self, entries: tuple[str, ...]) -> CapturedCode:
        self._add_parent_packages()
        modules = tuple(self.builds[name].finish() for name in sorted(self.builds))
        generated = {m.path for m in modules}
        files = tuple(self.files[path] for path in sorted(self.files) if path not in generated)
        shipped = {m.name.partition(".")[0] for m in modules} | {f.module.partition(".")[0] for f in files}
        for module in modules:
            for item in module.items:
                if isinstance(item, ImportDef):
                    self.imported |= imported_names(item.line)
        return CapturedCode(
            source_modules=modules, file_modules=files, entries=entries,
            packages=third_party(self.imported, shipped), warnings=tuple(sorted(self.warnings)),
            class_objects=tuple(sorted(self.classes.items())),
        )

    def _add_parent_packages(self) -> None:
        """Every package above a generated module exists on the worker: as its files, or generated."""
        done: set[str] = set()
        while todo := [name for name in self.builds if name not in done]:
            for name in todo:
                done.add(name)
                parent = name.rpartition(".")[0]
                if not parent or parent in self.builds:
                    continue
                module = sys.modules.get(parent)
                if module is not None and self.classify.module_kind(module) == FILES:
                    self._ship_local_module(module)
                else:
                    namespace = vars(module) if module is not None else {"__name__": parent, "__path__": []}
                    self.builds[parent] = ModuleBuild(parent, namespace, is_package=True)


def _reloaded(target: Any, origin: Origin, name: str) -> Any:
    """The module's current version of a root registered before the module was reloaded.

    IPython's autoreload (before 9) and ``importlib.reload`` re-run the module:
    a Deployment held from before still lists the old function or class, while
    the module's globals, which the shipped code reads, hold the new ones. Both
    are the same definition, and the module as it is now is what deploys.
    """
    current = unproxy(origin.namespace.get(name))
    same_definition = current is not None and current is not target and type(current) is type(target) and \
        getattr(current, "__qualname__", None) == target.__qualname__ and \
        getattr(current, "__module__", None) == target.__module__
    return current if same_definition and origin.module != CELLS_MODULE else target


def _not_source_because(function: Any) -> str | None:
    """Why a Python function cannot ship as a top-level source definition, or None."""
    if function.__name__ == "<lambda>":
        return "it is a lambda"
    if function.__closure__:
        return "it is defined inside another function and uses its variables (a closure)"
    if "<locals>" in function.__qualname__:
        return "it is defined inside another function"
    return None


def _importable_attr(name: str, value: Any) -> str | None:
    """The attribute of ``value.__module__`` that is ``value``, if any."""
    module = sys.modules.get(getattr(value, "__module__", None) or "")
    if module is None:
        return None
    for attr in (getattr(value, "__qualname__", None), getattr(value, "__name__", None), name):
        if isinstance(attr, str) and attr.isidentifier() and getattr(module, attr, _MISSING) is value:
            return attr
    return None


def _import_line(name: str, value: Any, classify: Classifier) -> str | None:
    """``from module import attr [as name]`` when ``value`` is importable from a module the worker has as is."""
    module_name = getattr(value, "__module__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or module_name == "__main__" or classify.module_kind(module) == SOURCE:
        return None
    attr = _importable_attr(name, value)
    if attr is None:
        return None
    return f"from {module_name} import {attr}" + ("" if attr == name else f" as {name}")


def _is_builtin(name: str, namespace: dict) -> bool:
    scope = namespace.get("__builtins__", builtins)
    return name in (scope if isinstance(scope, dict) else vars(scope)) or hasattr(builtins, name)
