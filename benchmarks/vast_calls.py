"""vast_magic call metrics: no-op latency, throughput at concurrency 64 on 2 workers, 100 MiB round trip, map,
and a stream of 1,000 small items (first-item latency, items/s).

Latency is timed twice: ``await noop()`` on the caller's own loop (the fast
path: this loop's connection, no thread hop) and the blocking ``noop.call()``
(through the private background loop). The array round trip also counts this
process's page faults (minor + major, from ``getrusage``) per round trip.

Run by the driver as ``python -m benchmarks.vast_calls --home DIR [--quick]``
in the project interpreter, with a private ``VAST_MAGIC_HOME``. This module is
``__main__`` then, so the remote functions below are captured as notebook-style
source, like a user's script. Prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time

import numpy as np

from benchmarks.measure import emit, latency_ms, latency_ms_async, median_of, throughput
from vast_magic import Deployment

app = Deployment(name="bench-calls")
app.configure_autoscaling(cold_workers=2, max_workers=2)


@app.remote(benchmark_dataset=[{}], benchmark_runs=2)
async def noop():
    return None


@app.remote
async def echo(value):
    return value


@app.remote
async def count_up(n):
    for i in range(n):
        yield i


def stream_run(n: int = 1000) -> tuple[float, float]:
    """``for x in count_up.stream(1000)`` from the main thread: seconds to the first item, items per second
    over the whole stream; checks every item came, in order."""
    started, first, seen = time.perf_counter(), None, 0
    for item in count_up.stream(n):
        if first is None:
            first = time.perf_counter() - started
        if item != seen:
            raise AssertionError(f"stream item {seen} came back as {item!r}")
        seen += 1
    total = time.perf_counter() - started
    if seen != n:
        raise AssertionError(f"the stream ended after {seen} of {n} items")
    return first, n / total


def array_round_trip_s(array: np.ndarray) -> float:
    """One call out and back; checks the array really came back (wrong data must not look fast)."""
    started = time.perf_counter()
    back = echo.call(array)
    elapsed = time.perf_counter() - started
    if back.shape != array.shape or back[-1] != array[-1] or back[0] != array[0]:
        raise AssertionError("the 100 MiB array came back different")
    return elapsed


@app.remote
async def inc(x):
    return x + 1


def faults() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def map_rate(items: int) -> float:
    """Items per second of a blocking ``inc.map`` over ``items`` small ints, checked."""
    values = list(range(items))
    started = time.perf_counter()
    results = inc.map(values)
    elapsed = time.perf_counter() - started
    if results != [v + 1 for v in values]:
        raise AssertionError("map returned wrong or reordered results")
    return items / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="latency,throughput,array,map,stream")
    args = parser.parse_args()
    only = set(args.only.split(","))
    scale = 0.2 if args.quick else 1.0
    report = app.ensure_ready()
    result: dict = {"workers": len(report.workers), "pid": os.getpid()}
    try:
        if "latency" in only:
            result["latency"] = latency_ms(noop.call, warmup=200, runs=int(3000 * scale))
            result["await_latency"] = asyncio.run(latency_ms_async(noop, warmup=200, runs=int(3000 * scale)))
        if "throughput" in only:
            asyncio.run(throughput(noop, 64, 640))                       # warm both connections
            result["throughput"] = median_of(lambda: asyncio.run(throughput(noop, 64, int(10240 * scale))), 3)
        if "array" in only:
            array = np.random.default_rng(0).random((100 << 20) // 8)
            array_round_trip_s(array)
            runs, before = (3 if args.quick else 7), faults()
            result["array_s"] = median_of(lambda: array_round_trip_s(array), runs)
            result["array_faults"] = (faults() - before) / runs
        if "map" in only:
            map_rate(2000)                                                   # warm both connections
            result["map_items_s"] = map_rate(int(100_000 * scale))
        if "stream" in only:
            stream_run(100)                                                # warm the connection
            runs = [stream_run() for _ in range(3 if args.quick else 7)]
            result["stream"] = {"first_item_s": statistics.median(r[0] for r in runs),
                                "items_per_s": statistics.median(r[1] for r in runs)}
    finally:
        app.teardown()
    emit(result)


if __name__ == "__main__":
    main()
