"""What the worker serves: the worker-side app object and the bundle's registry.

User code refers to its ``Deployment`` variable (``app.get_context(Model)``,
decorators left in shipped source); each generated module rebinds that name to
``worker_app()``, whose decorators are identities and whose image and
autoscaling calls do nothing, because on the worker those decisions are already
made. ``load_bundle`` imports the generated modules and pairs each registered
name with the live object at its location (``"mylib.app:square"``).
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from . import shipped, wire

__all__ = [
    "REGISTRY_FILE", "ContextLookupError", "WorkerApp", "worker_app", "RemoteEntry", "LoadedApp", "load_bundle"
]

REGISTRY_FILE = "vast_magic_registry.pkl"


class ContextLookupError(KeyError):
    """``get_context`` cannot answer (KeyError, like the official worker, with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _NoOpImage:
    """Returned by ``image()`` on the worker: every builder call is accepted and chains."""

    def __getattr__(self, name: str) -> Callable[..., "_NoOpImage"]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self


def _identity_decorator(args: tuple, kwargs: dict):
    if len(args) == 1 and not kwargs and callable(args[0]):
        return args[0]                       # used bare: @app.remote
    return lambda target: target             # used with options: @app.remote(...)


class WorkerApp:
    """The object a deployment variable is rebound to inside the worker."""

    def __init__(self) -> None:
        self._contexts: dict[str, Any] | None = None

    def get_context(self, cls_or_name) -> Any:
        """What that context's ``__aenter__`` returned."""
        name = cls_or_name if isinstance(cls_or_name, str) else getattr(cls_or_name, "__name__", repr(cls_or_name))
        if self._contexts is None:
            raise ContextLookupError(
                f"get_context({name}) was called before the worker entered its contexts; "
                "call it inside a remote function, not at import time")
        if name not in self._contexts:
            known = ", ".join(sorted(self._contexts)) or "none"
            raise ContextLookupError(f"no context named {name!r} on this deployment (registered: {known})")
        return self._contexts[name]

    def set_contexts(self, entered: dict[str, Any] | None) -> None:
        """Called by ``contexts`` once every context is entered (``None`` after exit)."""
        self._contexts = dict(entered) if entered is not None else None

    def remote(self, *args, **kwargs):
        return _identity_decorator(args, kwargs)

    def context(self, *args, **kwargs):
        return _identity_decorator(args, kwargs)

    def image(self, *args, **kwargs) -> _NoOpImage:
        return _NoOpImage()

    def configure_autoscaling(self, *args, **kwargs) -> None:
        return None


_WORKER_APP = WorkerApp()


def worker_app() -> WorkerApp:
    """The process-wide WorkerApp (one per worker process)."""
    return _WORKER_APP


@dataclass
class RemoteEntry:
    """One registered function with its options (the RemoteSpec dict) and helpers resolved."""
    name: str
    function: Callable
    options: dict
    workload_calculator: Callable | None = None
    benchmark_generator: Callable | None = None

    def option(self, key: str, default=None):
        value = self.options.get(key)
        return default if value is None else value


@dataclass
class LoadedApp:
    modules: dict[str, Any]                   # generated module name -> module
    remotes: dict[str, RemoteEntry]
    contexts: list[dict]                      # ContextSpec dicts ("name", "at", "args", "kwargs"), in order
    classes: dict[str, type] = field(default_factory=dict)          # location -> shipped class
    context_classes: dict[str, type] = field(default_factory=dict)  # context name -> class

    @property
    def class_refs(self) -> dict[type, str]:
        return {cls: where for where, cls in self.classes.items()}


def load_bundle(bundle_dir: str) -> LoadedApp:
    """Import the bundle's generated modules from ``bundle_dir`` and resolve the registry's locations."""
    bundle_dir = os.path.abspath(bundle_dir)
    if bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    with open(os.path.join(bundle_dir, REGISTRY_FILE), "rb") as fh:
        registry = wire.loads(fh.read(), [], shipped.BY_LOCATION)
    modules = {name: importlib.import_module(name) for name in registry.get("modules", [])}
    waiting = shipped.unbound_links()
    if waiting:
        raise ImportError(f"the bundle's modules left names unbound: {', '.join(waiting)}")
    classes = {where: _lookup(where, "shipped class") for where in registry.get("classes", [])}
    remotes = {spec["name"]: _remote_entry(spec) for spec in registry.get("remotes", [])}
    contexts = list(registry.get("contexts", []))
    context_classes = {spec["name"]: _lookup(spec["at"], "context class") for spec in contexts}
    return LoadedApp(modules, remotes, contexts, classes, context_classes)


def _remote_entry(spec: dict) -> RemoteEntry:
    def helper(key: str):
        return _lookup(spec[key], key.replace("_", " ")) if spec.get(key) else None
    return RemoteEntry(spec["name"], _lookup(spec["at"], "remote function"), dict(spec),
                       helper("workload_calculator"), helper("benchmark_generator"))


def _lookup(where: str, what: str):
    try:
        return shipped.resolve(where)
    except (ImportError, AttributeError, ValueError) as exc:
        raise LookupError(f"the bundle registers {what} {where.rpartition(':')[2]!r} at {where!r} but the worker "
                          f"cannot find it there ({type(exc).__name__}: {exc})") from None
