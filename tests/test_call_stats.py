"""Client-side call counters: the figures ``%vast_status`` shows (rate, p50, p99), as tables of cases."""
from __future__ import annotations

import pytest

from vast_magic.backends.vast.readiness import worker_info
from vast_magic.call_stats import CallCounter, percentile, summarize
from vast_magic.reports import CallStats


def calls(*spec: tuple[float, float, bool]) -> tuple[tuple[float, float, bool], ...]:
    return tuple(spec)


@pytest.mark.parametrize("entries, now, kwargs, expected", [
    # nothing yet
    ((), 100.0, {}, CallStats(0, 0, 60.0, 0.0, None, None, 0)),
    # everything older than the window: no recent calls, the total remains
    (calls((10.0, 0.1, True)), 100.0, {"total": 1}, CallStats(0, 0, 60.0, 0.0, None, None, 1)),
    # counting began 20 s ago: the rate is over those 20 s, not the whole minute
    (calls((81.0, 0.001, True), (90.0, 0.003, False), (99.0, 0.002, True)), 100.0, {"first": 80.0, "total": 3},
     CallStats(3, 1, 20.0, 0.15, 0.002, 0.003, 3)),
    # counting began a moment ago: at least one second, so three quick calls are not thousands per second
    (calls((99.99, 0.001, True), (99.995, 0.001, True), (100.0, 0.001, True)), 100.0, {"first": 99.99},
     CallStats(3, 0, 1.0, 3.0, 0.001, 0.001, 0)),
    # a full ring forgot older calls of the window: the span is what the ring still holds
    (calls((90.0, 0.01, True), (95.0, 0.02, True)), 100.0, {"first": 0.0, "full": True},
     CallStats(2, 0, 10.0, 0.2, 0.01, 0.02, 0)),
    # only calls inside the window count
    (calls((30.0, 9.0, True), (50.0, 0.5, True)), 100.0, {"first": 0.0}, CallStats(1, 0, 60.0, 1 / 60, 0.5, 0.5, 0)),
])
def test_summarize(entries, now, kwargs, expected):
    assert summarize(entries, now, **kwargs) == expected


@pytest.mark.parametrize("values, q, expected", [
    ([1.0], 0.5, 1.0), ([1.0], 0.99, 1.0), ([1.0, 2.0], 0.5, 1.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
    (list(range(1, 101)), 0.99, 99), (list(range(1, 101)), 0.5, 50), (list(range(1, 1001)), 0.99, 990),
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_counter_is_bounded_and_counts_everything():
    now = [0.0]
    counter = CallCounter(size=8, clock=lambda: now[0])
    for i in range(20):
        now[0] = float(i)
        counter.record(started=now[0] - 0.25, ok=i % 5 != 0)
    assert len(counter.ring) == 8 and counter.total == 20 and counter.first == 0.0
    stats = counter.summary(window=60.0)
    # the ring holds the last 8 calls (12..19): they span 7 s, one of them (15) failed
    assert (stats.calls, stats.failed, stats.window, stats.total) == (8, 1, 7.0, 20)
    assert stats.p50 == stats.p99 == 0.25 and stats.rate == pytest.approx(8 / 7)


@pytest.mark.parametrize("raw, load, reliability", [
    ({"id": 1, "status": "idle", "loadtime": 2.0, "cur_load": 35.5, "reliability": 0.987}, 35.5, 0.987),
    ({"id": 1, "status": "loading"}, None, None),
    ({"id": 1, "status": "idle", "loadtime": 2.0, "cur_load": "n/a", "reliability": True}, None, None),
    ({"id": 1, "status": "idle", "loadtime": 2.0, "cur_load": "12", "reliability": None}, 12.0, None),
])
def test_vast_workers_report_their_load_and_reliability(raw, load, reliability):
    info = worker_info(raw)
    assert (info.load, info.reliability) == (load, reliability)
