"""Calls on the caller's own event loop: one connection per worker per loop, never shared, released with the loop.

The fast path (pool.py): a call awaited on a running loop (a kernel's, a
user's ``asyncio.run``, a thread's own loop) talks to the worker on that loop;
the background loop keeps its own connections for sync callers and the engine.
"""
from __future__ import annotations

import asyncio
import threading

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.base import CallSpec

SPEC = CallSpec(name="demo", tag="default", function="square", timeout=30.0, max_queue_time=30.0)


async def _calls_here(backend, pool_key, n: int = 5, together: threading.Barrier | None = None) -> dict:
    """Make ``n`` calls on this loop; what this loop's connections were, seen from inside it."""
    if together is not None:
        await asyncio.to_thread(together.wait, 30)
    values = [(await backend.call(SPEC, (x,), {}, {})).value for x in range(n)]
    pool = backend.pools[pool_key]
    connections = dict(pool.connections)                        # this loop's own, by worker
    return {"values": values, "loop": asyncio.get_running_loop(), "connections": connections,
            "socknames": {c.channel.writer.get_extra_info("sockname") for c in connections.values()},
            "on_this_loop": all(c.loop is asyncio.get_running_loop() and c.ended.get_loop() is c.loop
                                        for c in connections.values())}


def test_calls_from_two_loops_never_share_a_connection(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    assert harness.call("square", 3) == 9                       # the background loop's connection
    key = ("demo", "default")
    background = harness.run(_calls_here(harness.backend, key, n=1))
    together, seen = threading.Barrier(2), {}

    def in_thread(label: str) -> None:
        seen[label] = asyncio.run(_calls_here(harness.backend, key, together=together))

    threads = [threading.Thread(target=in_thread, args=(label,)) for label in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(seen) == {"a", "b"}, "a calling thread failed"
    for result in (seen["a"], seen["b"], background):
        assert result["values"] == [x * x for x in range(len(result["values"]))]
        assert result["connections"] and result["on_this_loop"]
    conns = [set(map(id, r["connections"].values())) for r in (seen["a"], seen["b"], background)]
    names = [r["socknames"] for r in (seen["a"], seen["b"], background)]
    assert not (conns[0] & conns[1] or conns[0] & conns[2] or conns[1] & conns[2])
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_a_closed_loop_releases_its_connections(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    key = ("demo", "default")
    first = asyncio.run(_calls_here(harness.backend, key))     # asyncio.run closes its loop at the end
    pool = harness.backend.pools[key]
    assert first["loop"].is_closed()
    assert first["loop"] not in pool.loops()
    assert all(not c.alive and c.channel.closed for c in first["connections"].values())
    second = asyncio.run(_calls_here(harness.backend, key))    # a new loop opens its own again
    assert second["values"] == first["values"] and second["connections"]
    assert not set(map(id, first["connections"].values())) & set(map(id, second["connections"].values()))
    assert harness.call("square", 4) == 16                      # the workers' routes were never dropped
    assert len(pool.routes) == 1


def test_a_loop_closed_without_cancelling_its_tasks_is_forgotten(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    key = ("demo", "default")
    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(_calls_here(harness.backend, key, n=2))
    finally:
        loop.close()                                            # its reader tasks are left pending
    pool = harness.backend.pools[key]
    second = asyncio.run(_calls_here(harness.backend, key, n=2))   # the next loop's first lookup prunes it
    assert second["values"] == first["values"]
    assert loop not in pool._loops and loop not in pool.loops()
