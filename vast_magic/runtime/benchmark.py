"""The start-up benchmark: how much workload per second this worker sustains for a function.

Fixes the official worker's benchmark on purpose (DESIGN.md "Benchmark"): every
dataset item is used (round-robin from a random start), a failing call fails the
worker instead of counting as a success, and the workload per call comes from the
function's workload calculator. One warm-up call, then ``benchmark_runs`` rounds
of 10 concurrent calls (1 without ``allow_parallel_requests``); perf is the best
round's workload per second, the median is reported too.

What the inputs are is decided before any call of a round starts, never by
which call the event loop happens to run first: the round's payloads are taken
from the input stream (the dataset round robin from a random start, or the
generator function, called again whenever it is exhausted) and the calls are
dispatched in that order. The order in which concurrent calls then *run* is the
scheduler's business (it differs between Python versions) and is not promised.
"""
from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

from .registry import RemoteEntry

__all__ = ["PARALLEL_CONCURRENCY", "DEFAULT_WORKLOAD", "Invoke", "BenchmarkError", "BenchmarkResult", "run_benchmark"]

PARALLEL_CONCURRENCY = 10
DEFAULT_WORKLOAD = 100.0

Invoke = Callable[[dict], Awaitable[Any]]


class BenchmarkError(RuntimeError):
    """The benchmark could not produce a score; the message holds the cause and traceback."""


@dataclass(frozen=True)
class BenchmarkResult:
    perf: float
    median: float
    rounds: tuple[float, ...]


async def run_benchmark(entry: RemoteEntry, invoke: Invoke, rng: random.Random | None = None,
                        clock: Callable[[], float] = time.perf_counter) -> BenchmarkResult:
    """Benchmark one function through ``invoke(payload)``; raise BenchmarkError on any failure.

    ``rng`` picks the dataset's starting item and ``clock`` times the rounds: tests pass their own.
    """
    payloads = _payloads(entry, rng or random.Random())
    concurrency = PARALLEL_CONCURRENCY if entry.option("allow_parallel_requests", True) else 1
    runs = int(entry.option("benchmark_runs", 10))
    if runs < 1:
        raise BenchmarkError(f"benchmark_runs must be at least 1 for {entry.name}, got {runs}")
    await _round(entry, invoke, _take(payloads, 1), clock)                 # warm-up, not scored
    rounds = []
    for _ in range(runs):
        workload, seconds = await _round(entry, invoke, _take(payloads, concurrency), clock)
        rounds.append(workload / max(seconds, 1e-9))
    return BenchmarkResult(max(rounds), statistics.median(rounds), tuple(rounds))


def _take(payloads: Iterator[dict], count: int) -> list[dict]:
    """The next ``count`` inputs, all picked before the round dispatches its first call."""
    return [next(payloads) for _ in range(count)]


async def _round(entry: RemoteEntry, invoke: Invoke, batch: list[dict],
                 clock: Callable[[], float]) -> tuple[float, float]:
    workload = sum([_workload(entry, p) for p in batch])
    start = clock()
    calls = [invoke(p) for p in batch]                 # dispatched in batch order, one call per input
    results = await asyncio.gather(*calls, return_exceptions=True)
    seconds = clock() - start
    for payload, result in zip(batch, results):
        if isinstance(result, BaseException):
            tb = "".join(traceback.format_exception(result))
            raise BenchmarkError(f"benchmark call {entry.name}(**{_short(payload)}) failed:\n{tb}") from result
    return workload, seconds


def _workload(entry: RemoteEntry, payload: dict) -> float:
    calc = entry.workload_calculator
    if calc is None:
        return DEFAULT_WORKLOAD
    try:
        value = calc(**payload) if entry.option("workload_mode", "params") == "params" else calc(payload)
    except Exception as exc:
        raise BenchmarkError(f"workload_calculator failed for {entry.name}(**{_short(payload)}):\n"
                             + "".join(traceback.format_exception(exc))) from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BenchmarkError(f"workload_calculator returned {value!r} for {entry.name}; "
                             "it must return a finite non-negative number")
    return float(value)


def _payloads(entry: RemoteEntry, rng: random.Random) -> Iterator[dict]:
    dataset = entry.options.get("benchmark_dataset")
    if dataset is not None:
        items = list(dataset)
        if not items:
            raise BenchmarkError(f"benchmark_dataset of {entry.name} is empty")
        for item in items:
            _check_payload(entry, item)
        return _round_robin(items, rng.randrange(len(items)))
    if entry.benchmark_generator is not None:
        return _generated(entry)
    raise BenchmarkError(f"{entry.name} has no benchmark dataset or generator")


def _round_robin(items: list, start: int) -> Iterator[dict]:
    index = start
    while True:
        yield items[index % len(items)]
        index += 1


def _generated(entry: RemoteEntry) -> Iterator[dict]:
    """Items from the generator function: one dict per call, or an iterable (called again when exhausted)."""
    while True:
        result = entry.benchmark_generator()
        if isinstance(result, dict):
            yield result
            continue
        if not hasattr(result, "__iter__"):
            raise BenchmarkError(f"benchmark_generator of {entry.name} must return a dict or yield dicts, "
                                 f"got {type(result).__name__}")
        produced = False
        for item in result:      # lazily: an endless generator is fine
            _check_payload(entry, item)
            produced = True
            yield item
        if not produced:
            raise BenchmarkError(f"benchmark_generator of {entry.name} produced no payloads")


def _check_payload(entry: RemoteEntry, item) -> None:
    if not isinstance(item, dict):
        raise BenchmarkError(f"benchmark payloads for {entry.name} must be dicts of keyword arguments, "
                             f"got {type(item).__name__}")


def _short(payload: dict, limit: int = 200) -> str:
    text = repr(payload)
    return text if len(text) <= limit else text[:limit] + "..."
