"""The one way through: capture -> manifest -> tier -> bundle -> backend.apply.

CPU work (capture, manifest) runs in the calling thread; backend I/O runs on
the private background loop. Events produced on the loop travel through a
queue back to the calling thread, which renders them, so nothing on the
background loop ever writes to the notebook's output.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import loop, settings
from .backends import get_backend
from .backends.base import CallOutcome, CallSpec, DeployPlan
from .bundle import build_manifest, decide_tier, secret_key, write_bundle
from .bundle.manifest import Manifest
from .call_stats import CallCounter
from .capture import capture_code, requirement_warnings
from .display import open_progress
from .errors import BundleError, ConfigError
from .events import Event, Packaging, Ready, TierDecided, Warned
from .reports import Bundle, CallStats, DeployReport, LogLine
from .runtime.benchmark import DEFAULT_WORKLOAD

if TYPE_CHECKING:  # pragma: no cover
    from .deployment import Deployment
    from .remote import RemoteFunction

__all__ = ["DeployTarget", "Prepared", "Deployed", "DeployFlow", "workload_per_call"]

_BACKENDS: dict[tuple, Any] = {}


@dataclass(frozen=True)
class DeployTarget:
    """Where one command acts: name, tag, ttl and backend, read once from the Deployment (with the
    command's own overrides, e.g. ``%vast_deploy --tag canary``) so a deploy never reads them twice."""

    name: str
    tag: str
    ttl: float | None
    backend: str


@dataclass(frozen=True)
class Prepared:
    """Everything captured from the live session for one deploy."""

    backend: str
    name: str
    tag: str
    ttl: float | None
    image: Any
    code: Any
    remotes: tuple
    contexts: tuple
    manifest: Any
    class_refs: dict = field(compare=False)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deployed:
    """What calls need after a successful ensure_ready in this process."""

    backend: Any
    name: str
    tag: str
    functions: frozenset
    class_refs: dict
    calls: CallCounter = field(compare=False, default_factory=CallCounter)


def workload_per_call(functions: Any) -> float | None:
    """What one call weighs in the unit of perf (so perf / this = calls per second): the benchmark's default
    workload, unless the benchmarked function has a workload calculator (then calls weigh what it says)."""
    benchmarked = [fn for fn in functions
                   if fn.options.benchmark_dataset is not None or fn.options.benchmark_generator is not None]
    if len(benchmarked) != 1 or benchmarked[0].options.workload_calculator is not None:
        return None
    return DEFAULT_WORKLOAD


class DeployFlow:
    def __init__(self, app: "Deployment"):
        self.app = app
        self._deployed: Deployed | None = None
        self._last_manifest = None
        self._calls: dict[tuple[str, str], CallCounter] = {}   # kept across redeploys of a name and tag

    # -- preparing (calling thread) ---------------------------------------------
    def prepare(self, target: DeployTarget, require_benchmark: bool = False) -> Prepared:
        app, backend_kind = self.app, target.backend
        if not app._remotes:
            raise ConfigError(f"{app!r} has no remote functions: decorate one with @app.remote (or use %%vast_remote).")
        functions = [fn for _, fn in sorted(app._remotes.items())]
        if require_benchmark:
            _check_one_benchmark(functions)
        registered = [(cls, spec) for _, (cls, spec) in sorted(app._contexts.items())]
        roots = [*functions, *(cls for cls, _ in registered)]
        helpers = [helper for fn in functions for helper in fn.helpers()]
        forbidden = [key for key in [app.api_key()] if key] if backend_kind == "vast" else []
        code = capture_code(roots, helpers=helpers, backend=backend_kind, forbidden_strings=forbidden)
        where = {id(obj): at for obj, at in zip([*roots, *helpers], code.entries)}
        remotes = tuple(fn.spec(lambda obj: where[id(obj)]) for fn in functions)
        contexts = tuple(replace(spec, at=where[id(cls)]) for cls, spec in registered)
        image = app.image_or_default().spec()
        manifest = build_manifest(name=target.name, tag=target.tag, image=image, autoscaling=app.autoscaling,
                                  code=code, remotes=remotes, contexts=contexts,
                                  secret_key=secret_key(settings.home()))
        class_refs = {obj: at for at, obj in code.class_objects}
        warnings = code.warnings + requirement_warnings(code.packages, image.pip, backend_kind)
        return Prepared(backend_kind, target.name, target.tag, target.ttl, image, code, remotes, contexts, manifest,
                        class_refs, warnings)

    def write_bundle(self, prepared: Prepared, path: Path) -> Bundle:
        return write_bundle(path, manifest=prepared.manifest, code=prepared.code, remotes=prepared.remotes,
                            contexts=prepared.contexts, image=prepared.image, backend=prepared.backend)

    def _cached_bundle(self, prepared: Prepared) -> tuple[Path, int, int]:
        """Bundles are content-addressed under the home, so an unchanged deploy writes nothing."""
        digest = hashlib.sha256(prepared.manifest.to_json().encode()).hexdigest()[:32]
        folder = settings.home() / "bundles"
        path, meta = folder / f"{digest}.tar.gz", folder / f"{digest}.json"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            files = _cached_file_count(meta) if path.is_file() else None
            if files is None:
                files = len(self.write_bundle(prepared, path).files)
                tmp = meta.with_suffix(".json.tmp")        # atomic: a full disk never leaves a half-written meta
                tmp.write_text(json.dumps({"files": files}))
                tmp.replace(meta)
            return path, path.stat().st_size, files
        except OSError as exc:
            raise BundleError(f"cannot write the bundle under {folder} ({exc.strerror or exc}); free some space in "
                              "VAST_MAGIC_HOME or point VAST_MAGIC_HOME at a writable folder. Nothing was deployed; "
                              "the previous version keeps serving.") from exc

    def _dry_bundle(self, prepared: Prepared) -> tuple[int, int]:
        folder = tempfile.mkdtemp(prefix="vast-magic-dry-")
        try:
            bundle = self.write_bundle(prepared, Path(folder) / "bundle.tar.gz")
            return Path(bundle.path).stat().st_size, len(bundle.files)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- deploying (background loop) --------------------------------------------
    def backend(self, kind: str | None = None):
        kind = kind or self.app.effective_backend
        home = str(settings.home())
        options = {} if kind != "vast" else {
            "api_key": self.app.api_key(), "transport": self.app.transport, "webserver_url": self.app.vast_url,
            "autoscaler_url": self.app.autoscaler_url, "poll_interval": settings.resolve("vast_poll_interval")}
        key = (kind, home, *sorted(options.items()))
        if key not in _BACKENDS:
            _BACKENDS[key] = get_backend(kind, home=home, **options)
        return _BACKENDS[key]

    async def deploy(self, prepared: Prepared, *, dry_run: bool, wait: bool, timeout: float | None,
                     emit: Callable[[Event], None]) -> DeployReport:
        started = time.perf_counter()
        backend = self.backend(prepared.backend)
        previous_json = await backend.previous_manifest_json(prepared.name, prepared.tag)
        previous = Manifest.from_json(previous_json) if previous_json else None
        if previous is None and self._last_manifest is not None and self._last_manifest.name == prepared.name:
            previous = self._last_manifest  # another tag of this deployment: the reasons say "tag: a -> b"
        decision = decide_tier(previous, prepared.manifest)
        if dry_run:
            size, files = await asyncio.to_thread(self._dry_bundle, prepared)
            emit(Packaging(files, size))
            for warning in prepared.warnings:
                emit(Warned(warning))
            emit(TierDecided(decision.tier, decision.reasons, tiers=decision.tiers))
            emit(Ready(None, time.perf_counter() - started, dry_run=True))
            return self._report(prepared, decision, size, files, dry_run=True)
        path, size, files = await asyncio.to_thread(self._cached_bundle, prepared)
        emit(Packaging(files, size))
        for warning in prepared.warnings:
            emit(Warned(warning))
        emit(TierDecided(decision.tier, decision.reasons, tiers=decision.tiers))
        result = await backend.apply(self._plan(prepared, decision, path, wait, timeout), _progress_events(emit))
        emit(Ready(result.endpoint, time.perf_counter() - started))
        self._last_manifest = prepared.manifest
        calls = self._calls.setdefault((prepared.name, prepared.tag), CallCounter())
        self._deployed = Deployed(backend, prepared.name, prepared.tag,
                                  frozenset(r.name for r in prepared.remotes), prepared.class_refs, calls)
        return self._report(prepared, decision, size, files, dry_run=False, result=result)

    def _plan(self, prepared: Prepared, decision: Any, path: Path, wait: bool, timeout: float | None) -> DeployPlan:
        image = prepared.image
        return DeployPlan(
            name=prepared.name, tag=prepared.tag, tier=decision.tier, reasons=decision.reasons,
            manifest=prepared.manifest, bundle_path=str(path), env=tuple(image.plain_env()),
            secrets=tuple((k, v.reveal()) for k, v in image.secret_env()),
            autoscaling=self.app.autoscaling.set_fields(),
            image=image, ttl=prepared.ttl, version_label=self.app.version_label, wait=wait,
            timeout=timeout if timeout is not None else settings.resolve("deploy_timeout"),
        )

    def _report(self, prepared: Prepared, decision: Any, size: int, files: int, *, dry_run: bool,
                result: Any = None) -> DeployReport:
        return DeployReport(
            tier=decision.tier, reasons=tuple(decision.reasons), fingerprint=prepared.manifest.fingerprint(),
            bundle_size=size, files=files, endpoint=result.endpoint if result else None,
            workers=tuple(result.workers) if result else (), benchmark=result.benchmark if result else None,
            dry_run=dry_run, backend_action=result.backend_action if result else None,
            workload_per_call=workload_per_call(self.app._remotes.values()),
        )

    # -- entry points ---------------------------------------------------------------
    def run_sync(self, target: DeployTarget, *, dry_run: bool, wait: bool, timeout: float | None) -> DeployReport:
        self.backend(target.backend)  # a missing Vast API key fails here, before any code is captured
        prepared = self.prepare(target, require_benchmark=True)
        progress = open_progress(prepared.name, workload_per_call=workload_per_call(self.app._remotes.values()))
        events: queue.SimpleQueue = queue.SimpleQueue()
        future = loop.submit(self.deploy(prepared, dry_run=dry_run, wait=wait, timeout=timeout, emit=events.put))
        future.add_done_callback(lambda _: events.put(_FINISHED))   # wakes the wait below at once
        try:
            while (event := _next_event(events)) is not _FINISHED:
                if event is not None:
                    progress.emit(event)
            report = future.result()
        except BaseException as exc:
            future.cancel()
            progress.close(exc)
            raise
        progress.close(None)
        return report

    async def run_async(self, target: DeployTarget, *, dry_run: bool, wait: bool, timeout: float | None) -> DeployReport:
        self.backend(target.backend)
        prepared = self.prepare(target, require_benchmark=True)
        progress = open_progress(prepared.name, workload_per_call=workload_per_call(self.app._remotes.values()))
        caller = asyncio.get_running_loop()
        emit = lambda event: caller.call_soon_threadsafe(progress.emit, event)  # noqa: E731
        try:
            report = await loop.run_on_loop(self.deploy(prepared, dry_run=dry_run, wait=wait, timeout=timeout, emit=emit))
        except BaseException as exc:
            await asyncio.sleep(0)  # let queued events render before the failure
            progress.close(exc)
            raise
        await asyncio.sleep(0)
        progress.close(None)
        return report

    def forget_ready(self, name: str, tag: str | None) -> None:
        """After a teardown of (name, tag) (every tag when None): calls must deploy again first."""
        deployed = self._deployed
        if deployed is not None and deployed.name == name and tag in (None, deployed.tag):
            self._deployed = None

    def call_stats(self, name: str, tag: str) -> CallStats | None:
        """This process's recent calls to (name, tag); None before the first deploy of it here."""
        counter = self._calls.get((name, tag))
        return counter.summary() if counter is not None else None

    async def call(self, fn: "RemoteFunction", args: tuple, kwargs: dict, cost: float, timeout: float | None) -> CallOutcome:
        deployed = self._deployed
        if deployed is None:
            raise ConfigError(f"{fn.__name__}() was called before {self.app!r} was deployed in this process; "
                              "run app.ensure_ready() (or %vast_deploy) first.")
        if fn.__name__ not in deployed.functions:
            raise ConfigError(f"{fn.__name__} is not part of the deployed version; run app.ensure_ready() again to deploy it.")
        opts = fn.options
        spec = CallSpec(name=deployed.name, tag=deployed.tag, function=fn.__name__,
                        timeout=timeout if timeout is not None else opts.timeout,
                        max_queue_time=opts.max_queue_time, retries=opts.retries, cost=cost,
                        trusted_types=self.app.trusted_types)
        started, ok = time.perf_counter(), False
        try:
            outcome = await deployed.backend.call(spec, args, kwargs, deployed.class_refs)
            ok = outcome.error is None
            return outcome
        finally:
            deployed.calls.record(started, ok)


_FINISHED = object()


def _next_event(events: queue.SimpleQueue) -> Any:
    """The next event, or None after a short wait, so Ctrl-C is seen while nothing happens."""
    try:
        return events.get(timeout=0.1)
    except queue.Empty:
        return None


def _cached_file_count(meta: Path) -> int | None:
    try:
        return int(json.loads(meta.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _progress_events(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """Keep what functions print during the benchmark out of the progress view (it is in the logs)."""
    def forward(event: Event) -> None:
        if not (isinstance(event, LogLine) and event.function):
            emit(event)
    return forward


def _check_one_benchmark(functions: list) -> None:
    with_benchmark = [fn.__name__ for fn in functions
                      if fn.options.benchmark_dataset is not None or fn.options.benchmark_generator is not None]
    if len(with_benchmark) != 1:
        found = ", ".join(with_benchmark) or "none"
        raise ConfigError(f"Exactly one remote function must define benchmark_dataset or benchmark_generator "
                          f"(found: {found}); workers measure their speed with it before they take calls.")


