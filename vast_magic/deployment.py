"""``Deployment``: what a user declares, and the one way it gets deployed.

Declaring (``image``, ``remote``, ``context``, ``configure_autoscaling``)
only records data. ``ensure_ready`` hands a frozen snapshot of it to the one
path of DESIGN.md (``deploy_pipeline``): capture -> manifest -> decide_tier ->
bundle -> backend.apply, emitting events that the progress display renders
in the calling thread. Its remote functions call through its ``Caller``.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import loop, settings
from .autoscaling import AutoscalingConfig
from .backends.vast.keys import find_api_key
from .backends.vast.trusted import normalize as normalize_trusted_types
from .bundle.registry_spec import ContextSpec
from .call_handle import CallHandle
from .caller import Caller
from .deploy_pipeline import DeployPipeline, DeploymentSnapshot, workload_per_call
from .errors import ConfigError
from .image import DEFAULT_IMAGE, DEFAULT_STORAGE, Image, ImageSpec
from .pricing import DEFAULT_PRICING
from .remote import RemoteFunction, validate_options, write_outcome
from .reports import Bundle, DeploymentStatus, DeployReport, LogLine

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = ["Deployment"]

#: ``configure``'s "leave this one as it is" (None is a value there: no ttl, the backend setting, the default name)
_UNCHANGED: Any = type("Unchanged", (), {"__repr__": lambda self: "<unchanged>"})()

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _NAME_CHARS or len(value) > 100:
        raise ConfigError(f"Deployment {kind} {value!r} is invalid: use 1-100 letters, digits, '-', '_' or '.'.")
    return value


def _default_name(defined_in: str | None) -> str:
    """The stem of the file that created the Deployment (so ``python app.py``, ``import app`` and
    ``%run app.py`` agree), else of ``__main__``'s file, else ``notebook``."""
    path = defined_in or getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return "notebook"
    file = Path(path)
    return file.parent.name if file.stem in ("__main__", "__init__") else file.stem


def _defining_file() -> str | None:
    """The ``.py`` file of the first caller outside vast_magic (None for notebook cells)."""
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).partition(".")[0] == "vast_magic":
        frame = frame.f_back
    file = frame.f_globals.get("__file__") if frame is not None else None
    return file if isinstance(file, str) and file.endswith(".py") else None


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"ttl must be a positive number of seconds, got {ttl!r}.")
    return float(ttl)


def _checked(name: Any, tag: Any, ttl: Any, backend: Any) -> tuple[str | None, str, float | None, str | None]:
    """The constructor's rules for name, tag, ttl and backend (None: default name, no ttl, the setting)."""
    return (_check_name("name", name) if name is not None else None, _check_name("tag", tag), _check_ttl(ttl),
            settings.resolve("backend", backend) if backend is not None else None)


class Deployment:
    """A Vast.ai Serverless deployment: functions, contexts, an image and autoscaling."""

    __vast_magic_deployment__ = True

    def __init__(self, *, name: str | None = None, tag: str = "default", version_label: str | None = None,
                 api_key: str | None = None, ttl: float | None = None, backend: str | None = None,
                 vast_url: str | None = None, autoscaler_url: str | None = None,
                 transport: "httpx.AsyncBaseTransport | None" = None,
                 trusted_types: Iterable[type | str] | None = None):
        """``vast_url`` / ``autoscaler_url``: where the Vast API and autoscaler are (default: Vast's own;
        settings ``vast_url`` / ``autoscaler_url``, e.g. ``VAST_MAGIC_VAST_URL``), e.g. a
        ``vast_magic.testing.VastBox``. ``transport``: the HTTP transport for the Vast API (default: the
        network); tests pass ``vast_magic.testing.FakeVast().transport()``.

        ``trusted_types``: classes (or module names, trusting every name in that package) that answers
        from Vast workers may carry beyond plain values, numpy and the deployment's own classes; answers
        from a Vast host are unpickled with an allow-list, because the host is a third party."""
        self.name, self.tag, self.ttl, self.backend = _checked(name, tag, ttl, backend)
        self.version_label = version_label
        self.trusted_types = normalize_trusted_types(trusted_types)
        self._api_key = api_key
        self._vast_url = settings.resolve("vast_url", vast_url) if vast_url is not None else None
        self._autoscaler_url = settings.resolve("autoscaler_url", autoscaler_url) if autoscaler_url is not None else None
        self._transport = transport
        self._image: Image | None = None
        self._autoscaling = AutoscalingConfig()
        self._remotes: dict[str, RemoteFunction] = {}
        self._contexts: dict[str, tuple[type, ContextSpec]] = {}
        self._caller = Caller(owner=self.__repr__)
        self._pipeline = DeployPipeline(self._caller)
        self._defined_in = _defining_file()

    def configure(self, *, name: str | None = _UNCHANGED, tag: str = _UNCHANGED, ttl: float | None = _UNCHANGED,
                  backend: str | None = _UNCHANGED) -> "Deployment":
        """Change the name, tag, ttl or backend for good; pass only what changes. Returns this Deployment.

        Values are checked like the constructor's, all before any is set, so a bad one changes
        nothing. ``None`` means what it means there: the default name, no ttl, the ``backend``
        setting. The next ``ensure_ready`` deploys under the new name/tag (a new tag is a new
        endpoint: tier 4; the old one serves until torn down). A flag such as
        ``%vast_deploy --tag canary`` applies to that one deploy and does not call this.
        """
        self.name, self.tag, self.ttl, self.backend = _checked(
            *(new if new is not _UNCHANGED else old for new, old in
              ((name, self.name), (tag, self.tag), (ttl, self.ttl), (backend, self.backend))))
        return self

    def __repr__(self) -> str:
        backend = self.effective_backend
        where = f", vast_url={self.vast_url!r}, autoscaler_url={self.autoscaler_url!r}" if backend == "vast" else ""
        return f"Deployment(name={self.effective_name!r}, tag={self.tag!r}, backend={backend!r}{where})"

    # -- declaring ---------------------------------------------------------------
    @property
    def effective_name(self) -> str:
        return self.name or _default_name(self._defined_in)

    @property
    def effective_backend(self) -> str:
        return self.backend or settings.resolve("backend")

    @property
    def vast_url(self) -> str:
        """The Vast API base URL in effect (argument, %config, VAST_MAGIC_VAST_URL, pyproject, default)."""
        return self._vast_url or settings.resolve("vast_url")

    @property
    def autoscaler_url(self) -> str:
        """The Vast autoscaler base URL in effect (argument, %config, VAST_MAGIC_AUTOSCALER_URL, pyproject, default)."""
        return self._autoscaler_url or settings.resolve("autoscaler_url")

    def image(self, from_image: str = DEFAULT_IMAGE, storage: float = DEFAULT_STORAGE, **docker_login: Any) -> Image:
        """Set the worker image (replacing any earlier one) and return it for chaining."""
        self._image = Image(from_image, storage, offers=self._preview_offers, **docker_login)
        return self._image

    def image_or_default(self) -> Image:
        return self._image if self._image is not None else Image(DEFAULT_IMAGE, DEFAULT_STORAGE,
                                                                 offers=self._preview_offers)

    def _preview_offers(self, spec: ImageSpec, api_key: str | None, *, pricing: str = DEFAULT_PRICING) -> Any:
        """What ``image.preview_offers()`` asks: the Vast API, with this deployment's key and transport."""
        from .backends.vast.offers import preview_offers   # httpx is imported only when Vast is used
        return preview_offers(spec, api_key or self.api_key(), transport=self._transport, webserver_url=self.vast_url,
                              pricing=pricing)

    @property
    def transport(self) -> "httpx.AsyncBaseTransport | None":
        return self._transport

    def configure_autoscaling(self, **params: Any) -> AutoscalingConfig:
        """Merge autoscaling parameters into the ones set before (never replaces them)."""
        self._autoscaling = self._autoscaling.merged(**params)
        return self._autoscaling

    @property
    def autoscaling(self) -> AutoscalingConfig:
        return self._autoscaling

    def remote(self, fn: Callable | None = None, /, **options: Any):
        """Register a function to run on workers: ``@app.remote`` or ``@app.remote(benchmark_dataset=...)``."""
        def register(function: Callable) -> RemoteFunction:
            function = getattr(function, "__vast_magic_wrapped__", function)
            proxy = RemoteFunction(self._caller, function, validate_options(function, **dict(options)))
            self._remotes[function.__name__] = proxy
            return proxy
        return register(fn) if fn is not None else register

    def context(self, *args: Any, **kwargs: Any) -> Callable[[type], type]:
        """Register an async context-manager class, instantiated with these arguments on each worker."""
        if len(args) == 1 and not kwargs and inspect.isclass(args[0]) and hasattr(args[0], "__aenter__"):
            return self.context()(args[0])  # bare @app.context

        def register(cls: type) -> type:
            if not inspect.isclass(cls):
                raise ConfigError(f"@app.context decorates a class; got {type(cls).__name__}.")
            missing = [m for m in ("__aenter__", "__aexit__") if not hasattr(cls, m)]
            if missing:
                raise ConfigError(f"Context class {cls.__name__} must define {' and '.join(missing)} "
                                  "(an async context manager: `async def __aenter__(self): return self`).")
            self._contexts[cls.__name__] = (cls, ContextSpec(cls.__name__, tuple(args), tuple(sorted(kwargs.items()))))
            return cls
        return register

    def get_context(self, cls: type) -> Any:
        """On a worker this returns the entered context; in the client there is none."""
        raise ConfigError(f"get_context({getattr(cls, '__name__', cls)}) works only inside a remote function running "
                          "on a worker; contexts are never instantiated in the notebook. Call the function remotely "
                          "(await f(...)) instead of f.local(...).")

    @property
    def functions(self) -> dict[str, RemoteFunction]:
        return dict(self._remotes)

    @property
    def contexts(self) -> dict[str, type]:
        return {name: cls for name, (cls, _) in self._contexts.items()}

    # -- deploying ---------------------------------------------------------------
    def _snapshot(self, *, name: str | None = None, tag: str | None = None, ttl: float | None = None,
                  backend: str | None = None) -> DeploymentSnapshot:
        """This deployment as a frozen value: all that one command (deploy, manifest, bundle, status, logs,
        teardown) reads of it, with that command's own overrides (``%vast_deploy --tag canary``; None: keep)
        checked like the constructor's. The Deployment itself is left as it is."""
        name, tag, ttl, backend = _checked(*(new if new is not None else old for new, old in
                                             ((name, self.name), (tag, self.tag), (ttl, self.ttl),
                                              (backend, self.backend))))
        backend = backend or settings.resolve("backend")
        vast = backend == "vast"
        return DeploymentSnapshot(
            label=repr(self), name=name or _default_name(self._defined_in), tag=tag, backend=backend, ttl=ttl,
            version_label=self.version_label, image=self.image_or_default().spec(), autoscaling=self._autoscaling,
            functions=tuple((name, fn.local, fn.options) for name, fn in sorted(self._remotes.items())),
            contexts=tuple(registered for _, registered in sorted(self._contexts.items())),
            trusted_types=self.trusted_types, api_key=self.api_key() if vast else None,
            transport=self._transport if vast else None, vast_url=self.vast_url if vast else None,
            autoscaler_url=self.autoscaler_url if vast else None)

    def manifest(self):
        """The Manifest that would be deployed now (what decide_tier compares)."""
        return self._pipeline.prepare(self._snapshot()).manifest

    def build_bundle(self, path: str | os.PathLike) -> Bundle:
        """Write the bundle tarball to ``path`` and return what it holds."""
        return self._pipeline.write_bundle(self._pipeline.prepare(self._snapshot()), Path(path))

    def ensure_ready(self, dry_run: bool = False, wait: bool = True, timeout: float | None = None) -> DeployReport:
        """Deploy what changed and wait for workers; works inside Jupyter's running loop."""
        return self._ensure_ready_as(self._snapshot(), dry_run=dry_run, wait=wait, timeout=timeout)

    def _ensure_ready_as(self, snapshot: DeploymentSnapshot, *, dry_run: bool = False, wait: bool = True,
                         timeout: float | None = None) -> DeployReport:
        """``ensure_ready`` of ``snapshot`` (``%vast_deploy --name/--tag/--ttl/--backend``: that deploy only);
        calls then go to what was deployed last."""
        return self._pipeline.run_sync(snapshot, dry_run=dry_run, wait=wait, timeout=timeout)

    def _captured(self, snapshot: DeploymentSnapshot):
        """What capture ships for ``snapshot`` (``CapturedCode``): watch mode watches the files it came from."""
        return self._pipeline.prepare(snapshot).code

    def _start_deploy(self, snapshot: DeploymentSnapshot, *, wait: bool = True, timeout: float | None = None,
                      emit: Callable[[Any], None]) -> loop.Started:
        """Capture now, deploy on the background loop without waiting (``%vast_deploy --watch`` redeploys from a
        task on the kernel's loop); ``emit`` gets the events on that loop's thread. ``cancel()`` on the result
        stops the deploy and waits until it has ended."""
        return self._pipeline.start(snapshot, wait=wait, timeout=timeout, emit=emit)

    async def async_ensure_ready(self, dry_run: bool = False, wait: bool = True, timeout: float | None = None) -> DeployReport:
        return await self._pipeline.run_async(self._snapshot(), dry_run=dry_run, wait=wait, timeout=timeout)

    ensure_ready_async = async_ensure_ready

    def status(self) -> DeploymentStatus:
        """The backend's view of the workers, with this process's recent calls (rate, p50/p99) added."""
        snapshot = self._snapshot()
        status = loop.run_sync(self._pipeline.backend(snapshot).status(snapshot.name, snapshot.tag))
        return dataclasses.replace(status, calls=self._caller.call_stats(snapshot.name, snapshot.tag),
                                   workload_per_call=workload_per_call(snapshot.functions))

    def logs(self, function: str | None = None, tail: int = 200) -> list[LogLine]:
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 1:
            raise ConfigError(f"tail must be a whole number >= 1, got {tail!r}.")
        snapshot = self._snapshot()
        return loop.run_sync(self._pipeline.backend(snapshot).logs(snapshot.name, snapshot.tag, function, tail))

    def teardown(self, all_tags: bool = False) -> None:
        """Stop this deployment's workers (every tag with ``all_tags``); safe to call twice."""
        snapshot = self._snapshot()
        tag = None if all_tags else snapshot.tag
        loop.run_sync(self._pipeline.backend(snapshot).teardown(snapshot.name, tag))
        self._caller.forget(snapshot.name, tag)

    def _known_deployments(self) -> list[tuple[str, str]]:
        """The (name, tag) pairs this deployment's backend knows of (the local engine's records, or this
        machine's Vast records): what "no such deployment" messages offer instead."""
        return loop.run_sync(self._pipeline.backend(self._snapshot()).known_deployments())

    def get_call(self, call_id: str) -> CallHandle:
        """The ``CallHandle`` of a spawned call (``handle.id``), from another cell or, on the local engine,
        another process or a restarted kernel: the engine keeps a call until an hour after it finished (the
        newest 1,000 calls within 1 GiB of results; none after the engine restarted). On Vast, calls live in
        the process that spawned them. Raises ConfigError when the call is not (or no longer) kept."""
        snapshot = self._snapshot()
        backend = self._pipeline.backend(snapshot)
        classes = self._caller.class_refs()
        if classes is None:                      # not deployed in this process: the classes it would ship
            classes = self._pipeline.prepare(snapshot).class_refs
        function = loop.run_sync(backend.call_function(call_id))
        return CallHandle(call_id, function, backend, classes, write_outcome)

    def api_key(self) -> str | None:
        """The Vast API key (argument, env, then the official CLI key files), never printed."""
        return find_api_key(self._api_key)


