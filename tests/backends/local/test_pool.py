"""Which worker a call goes to, connection life, and which old worker logs the engine prunes."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from vast_magic.backends.local.pool import DeploymentPool, Route, WorkerConnection
from vast_magic.errors import OverloadedError


def _pool(workers: dict[str, tuple[float, float]]) -> DeploymentPool:
    """workers: id -> (perf, in-flight workload)."""
    pool = DeploymentPool("token")
    pool.set_routes([(wid, 1000 + i, perf, "v1") for i, (wid, (perf, _)) in enumerate(workers.items())])
    pool.connections = {wid: SimpleNamespace(inflight=load, alive=True) for wid, (_, load) in workers.items()}
    return pool


@pytest.mark.parametrize("workers, cost, max_queue, expected", [
    ({"a": (100, 0), "b": (100, 0)}, 100, 30, "a"),
    ({"a": (100, 500), "b": (100, 100)}, 100, 30, "b"),
    ({"a": (1000, 500), "b": (100, 100)}, 100, 30, "a"),        # faster worker wins despite more work
    ({"a": (100, 0), "b": (0, 0)}, 100, 30, "a"),               # unknown perf counts as 1/s
    ({"a": (10, 250), "b": (10, 400)}, 50, 30, "a"),            # 30 s exactly is still admitted
])
def test_choose(workers, cost, max_queue, expected):
    assert _pool(workers).choose(cost, max_queue).worker == expected


def test_overloaded_when_every_queue_is_too_long():
    with pytest.raises(OverloadedError, match="max_queue_time=2"):
        _pool({"a": (10, 100), "b": (10, 200)}).choose(10, 2.0)


def test_idle_worker_always_admits_a_big_call():
    assert _pool({"a": (10, 0)}).choose(10_000, 1.0).worker == "a"


def test_no_routes_and_route_updates():
    pool = DeploymentPool("token")
    assert pool.choose(1, 1) is None
    pool.set_routes([("a", 1, 10.0, "v1")])
    retired = []
    pool.connections["gone"] = SimpleNamespace(inflight=0, retire=lambda: retired.append("gone"))
    pool.set_routes([("b", 2, 10.0, "v2")])                     # drained workers lose their entry and are retired
    assert list(pool.routes) == ["b"] and "gone" not in pool.connections and retired == ["gone"]
    pool.connections["b"] = SimpleNamespace(inflight=0, retire=lambda: retired.append("b"))
    pool.set_routes(None)                                       # engine connection lost: no route is trusted any more
    assert pool.routes == {} and pool.connections == {} and retired == ["gone", "b"]


class _HandChannel:
    """A channel whose answers the test delivers by hand; records whether it was closed."""

    def __init__(self):
        self.closed = False
        self.class_refs, self.resolve = {}, {}

    def listen(self, on_message, on_closed):
        self.deliver, self._on_closed = on_message, on_closed

    async def send_pickled(self, main, buffers=(), alone=False):
        pass

    def close(self):
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._on_closed, None)   # as a transport reports it


def test_a_retired_connection_closes_after_its_last_answer():
    async def scenario():
        channel = _HandChannel()
        conn = WorkerConnection(Route("w", 1, 1.0, "v1"), channel)
        answer = await conn.call(7, (b"request 7", []), {})
        conn.retire()                                          # drained while one call is in flight
        assert not channel.closed
        channel.deliver({"id": 7, "ok": True})
        assert (await asyncio.wait_for(answer, 1))["ok"]
        await asyncio.wait_for(conn.ended, 1)                  # it closes by itself: nothing left to the GC
        assert channel.closed and not conn.alive

        idle = WorkerConnection(Route("x", 2, 1.0, "v1"), _HandChannel())
        idle.retire()                                          # nothing in flight: closed at once
        await asyncio.sleep(0)
        assert idle.channel.closed and idle.ended.done()

    asyncio.run(scenario())
