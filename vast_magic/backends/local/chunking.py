"""How ``f.map`` splits its items into chunks, one request each: pure functions of the map and the routes.

A request per item costs a round trip of framing, pickling and scheduling on
both sides, which caps a map of small items at a few thousand a second. A
chunk pays that once for many items. Chunks must still be:

- small enough that two of them fit in a worker's ``max_queue_time`` at its
  measured perf (the worker's admission rule must never refuse a chunk that
  items sent one by one would have passed);
- numerous enough that every worker gets several (the last chunk does not
  leave the others idle), so expensive items go one or a few per chunk;
- at most ``MAX_CHUNK`` items, so progress moves and a lost worker loses little.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["MAX_CHUNK", "CHUNKS_PER_WORKER", "chunk_size", "chunks_in_flight"]

MAX_CHUNK = 1024
CHUNKS_PER_WORKER = 4


def chunk_size(items: int, routes: Sequence, cost: float, max_queue_time: float) -> int:
    """Items per chunk for ``items`` calls of workload ``cost`` each over ``routes`` (each with ``perf``)."""
    workers = max(1, len(routes))
    spread = math.ceil(items / (workers * CHUNKS_PER_WORKER))
    perfs = [route.perf for route in routes if route.perf and route.perf > 0]
    if perfs and cost > 0:
        fits = math.floor(min(perfs) * max_queue_time / (2 * cost))
    else:
        fits = 1                                    # unknown speed: one item per request, as before
    return max(1, min(MAX_CHUNK, spread, fits))


def chunks_in_flight(workers: int, size: int = 2, chunks: int = 0) -> int:
    """Chunks sent at once: two per worker keep each busy while the next one travels. Chunks of one item
    (expensive items, or a worker of unknown speed) are ordinary calls: they all go at once, as calls
    sent one by one would, and the worker's admission rule decides as it does for those."""
    if size <= 1:
        return max(1, chunks, 2 * max(1, workers))
    return 2 * max(1, workers)
