"""The one way through: capture -> manifest -> tier -> bundle -> backend.apply.

It reads a ``DeploymentSnapshot``, the Deployment as a frozen value taken when
a command starts, never the live object, so what is captured, decided and
applied is one view of it; after a deploy it records what calls need in the
deployment's ``Caller``. CPU work (capture, manifest) runs in the calling
thread; backend I/O runs on the private background loop. Events produced on
the loop travel through a queue back to the calling thread, which renders
them, so nothing on the background loop ever writes to the notebook's output.
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
from typing import Any, Callable

from . import loop, settings
from .autoscaling import AutoscalingConfig
from .backends import get_backend
from .backends.base import DeployPlan
from .bundle import build_manifest, decide_tier, secret_key, write_bundle
from .bundle.manifest import Manifest
from .bundle.registry_spec import ContextSpec
from .caller import Caller, Deployed
from .capture import capture_code, requirement_warnings
from .display import open_progress
from .errors import BundleError, ConfigError
from .events import Event, Packaging, Ready, TierDecided, Warned
from .image import ImageSpec
from .remote import RemoteOptions, helper_functions, remote_spec
from .reports import Bundle, DeployReport, LogLine
from .runtime.benchmark import DEFAULT_WORKLOAD

__all__ = ["DeploymentSnapshot", "Prepared", "workload_per_call", "DeployPipeline"]

_BACKENDS: dict[tuple, Any] = {}


@dataclass(frozen=True)
class DeploymentSnapshot:
    """A Deployment as data, taken when one command starts: all that this module reads of it.

    The registered functions and classes are the live code objects (capture reads
    their source); everything else is a frozen value. ``api_key``, ``transport`` and
    the two URLs are set only for the Vast backend; the key is never printed."""

    label: str                    # the Deployment's repr, for messages
    name: str
    tag: str
    backend: str
    ttl: float | None
    version_label: str | None
    image: ImageSpec
    autoscaling: AutoscalingConfig
    functions: tuple[tuple[str, Callable, RemoteOptions], ...]    # (name, plain function, options), by name
    contexts: tuple[tuple[type, ContextSpec], ...]               # (class, registration), by class name
    trusted_types: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    transport: Any = field(default=None, repr=False, compare=False)
    vast_url: str | None = None
    autoscaler_url: str | None = None

    @property
    def helpers(self) -> tuple[Callable, ...]:
        """The functions the registrations name (benchmark generators, workload calculators): they ship too."""
        return tuple(helper for _, _, options in self.functions for helper in helper_functions(options))


@dataclass(frozen=True)
class Prepared:
    """Everything captured from the snapshot for one deploy."""

    snapshot: DeploymentSnapshot
    code: Any
    remotes: tuple
    contexts: tuple
    manifest: Any
    class_refs: dict = field(compare=False)
    warnings: tuple[str, ...] = ()


def workload_per_call(functions: tuple[tuple[str, Callable, RemoteOptions], ...]) -> float | None:
    """What one call weighs in the unit of perf (so perf / this = calls per second): the benchmark's default
    workload, unless the benchmarked function has a workload calculator (then calls weigh what it says)."""
    benchmarked = [options for _, _, options in functions
                   if options.benchmark_dataset is not None or options.benchmark_generator is not None]
    if len(benchmarked) != 1 or benchmarked[0].workload_calculator is not None:
        return None
    return DEFAULT_WORKLOAD


class DeployPipeline:
    """Deploys one Deployment's snapshots; what each deploy made callable goes to ``caller``."""

    def __init__(self, caller: Caller):
        self.caller = caller
        self._last_manifest = None

    # -- preparing (calling thread) ---------------------------------------------
    def prepare(self, snapshot: DeploymentSnapshot, require_benchmark: bool = False) -> Prepared:
        if not snapshot.functions:
            raise ConfigError(f"{snapshot.label} has no remote functions: decorate one with @app.remote "
                              "(or use %%vast_remote).")
        if require_benchmark:
            _check_one_benchmark(snapshot.functions)
        roots = [*(fn for _, fn, _ in snapshot.functions), *(cls for cls, _ in snapshot.contexts)]
        helpers = list(snapshot.helpers)
        forbidden = [snapshot.api_key] if snapshot.api_key else []
        code = capture_code(roots, helpers=helpers, backend=snapshot.backend, forbidden_strings=forbidden)
        where = {id(obj): at for obj, at in zip([*roots, *helpers], code.entries)}
        remotes = tuple(remote_spec(fn, options, lambda obj: where[id(obj)]) for _, fn, options in snapshot.functions)
        contexts = tuple(replace(spec, at=where[id(cls)]) for cls, spec in snapshot.contexts)
        image = snapshot.image
        manifest = build_manifest(name=snapshot.name, tag=snapshot.tag, image=image, autoscaling=snapshot.autoscaling,
                                  code=code, remotes=remotes, contexts=contexts,
                                  secret_key=secret_key(settings.home()))
        class_refs = {obj: at for at, obj in code.class_objects}
        warnings = code.warnings + requirement_warnings(code.packages, image.pip, snapshot.backend)
        return Prepared(snapshot, code, remotes, contexts, manifest, class_refs, warnings)

    def write_bundle(self, prepared: Prepared, path: Path) -> Bundle:
        snapshot = prepared.snapshot
        return write_bundle(path, manifest=prepared.manifest, code=prepared.code, remotes=prepared.remotes,
                            contexts=prepared.contexts, image=snapshot.image, backend=snapshot.backend)

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
    @staticmethod
    def backend(snapshot: DeploymentSnapshot):
        """The backend the snapshot names (one per backend, home and Vast connection in this process)."""
        kind, home = snapshot.backend, str(settings.home())
        options = {} if kind != "vast" else {
            "api_key": snapshot.api_key, "transport": snapshot.transport, "webserver_url": snapshot.vast_url,
            "autoscaler_url": snapshot.autoscaler_url, "poll_interval": settings.resolve("vast_poll_interval")}
        key = (kind, home, *sorted(options.items()))
        if key not in _BACKENDS:
            _BACKENDS[key] = get_backend(kind, home=home, **options)
        return _BACKENDS[key]

    async def deploy(self, prepared: Prepared, *, dry_run: bool, wait: bool, timeout: float | None,
                     emit: Callable[[Event], None]) -> DeployReport:
        started, snapshot = time.perf_counter(), prepared.snapshot
        backend = self.backend(snapshot)
        previous_json = await backend.previous_manifest_json(snapshot.name, snapshot.tag)
        previous = Manifest.from_json(previous_json) if previous_json else None
        if previous is None and self._last_manifest is not None and self._last_manifest.name == snapshot.name:
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
        self.caller.deploy_started()
        try:
            result = await backend.apply(self._plan(prepared, decision, path, wait, timeout), _progress_events(emit))
            emit(Ready(result.endpoint, time.perf_counter() - started))
            self._last_manifest = prepared.manifest
            self.caller.record(Deployed(backend, snapshot.name, snapshot.tag,
                                        frozenset(r.name for r in prepared.remotes), prepared.class_refs,
                                        snapshot.trusted_types, prepared.manifest.fingerprint().code))
        finally:
            self.caller.deploy_ended()
        return self._report(prepared, decision, size, files, dry_run=False, result=result)

    @staticmethod
    def _plan(prepared: Prepared, decision: Any, path: Path, wait: bool, timeout: float | None) -> DeployPlan:
        snapshot = prepared.snapshot
        image = snapshot.image
        return DeployPlan(
            name=snapshot.name, tag=snapshot.tag, tier=decision.tier, reasons=decision.reasons,
            manifest=prepared.manifest, bundle_path=str(path), env=tuple(image.plain_env()),
            secrets=tuple((k, v.reveal()) for k, v in image.secret_env()),
            autoscaling=snapshot.autoscaling.set_fields(),
            image=image, ttl=snapshot.ttl, version_label=snapshot.version_label, wait=wait,
            timeout=timeout if timeout is not None else settings.resolve("deploy_timeout"),
        )

    @staticmethod
    def _report(prepared: Prepared, decision: Any, size: int, files: int, *, dry_run: bool,
                result: Any = None) -> DeployReport:
        return DeployReport(
            tier=decision.tier, reasons=tuple(decision.reasons) + (tuple(result.notes) if result else ()),
            fingerprint=prepared.manifest.fingerprint(),
            bundle_size=size, files=files, endpoint=result.endpoint if result else None,
            workers=tuple(result.workers) if result else (), benchmark=result.benchmark if result else None,
            dry_run=dry_run, backend_action=result.backend_action if result else None,
            workload_per_call=workload_per_call(prepared.snapshot.functions),
        )

    # -- entry points ---------------------------------------------------------------
    def run_sync(self, snapshot: DeploymentSnapshot, *, dry_run: bool, wait: bool,
                 timeout: float | None) -> DeployReport:
        self.backend(snapshot)  # a missing Vast API key fails here, before any code is captured
        prepared = self.prepare(snapshot, require_benchmark=True)
        progress = open_progress(snapshot.name, workload_per_call=workload_per_call(snapshot.functions))
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

    def start(self, snapshot: DeploymentSnapshot, *, wait: bool, timeout: float | None,
              emit: Callable[[Event], None]) -> loop.Started:
        """Capture now, in the calling thread, then deploy on the background loop without waiting: watch mode
        redeploys from a task on the kernel's loop, which must stay free. ``emit`` gets the events on the
        background loop's thread; ``cancel()`` on the result stops the deploy and waits until it has ended."""
        self.backend(snapshot)
        prepared = self.prepare(snapshot, require_benchmark=True)
        return loop.start(self.deploy(prepared, dry_run=False, wait=wait, timeout=timeout, emit=emit))

    async def run_async(self, snapshot: DeploymentSnapshot, *, dry_run: bool, wait: bool,
                        timeout: float | None) -> DeployReport:
        self.backend(snapshot)
        prepared = self.prepare(snapshot, require_benchmark=True)
        progress = open_progress(snapshot.name, workload_per_call=workload_per_call(snapshot.functions))
        calling_loop = asyncio.get_running_loop()
        emit = lambda event: calling_loop.call_soon_threadsafe(progress.emit, event)  # noqa: E731
        try:
            report = await loop.run_on_loop(self.deploy(prepared, dry_run=dry_run, wait=wait, timeout=timeout, emit=emit))
        except BaseException as exc:
            await asyncio.sleep(0)  # let queued events render before the failure
            progress.close(exc)
            raise
        await asyncio.sleep(0)
        progress.close(None)
        return report


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


def _check_one_benchmark(functions: tuple) -> None:
    with_benchmark = [name for name, _, options in functions
                      if options.benchmark_dataset is not None or options.benchmark_generator is not None]
    if len(with_benchmark) != 1:
        found = ", ".join(with_benchmark) or "none"
        raise ConfigError(f"Exactly one remote function must define benchmark_dataset or benchmark_generator "
                          f"(found: {found}); workers measure their speed with it before they take calls.")


