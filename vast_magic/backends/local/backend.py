"""``LocalBackend``: the backend protocol (backends/base.py) on the embedded local engine.

Deploy, status, logs and teardown are requests to the daemon; calls go
straight to workers through ``pool`` (the daemon only says which workers are
ready). The engine connection lives on vast_magic's background loop, and so
does everything that talks to it; a call may run on any loop (``any_loop``):
it uses that loop's own worker connections and hops to the background loop
only to ask the engine (the first call, or when no route is known). A dry run
(``previous_manifest_json``) reads the store read-only and never starts the daemon.

A call names the version it expects (``CallSpec.version``): it is routed only
to workers of that version, and a worker of another one (a route that went
stale during a rollout) answers without running it; the call then routes
again, up to ``STALE_RETRIES`` times, each a ``Retry`` event, like on Vast.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import site
import sys
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ... import events, settings
from ...errors import BackendError, CallTimeoutError, DeployError, EngineUnavailableError, WorkerLostError
from ...reports import DeploymentStatus, LogLine, WorkerInfo
from ...runtime import deadlines, shm, wire
from ..base import ApplyResult, CallOutcome, CallSpec, DeployPlan, outcome_from_response, unpicklable_arguments
from ..heartbeat import HeartbeatScheduler
from ..retry import IMMEDIATE, Retryable
from . import map_calls, spawned_client, streams
from .engine_client import EngineClient, on_engine_loop as _on_engine_loop
from .launcher import has_deployments, load_token, running_engine
from .pool import DeploymentPool, Route
from .logfiles import deployment_tail, logged_deployments
from .store import read_only, read_previous_manifest_json
from .venvs import pip_args_from_env

__all__ = ["STALE_RETRIES", "not_applied_locally", "LocalBackend", "pickled_call"]

#: re-routes of a call that reached a worker of another version (each one a Retry event)
STALE_RETRIES = 30


class _Stale(Retryable):
    """The worker runs another version than the call expects; it ran nothing."""

_EVENT_TYPES = {"WorkerState": events.WorkerState, "BenchmarkScored": events.BenchmarkScored, "LogLine": LogLine}


def not_applied_locally(image: Any) -> tuple[str, ...]:
    """What of the ImageSpec is ignored locally, so status says so instead of dropping it silently."""
    if image is None:              # a plan without an image (engine-level callers): nothing to report
        return ()
    found = [f"image {image.from_image} (local workers run this machine's Python)"]
    if image.apt:
        found.append("apt packages: " + ", ".join(image.apt))
    if image.python_mode != "default":
        found.append(f"python mode {image.python_mode}")
    if image.ports:
        found.append("published ports: " + ", ".join(f"{number}/{kind}" for number, kind in image.ports))
    if image.search:
        found.append(f"GPU filters: {image.search}")
    if image.docker_login:
        found.append("docker login")
    return tuple(found)


class LocalBackend:
    kind = "local"
    any_loop = True            # call() may be awaited on the caller's own loop (see the module docstring)

    def __init__(self, home: str | os.PathLike | None = None, **_: Any):
        self.home = Path(home) if home is not None else settings.home()
        self.engine = EngineClient(self.home)
        self.pools: dict[tuple[str, str], DeploymentPool] = {}
        self.heartbeats = HeartbeatScheduler(self._beat)

    # -- deploy ---------------------------------------------------------------------------
    async def previous_manifest_json(self, name: str, tag: str) -> str | None:
        return await asyncio.to_thread(read_previous_manifest_json, self.home, name, tag)

    async def apply(self, plan: DeployPlan, emit: events.EventSink) -> ApplyResult:
        not_applied = not_applied_locally(plan.image)

        def on_event(event: tuple) -> None:
            kind, data = event
            if kind in _EVENT_TYPES:
                emit(_EVENT_TYPES[kind](**data))

        request = dict(
            name=plan.name, tag=plan.tag, tier=plan.tier, reasons=list(plan.reasons), manifest=plan.manifest.to_json(),
            version=plan.manifest.fingerprint().code, bundle_path=str(Path(plan.bundle_path).absolute()),
            env=[list(p) for p in plan.env], secrets=[list(p) for p in plan.secrets], autoscaling=dict(plan.autoscaling),
            ttl=plan.ttl, python=sys.executable, python_version=sys.version, site_packages=_site_packages(),
            pip_args=pip_args_from_env(), not_applied=list(not_applied), wait=plan.wait, timeout=plan.timeout)
        try:
            result = await self.engine.request("apply", on_event=on_event, answer_timeout=plan.timeout + 120, **request)
        except DeployError as exc:
            emit(events.Failed(str(exc)))
            raise
        except asyncio.CancelledError:
            await self._cancel_apply(plan.name, plan.tag)
            raise
        if plan.ttl:
            self.heartbeats.start((plan.name, plan.tag), plan.ttl)
        workers = tuple(WorkerInfo.from_wire(w) for w in result["workers"])
        return ApplyResult(endpoint=result["endpoint"], workers=workers,
                           benchmark=result["benchmark"], backend_action=None, not_applied=not_applied)

    async def _cancel_apply(self, name: str, tag: str) -> None:
        """Tell the engine we stopped waiting, so it does not keep rolling out a version nobody awaits."""
        try:
            await asyncio.wait_for(self.engine.request("cancel_apply", autostart=False, name=name, tag=tag), 15)
        except (asyncio.TimeoutError, BackendError, ConnectionError, OSError):
            pass

    async def _beat(self, key: tuple[str, str]) -> bool:
        """Tell the engine a ttl deployment is still wanted by this process; False once the engine dropped it."""
        name, tag = key
        return bool(await self.engine.request("heartbeat", autostart=False, answer_timeout=10, name=name, tag=tag))

    # -- calls ------------------------------------------------------------------------------
    async def call(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> CallOutcome:
        spawned_client.check_timeout(spec)
        first: _Stale | None = None
        if not spec.retries:                       # nothing to retry but a rollout: the policy only adds its cost
            try:
                return await self._call_once(spec, args, kwargs, classes or {})
            except _Stale as stale:
                first = stale                      # the policy counts it as its first attempt and routes again
        retries: list[events.Retry] = []
        budget = {"lost": spec.retries, "stale": STALE_RETRIES}
        attempts_shown = 1 + spec.retries            # stale re-routes add one each

        async def attempt() -> CallOutcome:
            nonlocal first
            if first is not None:
                failure, first = first, None
                raise failure
            try:
                return await self._call_once(spec, args, kwargs, classes or {})
            except WorkerLostError as exc:        # the engine routes the next attempt to another worker
                raise Retryable(exc, str(exc).split(";")[0]) from None

        def allow(failure: Retryable) -> bool:
            nonlocal attempts_shown
            kind = "stale" if isinstance(failure, _Stale) else "lost"
            budget[kind] -= 1
            attempts_shown += kind == "stale" and budget[kind] >= 0
            return budget[kind] >= 0

        outcome = await IMMEDIATE.run(attempt, what=spec.function, emit=retries.append,
                                      attempts=lambda: attempts_shown, allow=allow)
        return dataclasses.replace(outcome, retries=tuple(retries)) if retries else outcome

    async def _pool(self, name: str, tag: str) -> DeploymentPool:
        key = (name, tag)
        pool = self.pools.get(key)
        if pool is None:
            pool = DeploymentPool(load_token(self.home), _segments(self.home))
            self.pools[key] = pool             # registered before any await: concurrent first calls share it
            self.engine.route_handlers[key] = pool.set_routes
            try:
                autostart = running_engine(self.home) is None and await asyncio.to_thread(has_deployments, self.home)
                pool.set_routes(await self.engine.request("subscribe", autostart=autostart, name=name, tag=tag))
            except BaseException:
                self.pools.pop(key, None)
                self.engine.route_handlers.pop(key, None)
                raise
        return pool

    async def _route(self, pool: DeploymentPool, spec: CallSpec, deadline: float) -> Route:
        loop = asyncio.get_running_loop()
        route = pool.choose(spec.cost, spec.max_queue_time, spec.version)
        while route is None:
            left = deadline - loop.time()
            if left <= 0:
                of_version = " running the version ensure_ready() deployed" if spec.version and pool.routes else ""
                raise CallTimeoutError(f"no worker of {spec.name}/{spec.tag}{of_version} became ready within the "
                                       f"{spec.timeout:g}s timeout of {spec.function}; see app.status().")
            routes = await _on_engine_loop(self.engine.request("route", name=spec.name, tag=spec.tag,
                                                               wait=min(left, 5.0), cost=spec.cost, version=spec.version,
                                                               answer_timeout=left + 10))
            await _on_engine_loop(_set_routes(pool, routes))
            route = pool.choose(spec.cost, spec.max_queue_time, spec.version)
        return route

    async def _connect(self, pool: DeploymentPool, spec: CallSpec, deadline: float):
        """A route and an open connection. A worker that cannot be reached never saw the call, so another
        route is tried (routes can be stale after the engine restarted): never an error for this alone."""
        while True:
            route = await self._route(pool, spec, deadline)
            try:
                return route, await pool.connection(route)
            except WorkerLostError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise CallTimeoutError(f"no worker of {spec.name}/{spec.tag} could be reached within the "
                                           f"{spec.timeout:g}s timeout of {spec.function}; see app.status().") from None
                await asyncio.sleep(0.05)          # pool.connection dropped the dead route; ask again

    async def _call_once(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> CallOutcome:
        response = await self._exchange(spec, spec.timeout, classes,
                                        lambda call_id: pickled_call(spec, call_id, args, kwargs, classes))
        return outcome_from_response(response, spec.function)

    async def call_many(self, spec: CallSpec, calls: list, classes: Any, done: Callable[[int, int], None]) -> list:
        """``f.map``'s calls in chunks (``map_calls.call_many``), results in input order."""
        return await map_calls.call_many(self, spec, calls, classes, done)

    async def _exchange(self, spec: CallSpec, timeout: float, classes: Any, pickle_request) -> dict:
        """Send one request (``pickle_request(call_id)``) to the best worker and wait for its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pool = self.pools.get((spec.name, spec.tag))
        if pool is None:
            pool = await _on_engine_loop(self._pool(spec.name, spec.tag))
        call_id = pool.next_id()
        pickled = pickle_request(call_id)
        route = pool.choose(spec.cost, spec.max_queue_time, spec.version)
        conn = pool.open_connection(route, loop) if route is not None else None
        if conn is None:                           # no route known yet, or no connection on this loop yet
            route, conn = await self._connect(pool, spec, deadline)
        conn.inflight += spec.cost
        limit = None
        try:
            future = await conn.call(call_id, pickled, classes)
            # one timer per loop for every call's limit (runtime/deadlines.py): no task, no waiter, no heap push
            limit = deadlines.on_loop(loop).at(deadline + 1.0, functools.partial(_expire, future))
            response = await future
        except asyncio.TimeoutError:
            conn.pending.pop(call_id, None)
            raise CallTimeoutError(f"{spec.function} did not finish within its timeout of {spec.timeout:g}s; "
                                   "pass a larger timeout= to @app.remote or check app.logs().") from None
        except WorkerLostError as exc:
            pool.drop(route.worker)
            raise WorkerLostError(f"{exc}; the worker died while running {spec.function}. The engine replaces it; "
                                  "retry, or set retries=N on @app.remote. Its last log lines are in .log_tail.",
                                  await _on_engine_loop(self._log_tail(route.worker))) from None
        finally:
            conn.inflight -= spec.cost
            if limit is not None:
                deadlines.on_loop(loop).remove(limit)
        if response.get("stale"):
            other = str(response.get("version"))
            pool.mark_version(route.worker, other)
            raise _Stale(CallTimeoutError(
                f"{spec.function}: the workers of {spec.name}/{spec.tag} still ran version {other[:12]}, not "
                f"{str(spec.version)[:12]}, which ensure_ready() deployed; the rollout has not finished. Retry later "
                "or check app.status()."), f"worker runs version {other[:12]}, expected {str(spec.version)[:12]}")
        return response

    # -- streams (backends/local/streams.py): on the background loop, where LoopIterator steps them --------
    def stream(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> AsyncIterator[tuple]:
        """A remote generator's items as ``("items", [x, ...])`` while the worker runs, then
        ``("end", CallOutcome)``; see ``streams.stream`` (a stale worker's refusal routes it again)."""
        spawned_client.check_timeout(spec)
        return streams.stream(self, spec, lambda call_id: pickled_call(
            spec, call_id, args, kwargs, classes or {}, op="stream", window=streams.STREAM_WINDOW), classes or {},
            STALE_RETRIES)

    # -- spawned calls (kept by the engine: spawned.py; this side: spawned_client.py) ---------------
    async def spawn(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> str:
        """Hand the call to the engine, which runs it on a worker of ``spec.version`` and keeps its answer;
        returns the call's id."""
        spawned_client.check_timeout(spec)
        main, buffers = pickled_call(spec, spawned_client.SPAWNED_CALL_ID, args, kwargs, classes or {})
        return await _on_engine_loop(spawned_client.spawn(self.engine, spec, (main, buffers)))

    async def call_result(self, call_id: str, wait: float, classes: Any) -> CallOutcome | None:
        """The outcome of a spawned call once it finished (None before), waiting up to ``wait`` s for it."""
        return await _on_engine_loop(spawned_client.call_result(self.engine, call_id, wait, classes or {}))

    async def call_function(self, call_id: str) -> str:
        """The function a spawned call runs; ConfigError when the engine does not keep that call."""
        return await _on_engine_loop(spawned_client.call_function(self.engine, call_id))

    async def cancel_call(self, call_id: str) -> str:
        """``never_ran``, ``requested`` (the answer tells the rest) or ``finished``."""
        return await _on_engine_loop(self.engine.request("cancel_call", autostart=False, call=call_id,
                                                         answer_timeout=30))

    async def _log_tail(self, worker: str) -> tuple[str, ...]:
        try:
            lines = await self.engine.request("worker_log", autostart=False, answer_timeout=10, worker=worker, tail=20, settle=0.3)
        except Exception:
            return ()
        return tuple(lines)

    # -- status, logs, teardown -----------------------------------------------------------------
    async def _engine_request(self, op: str, fallback: Any, **fields: Any) -> Any:
        """Ask the engine; start it only when deployments are recorded (status must not start one for nothing)."""
        autostart = await asyncio.to_thread(has_deployments, self.home)
        try:
            return await self.engine.request(op, autostart=autostart, answer_timeout=60, **fields)
        except EngineUnavailableError:
            return fallback

    async def status(self, name: str, tag: str) -> DeploymentStatus:
        stopped = {"name": name, "tag": tag, "endpoint": None, "state": "stopped", "workers": [], "not_applied_locally": []}
        return _status(await self._engine_request("status", stopped, name=name, tag=tag))

    async def list_deployments(self) -> list[DeploymentStatus]:
        return [_status(s) for s in await self._engine_request("list", [])]

    async def known_deployments(self) -> list[tuple[str, str]]:
        """Recorded deployments, those the running engine holds (a first deploy still starting), and those
        whose worker logs are still on disk (so the logs of a torn-down deployment can be read); never
        starts the engine."""
        known = {(r.name, r.tag) for r in await asyncio.to_thread(read_only, self.home, "deployments")}
        known |= set(await asyncio.to_thread(logged_deployments, self.home))
        try:
            listed = await self.engine.request("list", autostart=False, answer_timeout=60)
        except EngineUnavailableError:
            listed = []
        known |= {(s["name"], s["tag"]) for s in listed}
        return sorted(known)

    async def logs(self, name: str, tag: str, function: str | None, tail: int) -> list[LogLine]:
        """Read by the engine (the writer: it never reads mid-rotation); when none runs, nothing rotates and
        the files are read here, so logs outlive the engine and a teardown."""
        try:
            lines = await self.engine.request("logs", autostart=False, answer_timeout=60, name=name, tag=tag,
                                              function=function, tail=tail)
        except EngineUnavailableError:
            return await asyncio.to_thread(deployment_tail, self.home, name, tag, tail, function)
        return [LogLine(**line) for line in lines]

    async def teardown(self, name: str, tag: str | None) -> None:
        await self._engine_request("teardown", 0, name=name, tag=tag)
        for key in [k for k in self.pools if k[0] == name and (tag is None or k[1] == tag)]:
            self.pools.pop(key).close()
            self.engine.route_handlers.pop(key, None)
        for key in [k for k in self.heartbeats.tasks if k[0] == name and (tag is None or k[1] == tag)]:
            self.heartbeats.stop(key)

    def close(self) -> None:
        """Drop connections and stop heartbeating (ttl deployments then expire on the engine)."""
        self.heartbeats.stop_all()
        for pool in self.pools.values():
            pool.close()
        self.engine.close()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


async def _set_routes(pool: DeploymentPool, routes: list | None) -> None:
    pool.set_routes(routes)                # on the background loop: it owns the routes' events


def pickled_call(spec: CallSpec, call_id: int, args: tuple, kwargs: dict, classes: Any, op: str = "call",
                 **extra: Any) -> tuple[bytes, list]:
    """The call request pickled for the wire: the one step where the caller's arguments can be at fault.

    Their CaptureError is raised here, chained to the pickling error, before any worker is
    chosen; what fails later (the connection, the worker, a retry) is a BackendError.
    """
    args, kwargs = tuple(args), dict(kwargs)
    request = {"op": op, "id": call_id, "fn": spec.function, "args": args, "kwargs": kwargs,
               "cost": float(spec.cost), "timeout": float(spec.timeout), "version": spec.version, **extra}
    try:
        return wire.dumps(request, classes, unchecked=(args, kwargs, extra) if extra else (args, kwargs))
    except Exception as exc:
        raise unpicklable_arguments(spec.function, exc) from exc


def _status(data: dict) -> DeploymentStatus:
    return DeploymentStatus(name=data["name"], tag=data["tag"], endpoint=data["endpoint"], state=data["state"],
                            workers=tuple(WorkerInfo.from_wire(w) for w in data["workers"]),
                            not_applied_locally=tuple(data["not_applied_locally"]))


def _site_packages() -> list[str]:
    """Where the client's packages live, for the venv's .pth (site dirs plus the user site)."""
    paths = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        paths.append(user)
    return paths


def _segments(home: Path) -> shm.Segments | None:
    """Workers of the local engine share this machine's /dev/shm: big buffers skip the socket, unless its
    folder is not private (then a warning says why and how to fix it, and the bytes go inline)."""
    directory = shm.segment_dir(home)
    if directory is None:
        return None
    try:
        return shm.Segments.open(directory)
    except OSError as exc:
        warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
        return None
