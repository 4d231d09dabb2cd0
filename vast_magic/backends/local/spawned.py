"""Spawned calls: the engine runs a call for a client and keeps its answer, so the call's id finds it again
from another cell or another process (``f.spawn``, ``Deployment.get_call``).

The engine never unpickles user values: the client's request and the worker's answer travel as opaque
frames (``wire.dumps`` output). Each call gets a connection of its own to its worker, so the first frame
back is its answer, and a cancel (``{"op": "cancel"}`` on that connection) cannot hit another call.

A call carries the version its caller deployed: it runs only on a worker of that version. When a worker
still answers that it runs another one (a small frame of plain data, read here by an unpickler that resolves
no class at all, so no user value is loaded), nothing ran and the call goes to another worker, up to
``STALE_RETRIES`` times.

What is kept, in the engine's memory only (an engine restart loses it): every unfinished call (at most
``MAX_UNFINISHED``), and each finished one for ``KEEP_SECONDS`` after it finished, the newest ``KEEP_CALLS``
of them, and at most ``KEEP_BYTES`` of answers (older ones are dropped first).
"""
from __future__ import annotations

import asyncio
import io
import pickle
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import CallTimeoutError, ConfigError, OverloadedError, WorkerLostError
from ...runtime import framing
from .channel import Channel, connect

__all__ = ["KEEP_SECONDS", "KEEP_CALLS", "KEEP_BYTES", "MAX_UNFINISHED", "STALE_RETRIES", "SpawnedCall", "SpawnedCalls",
           "wait_for_routes", "least_loaded", "stale_version"]

KEEP_SECONDS = 3600.0
KEEP_CALLS = 1000
MAX_UNFINISHED = 10_000
STALE_RETRIES = 30          # like a plain call's re-routes after a stale worker (backends/local/backend.py)
KEEP_BYTES = 1 << 30
_ANSWER_GRACE = 5.0         # beyond the call's timeout: the worker's own timeout answers first


@dataclass(eq=False)
class SpawnedCall:
    id: str
    key: tuple[str, str]
    function: str
    call_id: int                                # the id inside the pickled request (and the worker's answer)
    request: tuple[bytes, list]                 # the request as the client pickled it
    timeout: float
    cost: float
    version: str | None = None                  # the version the caller deployed: only its workers run it
    state: str = "queued"                       # queued | running | done
    frame: tuple[bytes, list] | None = None     # the worker's answer, as it sent it
    error: dict | None = None                   # {"kind", "message"} when no answer came
    finished_at: float | None = None
    channel: Channel | None = None
    task: asyncio.Task | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, frame: tuple[bytes, list] | None = None, error: dict | None = None) -> None:
        if self.state == "done":
            return
        self.state, self.frame, self.error, self.finished_at = "done", frame, error, time.time()
        if self.channel is not None:
            self.channel.close()
        self.settled.set()

    @property
    def size(self) -> int:
        """Bytes of the kept answer."""
        return 0 if self.frame is None else len(self.frame[0]) + sum(len(b) for b in self.frame[1])

    def answer(self) -> dict:
        """What ``call_result`` sends the client (plain data; the frame stays pickled)."""
        frame = [self.frame[0], list(self.frame[1])] if self.frame is not None else None
        return {"state": self.state, "frame": frame, "error": self.error, "function": self.function}


class SpawnedCalls:
    """The engine's spawned calls by id, with the retention rule of the module docstring."""

    def __init__(self, keep_seconds: float = KEEP_SECONDS, keep_calls: int = KEEP_CALLS,
                 max_unfinished: int = MAX_UNFINISHED, keep_bytes: int = KEEP_BYTES):
        self.keep_seconds, self.keep_calls, self.max_unfinished = keep_seconds, keep_calls, max_unfinished
        self.keep_bytes = keep_bytes
        self.calls: dict[str, SpawnedCall] = {}

    def add(self, key: tuple[str, str], req: dict) -> SpawnedCall:
        self.prune()
        if sum(call.state != "done" for call in self.calls.values()) >= self.max_unfinished:
            raise OverloadedError(f"the local engine already holds {self.max_unfinished} unfinished spawned calls; "
                                  "wait for some (handle.result()) before spawning more.")
        main, buffers = req["request"]
        call = SpawnedCall(id=f"call-{secrets.token_hex(8)}", key=key, function=str(req["function"]),
                           call_id=int(req.get("call_id") or 0), request=(bytes(main), [bytes(b) for b in buffers]),
                           timeout=float(req["timeout"]), cost=float(req.get("cost") or 0.0),
                           version=str(req["version"]) if req.get("version") else None)
        self.calls[call.id] = call
        return call

    def get(self, call_id: Any) -> SpawnedCall:
        self.prune()
        call = self.calls.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            raise ConfigError(f"the local engine has no call {call_id!r}: it keeps a finished call's result for "
                              f"{self.keep_seconds / 3600:g} h (the newest {self.keep_calls}, up to "
                              f"{self.keep_bytes / (1 << 20):g} MiB of results), and none after it restarted. "
                              "Spawn the call again.")
        return call

    def prune(self, now: float | None = None) -> None:
        """Drop finished calls older than ``keep_seconds``, then the oldest beyond ``keep_calls`` or
        ``keep_bytes`` of answers."""
        now = time.time() if now is None else now
        finished = sorted((c for c in self.calls.values() if c.finished_at is not None), key=lambda c: c.finished_at)
        fresh = [c for c in finished if now - c.finished_at <= self.keep_seconds]
        kept, total = [], 0
        for call in reversed(fresh[max(0, len(fresh) - self.keep_calls):]):      # newest first
            total += call.size
            if total > self.keep_bytes:
                break
            kept.append(call)
        keep = {id(call) for call in kept}
        for call in finished:
            if id(call) not in keep:
                self.calls.pop(call.id, None)


async def wait_for_routes(engine, dep, deadline: float, cost: float, version: str | None = None) -> list:
    """The ready workers of ``dep``; when there are none (of ``version``, when given), wait (counted as
    queued demand, so the autoscaler starts one) until ``deadline`` (``time.monotonic``)."""
    def usable() -> bool:
        return any(not version or route[3] == version for route in dep.routes())

    if usable() or time.monotonic() >= deadline:
        return dep.routes()
    dep.waiting, dep.waiting_workload = dep.waiting + 1, dep.waiting_workload + cost
    if dep.committed and not dep.rollout and not any(w.role == "serving" for w in dep.workers.values()):
        engine.scale_in_background(dep)   # scaled to zero: start one now, not at the next look
    try:
        while not usable() and engine.deployments.get(dep.key) is dep:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(dep.routes_changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass
    finally:
        dep.waiting, dep.waiting_workload = dep.waiting - 1, dep.waiting_workload - cost
    return dep.routes()


def least_loaded(dep, routes: list) -> tuple:
    """The route whose worker has the least in-flight workload per unit of perf."""
    def wait(route: tuple) -> float:
        worker = dep.workers.get(route[0])
        load = (worker.current_load() or 0.0) if worker is not None else 0.0
        return load / max(route[2] or 1.0, 1e-9)
    return min(routes, key=wait)


async def run(engine, call: SpawnedCall) -> None:
    """Run ``call`` on a ready worker of its deployment and keep its answer; never raises."""
    deadline = time.monotonic() + call.timeout
    try:
        for _ in range(1 + STALE_RETRIES):
            dep = engine.deployments.get(call.key)
            routes = await wait_for_routes(engine, dep, deadline, call.cost, call.version) if dep is not None else []
            routes = [route for route in routes if not call.version or route[3] == call.version]
            if engine.deployments.get(call.key) is not dep or dep is None:
                return call.finish(error=_error(ConfigError, f"{call.key[0]}/{call.key[1]} was torn down before "
                                                             f"{call.function} ran; it never ran."))
            if not routes:
                return call.finish(error=_error(CallTimeoutError, f"no worker of {call.key[0]}/{call.key[1]} "
                                                                  f"running the deployed version became ready within "
                                                                  f"the {call.timeout:g}s timeout of {call.function}; "
                                                                  "it never ran. See app.status()."))
            if call.state == "done":         # cancelled while it waited for a worker
                return
            worker, port = least_loaded(dep, routes)[:2]
            if not await _exchange(call, worker, port, engine.token, deadline):
                return
            call.state = "queued"            # the worker runs another version: it ran nothing, route again
        call.finish(error=_error(CallTimeoutError, f"{call.function}: the workers of {call.key[0]}/{call.key[1]} "
                                                   "still ran another version than the one deployed; it never ran. "
                                                   "Spawn it again once app.status() shows the rollout done."))
    except asyncio.CancelledError:
        call.finish(error=_error(ConfigError, "the engine stopped before the call finished."))
        raise
    except Exception as exc:           # a bug here must still settle the call
        call.finish(error=_error(WorkerLostError, f"the engine could not run {call.function}: "
                                                  f"{type(exc).__name__}: {exc}"))


async def _exchange(call: SpawnedCall, worker: str, port: int, token: str, deadline: float) -> bool:
    """Send the call to one worker and keep its answer; True when the worker said it runs another version
    (nothing ran: the caller routes it again)."""
    try:
        channel = await connect(port, token, timeout=5.0)
    except (OSError, asyncio.TimeoutError) as exc:
        return call.finish(error=_error(WorkerLostError, f"cannot reach worker {worker} ({exc}); "
                                                         f"{call.function} never ran. Spawn it again."))
    if call.state == "done":           # cancelled meanwhile (wait_for may swallow the task's cancellation)
        channel.close()
        return
    call.channel, call.state = channel, "running"
    try:
        await call.channel.send_pickled(*call.request)
        left = max(0.0, deadline - time.monotonic()) + _ANSWER_GRACE
        main, buffers = await asyncio.wait_for(framing.read_frame(call.channel.reader), left)
    except asyncio.TimeoutError:
        return call.finish(error=_error(CallTimeoutError, f"{call.function} did not finish within its timeout of "
                                                          f"{call.timeout:g}s; pass a larger timeout= to "
                                                          "@app.remote or check app.logs()."))
    except (OSError, asyncio.IncompleteReadError) as exc:
        return call.finish(error=_error(WorkerLostError, f"worker {worker} closed the connection while running "
                                                         f"{call.function} ({type(exc).__name__}); see app.logs()."))
    frame = (bytes(main), [bytes(b) for b in buffers])
    if stale_version(frame) is not None and call.state == "running":
        call.channel.close()
        call.channel = None
        return True
    call.request = (b"", [])                 # answered: not kept beside the answer
    call.finish(frame=frame)
    return False


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError("a stale answer holds plain data only")


def stale_version(frame: tuple[bytes, list]) -> str | None:
    """The version a worker named when it refused a call for carrying another one, else None. Only a small
    frame of plain data is read, with an unpickler that resolves no class: no user value is ever loaded."""
    main, buffers = frame
    if buffers or len(main) > 1024:
        return None
    try:
        answer = _NoClasses(io.BytesIO(main)).load()
    except Exception:
        return None
    if isinstance(answer, dict) and answer.get("stale") is True:
        return str(answer.get("version"))
    return None


async def cancel(call: SpawnedCall) -> str:
    """Ask to cancel ``call``: ``never_ran`` when it was still queued here, ``requested`` when its worker was
    asked (its answer then says what happened), ``finished`` when it had already finished."""
    if call.state == "done":
        return "finished"
    if call.state == "queued":
        if call.task is not None:
            call.task.cancel()
        call.finish(error={"kind": "CallCancelledError", "message": f"{call.function} was cancelled before it "
                                                                    "started: it never ran", "outcome": "never_ran"})
        return "never_ran"
    try:
        await call.channel.send({"op": "cancel", "id": call.call_id})
    except (ConnectionError, OSError):
        pass                           # the connection just closed: the answer (or its loss) is recorded
    return "requested"


def _error(kind: type, message: str) -> dict:
    return {"kind": kind.__name__, "message": message}
