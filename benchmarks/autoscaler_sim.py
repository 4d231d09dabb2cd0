"""The local autoscaler policy simulated: up to 10,000 workers, 1,000,000 requests.

The engine's pure ``desired_workers`` decides every 100 ms of simulated time
from what the engine would see (in-flight workload, calls waiting for a first
worker, the perf of each ready worker). Requests arrive one by one at random
times in phases (idle, ramp, a burst far above capacity, steady, tail, idle);
each costs 100 workload units, each worker serves 80-120 units per second and
takes 1 s to start. The run checks what a user relies on: every request is
served, the count never passes ``max_workers``, the burst scales to the cap,
and after ``inactivity_timeout`` of quiet the count returns to ``cold_workers``.
Run: ``python -m benchmarks.autoscaler_sim``; prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import collections
import random
import time

from benchmarks.measure import emit, percentile
from vast_magic.backends.local.policy import AutoscalingParams, LoadSnapshot, PolicyState, desired_workers

TICK = 0.1
COST = 100.0
STARTUP_S = 1.0
PHASES = ((30, 0), (60, 500), (60, 9000), (100, 4000), (60, 500), (400, 0))   # (seconds, requests per second)
PARAMS = AutoscalingParams(cold_workers=10, max_workers=10_000, target_util=0.9, inactivity_timeout=300.0)


def arrivals_per_tick(rng: random.Random) -> list[int]:
    """Each request's own arrival time, counted into ticks (1,000,000 requests in all)."""
    total_s = sum(seconds for seconds, _ in PHASES)
    counts = [0] * int(round(total_s / TICK))
    start = 0.0
    for seconds, rate in PHASES:
        for _ in range(int(seconds * rate)):
            counts[int((start + rng.random() * seconds) / TICK)] += 1
        start += seconds
    return counts


class Cluster:
    """Workers (ready with a perf, or starting until a time) and a FIFO of waiting requests."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.ready: list[float] = []
        self.starting: list[float] = []
        self.queue: collections.deque = collections.deque()      # [arrival tick, requests]
        self.queued = 0
        self.waits: list[float] = []

    def scale_to(self, target: int, now: float) -> None:
        have = len(self.ready) + len(self.starting)
        if target > have:
            self.starting += [now + STARTUP_S] * (target - have)
        elif target < have:
            drop = have - target
            cut = min(drop, len(self.starting))
            del self.starting[len(self.starting) - cut:]
            del self.ready[len(self.ready) - (drop - cut):]

    def advance(self, tick: int, arrived: int) -> None:
        now = tick * TICK
        started = sum(1 for t in self.starting if t <= now)
        if started:
            self.starting = [t for t in self.starting if t > now]
            self.ready += [self.rng.uniform(80, 120) for _ in range(started)]
        if arrived:
            self.queue.append([tick, arrived])
            self.queued += arrived
        budget = int(sum(self.ready) * TICK / COST + self.rng.random())
        while budget and self.queue:
            first = self.queue[0]
            served = min(budget, first[1])
            self.waits += [(tick - first[0]) * TICK] * min(served, 50)   # a sample per batch keeps memory small
            first[1] -= served
            budget -= served
            self.queued -= served
            if not first[1]:
                self.queue.popleft()

    def snapshot(self) -> LoadSnapshot:
        waiting = self.queued if not self.ready else 0
        return LoadSnapshot(inflight=(self.queued - waiting) * COST, waiting_calls=waiting,
                            waiting_workload=waiting * COST, perfs=tuple(self.ready))


def simulate(seed: int = 0) -> dict:
    started = time.perf_counter()                  # the whole run, generating the requests included
    rng = random.Random(seed)
    arrivals = arrivals_per_tick(rng)
    cluster, state, counts = Cluster(rng), PolicyState(), []
    for tick, arrived in enumerate(arrivals):
        cluster.advance(tick, arrived)
        target, state = desired_workers(PARAMS, cluster.snapshot(), tick * TICK, state)
        cluster.scale_to(target, tick * TICK)
        counts.append(len(cluster.ready) + len(cluster.starting))
    elapsed = time.perf_counter() - started
    requests = sum(arrivals)
    assert requests == 1_000_000 and cluster.queued == 0, (requests, cluster.queued)
    assert max(counts) <= PARAMS.max_workers and counts[-1] == PARAMS.cold_workers, (max(counts), counts[-1])
    return {"seconds": elapsed, "requests": requests, "ticks": len(arrivals), "peak_workers": max(counts),
            "final_workers": counts[-1], "wait_p50_s": percentile(cluster.waits, 50),
            "wait_p99_s": percentile(cluster.waits, 99)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    emit(simulate())


if __name__ == "__main__":
    main()
