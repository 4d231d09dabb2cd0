"""Client-side connections to workers and the choice of worker for each call.

The engine says which workers are ready (routes, pushed whenever they change);
calls then go straight to a worker over a persistent, authenticated,
multiplexed connection: the engine is never in the data path. A call goes to
the worker with the least in-flight workload per unit of perf (workload
includes the new call); when even that worker's queue would exceed the
function's ``max_queue_time``, the call fails fast with ``OverloadedError``.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Callable, Mapping

from ...errors import OverloadedError, WorkerLostError
from ...runtime import shm
from .channel import Channel, connect

__all__ = ["Route", "WorkerConnection", "DeploymentPool"]


@dataclass(frozen=True)
class Route:
    worker: str
    port: int
    perf: float
    version: str


class WorkerConnection:
    """One persistent connection to one worker; responses matched to calls by id."""

    def __init__(self, route: Route, channel: Channel, on_lost: Callable[["WorkerConnection"], None] | None = None):
        self.route, self.channel = route, channel
        self._on_lost = on_lost
        self.inflight = 0.0
        self.pending: dict[int, asyncio.Future] = {}
        self.alive = True
        self.retired = False
        self._reader = asyncio.ensure_future(self._read())

    def retire(self) -> None:
        """The worker left the routes: close once its in-flight calls have answered."""
        self.retired = True
        if not self.pending:
            self.close()

    def close(self) -> None:
        self.alive = False
        self.channel.close()
        if not self._reader.done():
            self._reader.cancel()

    async def _read(self) -> None:
        try:
            while True:
                message = await self.channel.recv()
                future = self.pending.pop(message.get("id"), None) if isinstance(message, dict) else None
                if future is not None and not future.done():
                    future.set_result(message)
                if self.retired and not self.pending:
                    return
        except Exception:
            pass
        finally:
            self.alive = False
            self.channel.close()
            if not self.retired and self._on_lost is not None:
                self._on_lost(self)               # the worker is gone: its route goes at once
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(WorkerLostError(f"worker {self.route.worker} closed the connection mid-call"))
            self.pending.clear()

    async def call(self, call_id: int, pickled: tuple[bytes, list], class_refs: Mapping[type, str]) -> asyncio.Future:
        """Send call ``call_id`` (its request as ``wire.dumps`` made it); the future resolves to the response.

        The arguments were pickled before, so any failure here is the connection's (WorkerLostError),
        never the caller's: the reader may close the connection while this call waits for its turn.
        """
        if not self.alive:
            raise WorkerLostError(f"worker {self.route.worker} is gone")
        future = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self.channel.resolve = {name: cls for cls, name in class_refs.items()}
        try:
            await self.channel.send_pickled(*pickled)
        except BaseException as exc:
            self._abandon(call_id, future)
            if isinstance(exc, Exception):
                raise WorkerLostError(f"worker {self.route.worker} is unreachable ({exc!r})") from exc
            raise
        return future

    def _abandon(self, call_id: int, future: asyncio.Future) -> None:
        """Forget a call that was not sent. The reader may already have failed its future when the
        connection closed: that exception is superseded by the caller's, so mark it seen."""
        self.pending.pop(call_id, None)
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


class DeploymentPool:
    """The routes and worker connections of one (name, tag) in this process."""

    def __init__(self, token: str, segments: shm.Segments | None = None):
        self.token = token
        self.segments = segments
        self.routes: dict[str, Route] = {}
        self.connections: dict[str, WorkerConnection] = {}
        self.known = asyncio.Event()           # routes received at least once
        self.changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._opening: dict[str, asyncio.Future] = {}   # one connect per worker, shared by concurrent first calls

    def next_id(self) -> int:
        return next(self._ids)

    def set_routes(self, routes: list | None) -> None:
        """Routes from the engine. None: the engine connection is gone, so every route goes at once (its
        workers exit without it, and a stale port may soon belong to someone else); calls ask again."""
        if routes is None:
            self.routes = {}
            for worker in list(self.connections):
                self.connections.pop(worker).retire()   # in-flight calls may still finish
            return
        self.routes = {r[0]: Route(str(r[0]), int(r[1]), float(r[2] or 0.0), str(r[3])) for r in routes}
        for worker in [w for w in self.connections if w not in self.routes]:
            self.connections.pop(worker).retire()   # drained: in-flight calls finish, then it closes
        self.known.set()
        self.changed.set()
        self.changed = asyncio.Event()

    def mark_version(self, worker: str, version: str) -> None:
        """A worker said it runs ``version`` (its answer to a call for another): route by that."""
        route = self.routes.get(worker)
        if route is not None:
            self.routes[worker] = Route(route.worker, route.port, route.perf, version)

    def _lost(self, conn: WorkerConnection) -> None:
        if self.connections.get(conn.route.worker) is conn:
            self.drop(conn.route.worker)

    def drop(self, worker: str) -> None:
        self.routes.pop(worker, None)
        conn = self.connections.pop(worker, None)
        if conn is not None:
            conn.close()

    def choose(self, cost: float, max_queue_time: float, version: str | None = None) -> Route | None:
        """The route with the least (in-flight + cost) / perf; OverloadedError when even it is too long.

        With ``version``, only workers of that version count (during a rollout old ones still serve).
        """
        routes = [r for r in self.routes.values() if version is None or r.version == version]
        if not routes:
            return None

        def wait(route: Route) -> float:
            conn = self.connections.get(route.worker)
            return ((conn.inflight if conn else 0.0) + cost) / max(route.perf or 1.0, 1e-9)

        best = min(routes, key=wait)
        conn = self.connections.get(best.worker)
        if conn is not None and conn.inflight > 0 and wait(best) > max_queue_time:
            raise OverloadedError(f"every worker's queue is longer than max_queue_time={max_queue_time:g}s "
                                  f"(best: {wait(best):.1f}s on {best.worker}); retry later or raise max_workers.")
        return best

    async def connection(self, route: Route) -> WorkerConnection:
        conn = self.connections.get(route.worker)
        if conn is not None and conn.alive:
            return conn
        opening = self._opening.get(route.worker)
        if opening is None:
            opening = asyncio.ensure_future(self._open(route))
            self._opening[route.worker] = opening
            opening.add_done_callback(lambda _: self._opening.pop(route.worker, None))
        return await asyncio.shield(opening)

    async def _open(self, route: Route) -> WorkerConnection:
        try:
            channel = await connect(route.port, self.token, timeout=5.0, segments=self.segments)
        except (OSError, asyncio.TimeoutError) as exc:   # HandshakeError is a PermissionError, an OSError
            self.drop(route.worker)
            raise WorkerLostError(f"cannot reach worker {route.worker} on port {route.port} ({exc})") from exc
        conn = WorkerConnection(route, channel, self._lost)
        self.connections[route.worker] = conn
        return conn

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()

