"""Timing and memory helpers shared by every benchmark script, stdlib only.

Stdlib only on purpose: the peer script runs in the peers venv (Ray,
ipyparallel) and the vast_magic scripts in the project interpreter, and both
must time things the same way (``perf_counter``, the same percentile rule,
RSS read from ``/proc``), or the ratios would compare methods, not systems.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
from typing import Awaitable, Callable


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that really occurred, no interpolation."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(call: Callable[[], object], warmup: int, runs: int) -> dict:
    """p50/p99 in ms of a blocking call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": runs}


async def latency_ms_async(call: Callable[[], Awaitable[object]], warmup: int, runs: int) -> dict:
    """p50/p99 in ms of ``await call()`` on the running loop, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": runs}


async def throughput(call: Callable[[], Awaitable[object]], concurrency: int, total: int) -> float:
    """Calls per second with ``concurrency`` callers each awaiting one call after another."""
    per_caller = total // concurrency

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return per_caller * concurrency / (time.perf_counter() - started)


def median_of(action: Callable[[], float], runs: int) -> float:
    """Median of ``runs`` results of ``action`` (each returns one measurement)."""
    return statistics.median(action() for _ in range(runs))


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (children, grandchildren...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def emit(result: dict) -> None:
    """The one line a benchmark subprocess prints for the driver: ``RESULT {json}``."""
    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()
