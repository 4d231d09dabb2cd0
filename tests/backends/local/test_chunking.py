"""How f.map splits its items: a pure function of the map, the routes' perf and max_queue_time."""
from __future__ import annotations

import pytest

from vast_magic.backends.local.chunking import MAX_CHUNK, chunk_size, chunks_in_flight
from vast_magic.backends.local.pool import Route


def _routes(*perfs):
    return [Route(f"w{i}", 1000 + i, perf, "v1") for i, perf in enumerate(perfs)]


@pytest.mark.parametrize("items, perfs, cost, max_queue, expected", [
    (100_000, (6e6, 6e6), 100.0, 30.0, MAX_CHUNK),        # tiny calls: the cap
    (1000, (6e6, 6e6), 100.0, 30.0, 125),                  # four chunks per worker
    (8, (6e6,), 100.0, 30.0, 2),
    (10, (6e6, 6e6), 100.0, 30.0, 2),
    (1000, (100.0, 1e6), 100.0, 30.0, 15),                 # 1 s calls on the slowest: two chunks fit in 30 s
    (1000, (10.0,), 100.0, 1.0, 1),                        # one call already fills the queue: one per request
    (1000, (0.0,), 100.0, 30.0, 1),                        # speed unknown: one per request, as before
    (1000, (), 100.0, 30.0, 1),
    (1, (6e6,), 0.0, 30.0, 1),
])
def test_chunk_size(items, perfs, cost, max_queue, expected):
    assert chunk_size(items, _routes(*perfs), cost, max_queue) == expected


def test_chunks_in_flight_keep_every_worker_busy():
    assert [chunks_in_flight(n) for n in (0, 1, 2, 10)] == [2, 2, 4, 20]


@pytest.mark.parametrize("workers, size, chunks, expected", [
    (1, 1, 3, 3),          # three expensive items on one worker: all at once, as three calls would go
    (1, 1, 1, 2), (2, 1, 100, 100), (1, 50, 20, 2), (2, 50, 20, 4),
])
def test_chunks_of_one_item_all_go_at_once(workers, size, chunks, expected):
    assert chunks_in_flight(workers, size, chunks) == expected
