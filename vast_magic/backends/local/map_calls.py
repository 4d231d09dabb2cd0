"""``f.map`` on the local engine in chunks: one request per chunk (sizes from ``chunking``), each item
answered on its own, results in input order. ``backend`` is the ``LocalBackend`` whose pools, routes and
exchange it uses; this runs on whichever loop awaits the map (``any_loop``).
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable

from ...runtime import wire
from ..base import CallSpec, outcome_from_response, unpicklable_arguments
from . import chunking
from .engine_client import on_engine_loop

__all__ = ["call_many"]


async def call_many(backend: Any, spec: CallSpec, calls: list, classes: Any, done: Callable[[int, int], None]) -> list:
    """``f.map``'s calls in chunks (``chunking``): one request per chunk, each item answered on its
    own, results in input order; a failed item (or a failed chunk, for its items) is its exception.
    ``calls`` holds (args, kwargs, cost); ``done(finished, failed)`` counts items as chunks end."""
    if not calls:
        return []
    try:
        pool = backend.pools.get((spec.name, spec.tag)) or await on_engine_loop(backend._pool(spec.name, spec.tag))
        if not pool.routes:
            await backend._route(pool, spec, asyncio.get_running_loop().time() + spec.timeout)
    except Exception as exc:                    # no worker at all: every item fails the same way
        done(len(calls), len(calls))
        return [exc] * len(calls)
    mean_cost = sum(cost for _, _, cost in calls) / len(calls)
    size = chunking.chunk_size(len(calls), list(pool.routes.values()), mean_cost, spec.max_queue_time)
    results: list = [None] * len(calls)
    gate = asyncio.Semaphore(chunking.chunks_in_flight(len(pool.routes), size, -(-len(calls) // size)))

    async def run(start: int) -> None:
        part = calls[start:start + size]
        async with gate:
            try:
                answers = await _chunk_once(backend, dataclasses.replace(spec, cost=mean_cost * len(part)),
                                                 part, mean_cost, classes)
            except Exception as exc:            # the chunk as a whole: its items share the error
                answers = [exc] * len(part)
        results[start:start + len(part)] = answers
        done(len(part), sum(isinstance(a, BaseException) or a.error is not None for a in answers))

    await asyncio.gather(*(run(start) for start in range(0, len(calls), size)))
    return results

async def _chunk_once(backend: Any, spec: CallSpec, part: list, mean_cost: float, classes: Any) -> list:
    # items run concurrently on the worker, each within the timeout; a chunk waits at most for all in turn
    request = {"op": "map", "fn": spec.function, "items": [(tuple(a), dict(k)) for a, k, _ in part],
               "cost": mean_cost, "timeout": spec.timeout}

    def pickled(call_id: int) -> tuple[bytes, list]:
        try:
            return wire.dumps({**request, "id": call_id}, classes)
        except Exception as exc:
            raise unpicklable_arguments(spec.function, exc) from exc

    response = await backend._exchange(spec, spec.timeout * len(part), classes, pickled)
    if "items" not in response:
        outcome = outcome_from_response(response, spec.function)    # the whole chunk was refused
        return [outcome.error or RuntimeError("the worker sent no items")] * len(part)
    return [_item_outcome(item, spec.function) for item in response["items"]]


def _item_outcome(item: dict, function: str):
    """One map item's answer: its CallOutcome, or the error the answer raises (refused, timed out)."""
    try:
        return outcome_from_response(item, function)
    except Exception as exc:
        return exc
