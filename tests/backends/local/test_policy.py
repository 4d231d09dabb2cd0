"""The local autoscaler policy as a specification: tables and simulated traces."""
from __future__ import annotations

import time

import pytest

from vast_magic.backends.local import policy
from vast_magic.backends.local.policy import (
    AutoscalingParams, LoadSnapshot, PolicyState, desired_workers, effective_params, local_defaults, needed_workers,
)
from vast_magic.errors import ConfigError

P = AutoscalingParams(cold_workers=1, max_workers=4, target_util=0.9, inactivity_timeout=300)


@pytest.mark.parametrize("load, expected", [
    (LoadSnapshot(), 0),
    (LoadSnapshot(waiting_calls=1), 1),                               # scale from zero
    (LoadSnapshot(waiting_calls=3, waiting_workload=300), 4),         # 300 / (100 * 0.9) -> 4
    (LoadSnapshot(inflight=90, perfs=(100,)), 1),
    (LoadSnapshot(inflight=91, perfs=(100,)), 2),
    (LoadSnapshot(inflight=1000, perfs=(1000, 1000)), 2),
    (LoadSnapshot(inflight=5, perfs=(50, 150)), 1),
])
def test_needed_workers(load, expected):
    assert needed_workers(P, load) == expected


@pytest.mark.parametrize("params, load, now, state, expected", [
    (P, LoadSnapshot(), 0, PolicyState(), (1, PolicyState(1, 0))),                        # keep cold workers
    (P, LoadSnapshot(inflight=10_000, perfs=(100,)), 5, PolicyState(1, 0), (4, PolicyState(4, 5))),  # cap at max
    (P, LoadSnapshot(), 100, PolicyState(4, 5), (4, PolicyState(4, 5))),                   # not idle long enough
    (P, LoadSnapshot(), 305, PolicyState(4, 5), (1, PolicyState(1, 305))),                 # idle -> cold
    (P, LoadSnapshot(inflight=150, perfs=(100,) * 4), 305, PolicyState(4, 5), (2, PolicyState(2, 305))),
    (AutoscalingParams(cold_workers=0, max_workers=2), LoadSnapshot(waiting_calls=1), 0, PolicyState(0, 0),
     (1, PolicyState(1, 0))),
    (AutoscalingParams(cold_workers=0, max_workers=2, inactivity_timeout=0), LoadSnapshot(), 1, PolicyState(1, 0),
     (0, PolicyState(0, 1))),
    (P, LoadSnapshot(), 7, PolicyState(3, None), (3, PolicyState(3, 7))),                  # unknown history: wait
])
def test_desired_workers(params, load, now, state, expected):
    assert desired_workers(params, load, now, state) == expected


@pytest.mark.parametrize("user, cpus, expected", [
    ({}, 8, AutoscalingParams(1, 4, 0.9, 300.0)),
    ({}, 2, AutoscalingParams(1, 2, 0.9, 300.0)),
    ({"cold_workers": 3}, 2, AutoscalingParams(3, 3, 0.9, 300.0)),
    ({"max_workers": 8, "target_util": 0.5, "min_load": 10}, 2, AutoscalingParams(1, 8, 0.5, 300.0)),
    ({"inactivity_timeout": 0}, 1, AutoscalingParams(1, 1, 0.9, 0.0)),
    ({"cold_workers": 0}, 8, AutoscalingParams(0, 4, 0.9, 300.0)),
    ({"max_workers": 16}, 2, AutoscalingParams(1, 16, 0.9, 300.0)),
    ({"cold_workers": 6, "max_workers": None}, 2, AutoscalingParams(6, 6, 0.9, 300.0)),   # None: not set
])
def test_effective_params(user, cpus, expected):
    assert effective_params(user, cpus) == expected


@pytest.mark.parametrize("user", [
    {"cold_workers": 5, "max_workers": 2},
    {"max_workers": 0},
    {"target_util": 1.5},
    {"target_util": 0},
    {"inactivity_timeout": -1},
    {"cold_workers": "many"},
])
def test_effective_params_rejects(user):
    with pytest.raises(ConfigError):
        effective_params(user, 4)


def test_local_defaults_cap_at_four():
    assert local_defaults(64).max_workers == 4 and local_defaults(1).max_workers == 1


def test_local_defaults_are_documented_in_the_module_docstring():
    doc = policy.__doc__
    defaults = local_defaults(64)
    for key in ("cold_workers", "target_util", "inactivity_timeout"):
        assert f"{key}={getattr(defaults, key):g}" in doc
    assert "max_workers=min(4, cpus)" in doc


def simulate(params, arrivals, perf=100.0, start_delay=2, dt=1.0):
    """Discrete simulation: arrivals[t] workload units arrive at tick t; returns counts per tick.

    Workers become able to serve ``start_delay`` ticks after the policy asks
    for them; the queue drains at ``perf * dt`` per serving worker.
    """
    state, queue, serving, counts = PolicyState(), 0.0, 0, []
    pending: list[tuple[int, int]] = []
    for t, work in enumerate(arrivals):
        queue += work
        load = LoadSnapshot(inflight=queue if serving else 0.0, waiting_calls=0 if serving else int(queue > 0),
                            waiting_workload=0.0 if serving else queue, perfs=(perf,) * serving)
        want, state = desired_workers(params, load, t * dt, state)
        if want < serving:
            serving, pending = want, []
        elif want > serving + sum(n for _, n in pending):
            pending.append((t + start_delay, want - serving - sum(n for _, n in pending)))
        serving += sum(n for due, n in pending if due <= t)
        pending = [(due, n) for due, n in pending if due > t]
        queue = max(0.0, queue - serving * perf * dt)
        counts.append(serving)
    return counts


def test_burst_then_idle_scales_up_then_back_to_cold():
    params = AutoscalingParams(cold_workers=1, max_workers=4, target_util=0.9, inactivity_timeout=30)
    counts = simulate(params, [0] * 5 + [400] * 10 + [0] * 60)
    assert counts[3] == 1                      # cold worker before the burst
    assert max(counts[5:20]) == 4              # burst reaches max_workers, never more
    assert counts[20] == 4                     # not yet: inactivity timeout not reached
    assert counts[-1] == 1                     # back to cold after the timeout


def test_steady_load_holds_a_stable_count():
    params = AutoscalingParams(cold_workers=1, max_workers=10, target_util=0.9, inactivity_timeout=60)
    counts = simulate(params, [250] * 200)
    assert max(counts) <= 10                   # the start-up backlog may ask for more, never above max
    assert set(counts[100:]) == {3}            # 250/s at 100/s per worker, 90% util -> 3 workers


def test_scale_from_zero_and_back():
    params = AutoscalingParams(cold_workers=0, max_workers=2, target_util=0.9, inactivity_timeout=10)
    counts = simulate(params, [0] * 5 + [50] + [0] * 30)
    assert counts[:5] == [0] * 5
    assert max(counts) >= 1
    assert counts[-1] == 0


def test_simulation_at_scale():
    """10,000 workers, 1,000,000 requests (cost 100 each); how fast it runs is printed, not asserted."""
    params = AutoscalingParams(cold_workers=10, max_workers=10_000, target_util=0.9, inactivity_timeout=20)
    requests_per_tick = [0] * 5 + [20_000] * 50 + [0] * 45        # 1,000,000 requests
    assert sum(requests_per_tick) == 1_000_000
    started = time.perf_counter()
    counts = simulate(params, [n * 100.0 for n in requests_per_tick], perf=250.0)
    elapsed = time.perf_counter() - started
    assert max(counts) == 10_000               # the burst needs more than max: capped
    assert counts[-1] == 10                    # idle again: cold workers only
    print(f"simulated 1,000,000 requests on up to 10,000 workers in {elapsed:.2f}s")
