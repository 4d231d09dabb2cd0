"""What the worker serves: the worker-side app object and the bundle's registry.

User code refers to its ``Deployment`` variable (``app.get_context(Model)``,
decorators left in shipped source); the generated ``vast_magic_app`` rebinds that
name to ``worker_app()``, whose decorators are identities and whose image and
autoscaling calls do nothing, because on the worker those decisions are already
made. ``load_bundle`` imports the generated module and pairs each registered
name with the live object it names.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from . import wire

__all__ = [
    "APP_MODULE", "REGISTRY_FILE", "ContextLookupError", "WorkerApp", "worker_app", "RemoteEntry", "LoadedApp",
    "load_bundle"
]

APP_MODULE = "vast_magic_app"
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
    module: Any
    remotes: dict[str, RemoteEntry]
    contexts: list[dict]                      # ContextSpec dicts, in registration order
    classes: dict[str, type] = field(default_factory=dict)

    @property
    def class_refs(self) -> dict[type, str]:
        return {cls: name for name, cls in self.classes.items()}


def load_bundle(bundle_dir: str) -> LoadedApp:
    """Import ``vast_magic_app`` from ``bundle_dir`` and resolve the registry's names."""
    bundle_dir = os.path.abspath(bundle_dir)
    if bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    module = importlib.import_module(APP_MODULE)
    module_classes = {n: v for n, v in vars(module).items() if isinstance(v, type)}
    with open(os.path.join(bundle_dir, REGISTRY_FILE), "rb") as fh:
        registry = wire.loads(fh.read(), [], module_classes)
    classes = {name: _lookup(module, name, "shipped class") for name in registry.get("classes", [])}
    remotes = {spec["name"]: _remote_entry(module, spec) for spec in registry.get("remotes", [])}
    for spec in registry.get("contexts", []):
        _lookup(module, spec["name"], "context class")
    return LoadedApp(module, remotes, list(registry.get("contexts", [])), classes)


def _remote_entry(module, spec: dict) -> RemoteEntry:
    def helper(key: str):
        return _lookup(module, spec[key], key.replace("_", " ")) if spec.get(key) else None
    return RemoteEntry(spec["name"], _lookup(module, spec["name"], "remote function"), dict(spec),
                       helper("workload_calculator"), helper("benchmark_generator"))


def _lookup(module, name: str, what: str):
    try:
        return getattr(module, name)
    except AttributeError:
        raise LookupError(f"the bundle registers {what} {name!r} but {APP_MODULE}.py defines no such name") from None
