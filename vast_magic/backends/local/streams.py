"""A remote generator on the local engine, client side: its items over the worker connection, with credit.

The request is a ``stream`` (docs/internals.md, "Worker call protocol"); items arrive in the connection's
queue for this call as the worker makes them. Every item already arrived goes to the consumer in one hop.
Backpressure: the worker may send ``STREAM_WINDOW`` items ahead; once the consumer asks for more after at
least half a window, what it consumed is granted again, so neither side holds more than a window.
Leaving early cancels the generator on the worker. A stream carries the version its caller deployed; a
worker of another version answers at once without running it, and the stream is routed again (up to
``stale_retries`` times), before any item was seen.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from ...errors import CallTimeoutError, WorkerLostError
from ..base import CallSpec, outcome_from_response

__all__ = ["STREAM_WINDOW", "stream"]

#: items a stream's worker may send ahead of the consumer (its backpressure window)
STREAM_WINDOW = 64


async def stream(backend: Any, spec: CallSpec, pickled: Callable[[int], tuple[bytes, list]],
                 classes: dict, stale_retries: int = 0) -> AsyncIterator[tuple]:
    """``("items", [x, ...])`` events while the worker runs, then ``("end", CallOutcome)``. ``backend`` is
    the ``LocalBackend`` whose pools, routes and logs it uses; ``pickled(call_id)`` the request as sent.
    Runs on the background loop (``LoopIterator`` steps it there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.timeout
    pool = backend.pools.get((spec.name, spec.tag)) or await backend._pool(spec.name, spec.tag)
    for _ in range(1 + stale_retries):
        call_id = pool.next_id()
        route, conn = await backend._connect(pool, spec, deadline)
        conn.inflight += spec.cost
        queue = None
        try:
            queue = await conn.stream(call_id, pickled(call_id), classes)
            first = await _next_message(queue, deadline, spec)
        except BaseException:
            if queue is not None:             # sent: stop the generator on the worker
                conn.streams.pop(call_id, None)
                await conn.control({"op": "cancel", "id": call_id})
            raise
        finally:
            conn.inflight -= spec.cost
        if not first.get("stale"):
            break
        pool.mark_version(route.worker, str(first.get("version")))     # nothing ran there: route again
    else:
        raise CallTimeoutError(f"{spec.function}: the workers of {spec.name}/{spec.tag} still ran another version "
                               "than the one ensure_ready() deployed; the rollout has not finished. Retry later "
                               "or check app.status().")
    events = _items(backend, spec, pool, route, conn, call_id, queue, first, deadline)
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()                 # leaving early: its finally cancels the generator on the worker


async def _items(backend: Any, spec: CallSpec, pool: Any, route: Any, conn: Any, call_id: int,
                 queue: asyncio.Queue, first: dict, deadline: float) -> AsyncIterator[tuple]:
    """The stream's events from its first message on (see ``stream``); leaving early cancels it."""
    conn.inflight += spec.cost
    finished, consumed, ungranted, pending = False, 0, 0, first
    try:
        while not finished:
            if ungranted >= STREAM_WINDOW // 2:      # the consumer took them and asks for more
                await conn.control({"op": "credit", "id": call_id, "n": ungranted})
                ungranted = 0
            message = pending or await _next_message(queue, deadline, spec)
            if "item" in message:
                batch, pending = _ready_items(message, queue)
                yield "items", batch
                consumed, ungranted = consumed + len(batch), ungranted + len(batch)
                continue
            finished = True
            if message.get("lost"):
                pool.drop(route.worker)
                raise WorkerLostError(f"worker {route.worker} closed the connection while streaming {spec.function} "
                                      f"(after {consumed} items); see app.logs().", await backend._log_tail(route.worker))
            yield "end", outcome_from_response(message, spec.function)
    finally:
        conn.inflight -= spec.cost
        if not finished:                      # the consumer left early: stop the generator on the worker
            conn.streams.pop(call_id, None)
            await conn.control({"op": "cancel", "id": call_id})


async def _next_message(queue: asyncio.Queue, deadline: float, spec: CallSpec) -> dict:
    try:
        return await asyncio.wait_for(queue.get(), max(0.0, deadline - asyncio.get_running_loop().time()) + 1.0)
    except asyncio.TimeoutError:
        raise CallTimeoutError(f"{spec.function} did not finish its stream within its timeout of {spec.timeout:g}s; "
                               "pass a larger timeout= to @app.remote.") from None


def _ready_items(first: dict, queue: asyncio.Queue) -> tuple[list, dict | None]:
    """``first``'s item and every item already queued after it; the first other message is returned too."""
    batch = [first["item"]]
    while not queue.empty():
        message = queue.get_nowait()
        if "item" not in message:
            return batch, message
        batch.append(message["item"])
    return batch, None
