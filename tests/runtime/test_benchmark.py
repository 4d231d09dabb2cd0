"""Benchmark rules (DESIGN.md "Benchmark"): every item used, failures fail, serial = 1 at a time, best round."""
from __future__ import annotations

import asyncio
import random

import pytest

from vast_magic.runtime.benchmark import BenchmarkError, run_benchmark
from vast_magic.runtime.executor import invoke
from vast_magic.runtime.registry import RemoteEntry
from tests.runtime.worker_harness import remote_spec


class Recorder:
    """``call`` is an async remote function that records its inputs and its peak concurrency.

    A coroutine function runs on the loop: the calls of a round all start in one loop
    iteration, before any of their sleeps can end, so the peak is exact.
    """

    def __init__(self, delay: float = 0.0, fail_on=None):
        self.inputs, self.running, self.peak = [], 0, 0
        self.delay, self.fail_on = delay, fail_on

    async def call(self, x):
        self.inputs.append(x)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if x == self.fail_on:
                raise ValueError(f"cannot handle {x}")
            return x
        finally:
            self.running -= 1


def _entry(function, workload=None, generator=None, **options) -> RemoteEntry:
    return RemoteEntry("f", function, remote_spec("f", **options), workload, generator)


def _bench(entry, rng=None, dispatched=None, clock=None):
    """Run the benchmark; ``dispatched`` gets each payload's ``x`` in the order calls are dispatched."""
    def dispatch(payload):
        if dispatched is not None:
            dispatched.append(payload["x"])
        return invoke(entry, (), payload)
    timing = {"clock": clock} if clock is not None else {}
    return asyncio.run(run_benchmark(entry, dispatch, rng, **timing))


def _clock(*round_seconds: float):
    """A clock read twice per round (start, end) whose rounds last ``round_seconds``, warm-up first."""
    readings, now = [], 0.0
    for seconds in round_seconds:
        readings += [now, now + seconds]
        now += seconds + 1.0
    return iter(readings).__next__


def test_every_dataset_item_is_used_round_robin_from_a_random_start():
    rec, dispatched = Recorder(), []
    dataset = [{"x": i} for i in range(7)]
    _bench(_entry(rec.call, benchmark_dataset=dataset, benchmark_runs=3), random.Random(4), dispatched)
    start = dispatched[0]
    assert dispatched == [(start + k) % 7 for k in range(1 + 3 * 10)]     # warm-up, then 3 rounds of 10
    assert sorted(rec.inputs) == sorted(dispatched)                       # each call got its own input


def test_inputs_do_not_depend_on_the_order_concurrent_calls_run():
    """Calls that start in reverse (or any) order still get the round-robin inputs, in dispatch order."""
    rec, dispatched = Recorder(), []

    async def scrambled(x):          # a round holds each x once; the bigger x, the sooner it gets to run
        await asyncio.sleep(0.002 * (9 - x))
        return await rec.call(x)

    _bench(_entry(scrambled, benchmark_dataset=[{"x": i} for i in range(10)], benchmark_runs=2),
           random.Random(1), dispatched)
    start = dispatched[0]
    assert dispatched == [(start + k) % 10 for k in range(21)]
    assert sorted(rec.inputs) == sorted(dispatched) and rec.inputs != dispatched


def test_start_is_random():
    starts = set()
    for seed in range(12):
        rec = Recorder()
        _bench(_entry(rec.call, benchmark_dataset=[{"x": i} for i in range(5)], benchmark_runs=1),
               random.Random(seed))
        starts.add(rec.inputs[0])
    assert len(starts) > 1


def test_a_failing_call_fails_the_benchmark_with_its_traceback():
    rec = Recorder(fail_on=2)
    with pytest.raises(BenchmarkError, match=r"(?s)failed:.*ValueError: cannot handle 2"):
        _bench(_entry(rec.call, benchmark_dataset=[{"x": 1}, {"x": 2}], benchmark_runs=2))


@pytest.mark.parametrize("parallel, peak", [(True, 10), (False, 1)])
def test_concurrency_is_10_or_1_in_serial_mode(parallel, peak):
    rec = Recorder(delay=0.01)
    _bench(_entry(rec.call, benchmark_dataset=[{"x": 1}], benchmark_runs=2, allow_parallel_requests=parallel))
    assert rec.peak == peak and len(rec.inputs) == 1 + 2 * peak


def test_perf_is_the_best_round_and_median_is_reported():
    result = _bench(_entry(Recorder().call, benchmark_dataset=[{"x": 1}], benchmark_runs=3),
                    clock=_clock(9.0, 0.2, 0.02, 0.1))            # warm-up (not scored), then three rounds
    assert result.rounds == pytest.approx((10 * 100.0 / 0.2, 10 * 100.0 / 0.02, 10 * 100.0 / 0.1))
    assert result.perf == max(result.rounds) == result.rounds[1]      # workload 100 per call, 10 calls a round
    assert result.median == result.rounds[2]


@pytest.mark.parametrize("mode, calculator", [
    ("params", lambda x: x * 10.0),
    ("payload", lambda payload: payload["x"] * 10.0),
])
def test_workload_calculator_modes(mode, calculator):
    def sync_function(x):                 # sync functions run in a thread
        return x

    fast = _bench(_entry(sync_function, calculator, benchmark_dataset=[{"x": 1000}], benchmark_runs=2,
                         workload_mode=mode), clock=_clock(1.0, 2.0, 2.0))
    default = _bench(_entry(sync_function, None, benchmark_dataset=[{"x": 1000}], benchmark_runs=2),
                     clock=_clock(1.0, 2.0, 2.0))
    assert fast.rounds == (10 * 10000.0 / 2.0,) * 2              # the calculator's workload per call
    assert default.rounds == (10 * 100.0 / 2.0,) * 2             # the default workload per call


@pytest.mark.parametrize("calculator, message", [
    (lambda x: -1, "finite non-negative"),
    (lambda x: float("nan"), "finite non-negative"),
    (lambda x: "big", "finite non-negative"),
    (lambda x: True, "finite non-negative"),
    (lambda x: 1 / 0, "ZeroDivisionError"),
])
def test_bad_workloads_fail_clearly(calculator, message):
    with pytest.raises(BenchmarkError, match=message):
        _bench(_entry(Recorder().call, calculator, benchmark_dataset=[{"x": 1}], workload_mode="params"))


def test_generator_function_yielding_dicts_is_called_again_when_exhausted():
    rec, calls = Recorder(), []

    def gen():
        calls.append(1)
        yield {"x": 1}
        yield {"x": 2}

    dispatched = []
    _bench(_entry(rec.call, generator=gen, benchmark_runs=1), dispatched=dispatched)
    assert dispatched == [1, 2] * 5 + [1] and len(calls) == 6
    assert sorted(rec.inputs) == sorted(dispatched)


def test_generator_function_returning_one_dict_per_call():
    counter = iter(range(100))
    rec, dispatched = Recorder(), []
    _bench(_entry(rec.call, generator=lambda: {"x": next(counter)}, benchmark_runs=1), dispatched=dispatched)
    assert dispatched == list(range(11))
    assert sorted(rec.inputs) == dispatched


@pytest.mark.parametrize("options, generator, message", [
    ({"benchmark_dataset": []}, None, "is empty"),
    ({"benchmark_dataset": [{"x": 1}, 5]}, None, "must be dicts"),
    ({"benchmark_dataset": [{"x": 1}], "benchmark_runs": 0}, None, "at least 1"),
    ({}, None, "no benchmark dataset or generator"),
    ({}, lambda: iter([]), "produced no payloads"),
    ({}, lambda: [[1, 2]], "must be dicts"),
    ({}, lambda: 42, "must return a dict or yield dicts"),
])
def test_bad_benchmark_inputs_table(options, generator, message):
    with pytest.raises(BenchmarkError, match=message):
        _bench(_entry(Recorder().call, generator=generator, **options))
