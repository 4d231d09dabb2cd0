"""Client-side connections to workers and the choice of worker for each call.

The engine says which workers are ready (routes, pushed whenever they change);
calls then go straight to a worker over a persistent, authenticated,
multiplexed connection: the engine is never in the data path. A call goes to
the worker with the least in-flight workload per unit of perf (workload
includes the new call); when even that worker's queue would exceed the
function's ``max_queue_time``, the call fails fast with ``OverloadedError``.

Connections belong to the event loop that opened them (an asyncio transport
must only be used on its own loop): each loop that calls gets its own
connection per worker, so a caller awaiting on the kernel's loop or its own
talks to the worker with no thread hop, and the background loop keeps its own
for sync callers. Routes are shared by every loop; the engine pushes them on
the background loop, and what they retire is closed on each connection's own
loop. A loop's connections go when it shuts down (``asyncio.run`` cancels the
one task each loop keeps for that), or at the next lookup after it closed.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Callable, Mapping

from ...errors import OverloadedError, WorkerLostError
from ...runtime import shm
from .channel import connect_worker

__all__ = ["Route", "WorkerConnection", "DeploymentPool"]


@dataclass(frozen=True)
class Route:
    worker: str
    port: int
    perf: float
    version: str


class WorkerConnection:
    """One persistent connection to one worker, on one event loop; responses matched to calls by id.

    Answers arrive through the channel's ``listen`` callback, in the loop's read
    callback: the call's future is resolved there, so its caller runs on the very
    next turn (no reader task in between)."""

    def __init__(self, route: Route, channel, on_lost: Callable[["WorkerConnection"], None] | None = None,
                 on_gone: Callable[["WorkerConnection"], None] | None = None):
        """``on_lost``: the worker closed it (its route goes); ``on_gone``: it closed for any reason."""
        self.route, self.channel = route, channel
        self.loop = asyncio.get_running_loop()
        self._on_lost, self._on_gone = on_lost, on_gone
        self.inflight = 0.0
        self.pending: dict[int, asyncio.Future] = {}
        self.streams: dict[int, asyncio.Queue] = {}    # stream calls: items, then the final answer
        self.alive = True
        self.retired = False
        self.ended = self.loop.create_future()          # resolved once the connection closed and calls were told
        self._closing = False
        channel.listen(self._received, self._closed)

    def retire(self) -> None:
        """The worker left the routes: close once its in-flight calls have answered."""
        self.retired = True
        if not self.pending and not self.streams:
            self.close()

    def close(self) -> None:
        """Close it from this side (the worker is fine): calls still in flight fail as lost."""
        self._closing = True
        self.alive = False
        self.channel.close()

    def _received(self, message) -> None:
        if not isinstance(message, dict):
            return
        call_id = message.get("id")
        future = self.pending.pop(call_id, None)
        if future is not None:
            if not future.done():
                future.set_result(message)
        else:
            stream = self.streams.get(call_id)
            if stream is not None:        # never full: the worker sends no more than the credit
                stream.put_nowait(message)
                if "item" not in message:
                    self.streams.pop(call_id, None)
        if self.retired and not self.pending and not self.streams:
            self.close()

    def _closed(self, exc: BaseException | None) -> None:
        """The connection ended (closed here, by the worker, or broken): every call still waiting is told."""
        self.alive = False
        if not self._closing and not self.retired and self._on_lost is not None:
            self._on_lost(self)               # the worker is gone: its route goes at once
        if self._on_gone is not None:
            self._on_gone(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerLostError(f"worker {self.route.worker} closed the connection mid-call"))
        self.pending.clear()
        for stream in self.streams.values():
            stream.put_nowait({"lost": True})
        self.streams.clear()
        if not self.ended.done():
            self.ended.set_result(None)

    async def call(self, call_id: int, pickled: tuple[bytes, list], class_refs: Mapping[type, str]) -> asyncio.Future:
        """Send call ``call_id`` (its request as ``wire.dumps`` made it); the future resolves to the response.

        The arguments were pickled before, so any failure here is the connection's (WorkerLostError),
        never the caller's: the reader may close the connection while this call waits for its turn.
        """
        if not self.alive:
            raise WorkerLostError(f"worker {self.route.worker} is gone")
        future = self.loop.create_future()
        alone = not self.pending and not self.streams
        self.pending[call_id] = future
        if class_refs or self.channel.resolve:
            self.channel.resolve = {name: cls for cls, name in class_refs.items()}
        try:
            await self.channel.send_pickled(*pickled, alone=alone)
        except BaseException as exc:
            self._abandon(call_id, future)
            if isinstance(exc, Exception):
                raise WorkerLostError(f"worker {self.route.worker} is unreachable ({exc!r})") from exc
            raise
        return future

    async def stream(self, call_id: int, pickled: tuple[bytes, list], class_refs: Mapping[type, str]) -> asyncio.Queue:
        """Send stream call ``call_id``; its items, then its final answer (or ``{"lost": True}``), arrive in
        the returned queue."""
        if not self.alive:
            raise WorkerLostError(f"worker {self.route.worker} is gone")
        queue: asyncio.Queue = asyncio.Queue()
        self.streams[call_id] = queue
        self.channel.resolve = {name: cls for cls, name in class_refs.items()}
        try:
            await self.channel.send_pickled(*pickled)
        except BaseException as exc:
            self.streams.pop(call_id, None)
            if isinstance(exc, Exception):
                raise WorkerLostError(f"worker {self.route.worker} is unreachable ({exc!r})") from exc
            raise
        return queue

    async def control(self, message: dict) -> None:
        """A credit or cancel for a call on this connection; a closed connection already ended it."""
        try:
            await self.channel.send(message)
        except (ConnectionError, OSError):
            pass

    def _abandon(self, call_id: int, future: asyncio.Future) -> None:
        """Forget a call that was not sent. The reader may already have failed its future when the
        connection closed: that exception is superseded by the caller's, so mark it seen."""
        self.pending.pop(call_id, None)
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


class _LoopConnections:
    """One event loop's connections to the workers of a deployment, closed when that loop shuts down."""

    __slots__ = ("connections", "opening", "_keeper")

    def __init__(self) -> None:
        self.connections: dict[str, WorkerConnection] = {}
        self.opening: dict[str, asyncio.Future] = {}   # one connect per worker, shared by concurrent first calls
        self._keeper: asyncio.Task | None = None

    def add(self, conn: WorkerConnection) -> None:
        self.connections[conn.route.worker] = conn
        if self._keeper is None:                  # one per loop: asyncio.run cancels it before closing
            self._keeper = conn.loop.create_task(self._close_at_shutdown())
            self._keeper._log_destroy_pending = False   # a loop closed without shutting down: the GC's, quietly

    async def _close_at_shutdown(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:           # the loop shuts down (a loop closed without that: the GC's)
            for conn in list(self.connections.values()):
                conn.close()
            self.connections.clear()
            raise


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_its_loop(loop: asyncio.AbstractEventLoop | None, action: Callable[[], None]) -> None:
    """Run ``action`` on ``loop`` (at once when that is this thread's loop); a closed loop's sockets
    are left to the garbage collector."""
    if loop is None or loop is _running_loop():
        action()
        return
    try:
        loop.call_soon_threadsafe(action)
    except RuntimeError:                           # that loop is closed
        pass


class DeploymentPool:
    """The routes of one (name, tag) in this process, and each event loop's connections to its workers."""

    def __init__(self, token: str, segments: shm.Segments | None = None):
        self.token = token
        self.segments = segments
        self.routes: dict[str, Route] = {}
        self._loops: dict[asyncio.AbstractEventLoop | None, _LoopConnections] = {}
        self.known = asyncio.Event()           # routes received at least once
        self.changed = asyncio.Event()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def _here(self) -> _LoopConnections:
        """The running loop's connections (made on its first call; closed loops are forgotten then)."""
        loop = _running_loop()
        table = self._loops.get(loop)
        if table is None:
            for closed in [other for other in list(self._loops) if other is not None and other.is_closed()]:
                self._loops.pop(closed, None)
            table = self._loops[loop] = _LoopConnections()
        return table

    @property
    def connections(self) -> dict[str, WorkerConnection]:
        """The running loop's connections, by worker."""
        return self._here().connections

    @connections.setter
    def connections(self, value: dict) -> None:
        self._here().connections = value

    def loops(self) -> list:
        """The event loops that hold connections now (the tests check they are never shared)."""
        return [loop for loop, table in list(self._loops.items()) if table.connections]

    def _each(self):
        """(loop, its connections) for every loop, as a list: the background loop may change it meanwhile."""
        return list(self._loops.items())

    def set_routes(self, routes: list | None) -> None:
        """Routes from the engine. None: the engine connection is gone, so every route goes at once (its
        workers exit without it, and a stale port may soon belong to someone else); calls ask again."""
        if routes is None:
            self.routes = {}
            self._retire(lambda worker: True)   # in-flight calls may still finish
            return
        self.routes = {r[0]: Route(str(r[0]), int(r[1]), float(r[2] or 0.0), str(r[3])) for r in routes}
        self._retire(lambda worker: worker not in self.routes)   # drained: in-flight calls finish, then it closes
        self.known.set()
        self.changed.set()
        self.changed = asyncio.Event()

    def mark_version(self, worker: str, version: str) -> None:
        """A worker said it runs ``version`` (its answer to a call for another): route by that."""
        route = self.routes.get(worker)
        if route is not None:
            self.routes[worker] = Route(route.worker, route.port, route.perf, version)

    def _retire(self, gone: Callable[[str], bool]) -> None:
        for loop, table in self._each():
            for worker in [w for w in list(table.connections) if gone(w)]:
                conn = table.connections.pop(worker, None)
                if conn is not None:
                    _on_its_loop(loop, conn.retire)

    def _lost(self, conn: WorkerConnection) -> None:
        if any(table.connections.get(conn.route.worker) is conn for _, table in self._each()):
            self.drop(conn.route.worker)

    def _gone(self, table: _LoopConnections, conn: WorkerConnection) -> None:
        if table.connections.get(conn.route.worker) is conn:
            table.connections.pop(conn.route.worker, None)

    def drop(self, worker: str) -> None:
        """The worker is unreachable: its route goes, and every loop's connection to it closes."""
        self.routes.pop(worker, None)
        for loop, table in self._each():
            conn = table.connections.pop(worker, None)
            if conn is not None:
                _on_its_loop(loop, conn.close)

    def inflight(self, worker: str) -> float:
        """Workload in flight to ``worker`` from this process, over every loop's connection."""
        total = 0.0
        for _, table in self._each():
            conn = table.connections.get(worker)
            if conn is not None:
                total += conn.inflight
        return total

    def choose(self, cost: float, max_queue_time: float, version: str | None = None) -> Route | None:
        """The route with the least (in-flight + cost) / perf; OverloadedError when even it is too long.

        With ``version``, only workers of that version count (during a rollout old ones still serve).
        """
        routes = self.routes
        if version is not None and any(r.version != version for r in routes.values()):
            routes = {worker: r for worker, r in routes.items() if r.version == version}
        if not routes:
            return None
        if len(routes) == 1:                                # the common case, without the general bookkeeping
            (best,) = routes.values()
            inflight = self.inflight(best.worker)
        else:
            loads = {worker: self.inflight(worker) for worker in routes}
            best = min(routes.values(), key=lambda r: (loads[r.worker] + cost) / max(r.perf or 1.0, 1e-9))
            inflight = loads[best.worker]
        waited = (inflight + cost) / max(best.perf or 1.0, 1e-9)
        if inflight > 0 and waited > max_queue_time:
            raise OverloadedError(f"every worker's queue is longer than max_queue_time={max_queue_time:g}s "
                                  f"(best: {waited:.1f}s on {best.worker}); retry later or raise max_workers.")
        return best

    def open_connection(self, route: Route, loop: asyncio.AbstractEventLoop) -> WorkerConnection | None:
        """``loop``'s live connection to the route's worker, if it has one (no await: the common case).
        ``loop`` is the running loop (looking it up costs a system call before Python 3.12)."""
        table = self._loops.get(loop)
        conn = table.connections.get(route.worker) if table is not None else None
        return conn if conn is not None and conn.alive else None

    async def connection(self, route: Route) -> WorkerConnection:
        """This loop's connection to the route's worker, opened on first use."""
        table = self._here()
        conn = table.connections.get(route.worker)
        if conn is not None and conn.alive:
            return conn
        opening = table.opening.get(route.worker)
        if opening is None:
            opening = asyncio.ensure_future(self._open(route, table))
            table.opening[route.worker] = opening
            opening.add_done_callback(lambda _: table.opening.pop(route.worker, None))
        return await asyncio.shield(opening)

    async def _open(self, route: Route, table: _LoopConnections) -> WorkerConnection:
        try:
            channel = await connect_worker(route.port, self.token, timeout=5.0, segments=self.segments)
        except (OSError, asyncio.TimeoutError) as exc:   # HandshakeError is a PermissionError, an OSError
            self.drop(route.worker)
            raise WorkerLostError(f"cannot reach worker {route.worker} on port {route.port} ({exc})") from exc
        conn = WorkerConnection(route, channel, self._lost, lambda c: self._gone(table, c))
        table.add(conn)
        return conn

    def close(self) -> None:
        for loop, table in self._each():
            for conn in list(table.connections.values()):
                _on_its_loop(loop, conn.close)
            table.connections.clear()
        self._loops.clear()
