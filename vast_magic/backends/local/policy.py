"""The local autoscaler policy: a pure function from load to a worker count.

No I/O and no clock inside: the engine passes ``now`` and the last
``PolicyState`` in and keeps the returned state, so the policy can be tested
with tables and simulated over millions of requests without processes.

Local defaults (DESIGN.md "Local engine"; local only, never sent to Vast),
used for every key the user did not set with ``configure_autoscaling``:

    cold_workers=1          one warm worker, ready when ensure_ready returns
    max_workers=min(4, cpus) raised to cold_workers if those alone ask for more
    target_util=0.9         scale out before workers are saturated
    inactivity_timeout=300  seconds without need before scaling down

Rule (documented, local only, never sent to Vast):
- capacity of one worker = its benchmark ``perf`` (workload per second);
- the in-flight workload (running + queued on workers, plus calls waiting
  for a first worker) should drain within one second at ``target_util`` of
  the capacity: ``needed = ceil(workload / (mean_perf * target_util))``;
- calls waiting while no worker is ready always need at least one worker
  (scale from zero);
- never below ``cold_workers``, never above ``max_workers``;
- scale up at once, scale down (to what is needed, at least ``cold_workers``)
  only after ``inactivity_timeout`` seconds in which the current count was
  never fully needed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Mapping

from ...errors import ConfigError

__all__ = [
    "DEFAULT_PERF", "AutoscalingParams", "LoadSnapshot", "PolicyState", "local_defaults", "effective_params",
    "needed_workers", "desired_workers"
]

#: perf assumed for workers that have not reported one (only the ratio matters)
DEFAULT_PERF = 100.0


@dataclass(frozen=True)
class AutoscalingParams:
    cold_workers: int = 1
    max_workers: int = 4
    target_util: float = 0.9
    inactivity_timeout: float = 300.0


@dataclass(frozen=True)
class LoadSnapshot:
    """What the engine knows about one deployment at one instant."""

    inflight: float = 0.0              # workload running or queued on workers
    waiting_calls: int = 0             # calls waiting for a first ready worker
    waiting_workload: float = 0.0      # their workload
    perfs: tuple[float, ...] = ()      # perf of each ready worker


@dataclass(frozen=True)
class PolicyState:
    workers: int = 0                   # the count decided last time
    last_needed: float | None = None   # when the current count was last fully needed


def local_defaults(cpus: int | None = None) -> AutoscalingParams:
    """DESIGN.md defaults: cold 1, max min(4, cpus), target 0.9, inactivity 300 s."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return AutoscalingParams(cold_workers=1, max_workers=max(1, min(4, cpus)))


_KNOWN = ("cold_workers", "max_workers", "target_util", "inactivity_timeout")


def effective_params(user: Mapping[str, object], cpus: int | None = None) -> AutoscalingParams:
    """Merge the keys the user set over the local defaults; bad values are ConfigError."""
    base = local_defaults(cpus)
    given = {k: user[k] for k in _KNOWN if user.get(k) is not None}
    try:
        params = replace(base, **{k: (int(v) if k.endswith("workers") else float(v)) for k, v in given.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"autoscaling {given!r} is invalid ({exc}); use numbers for {', '.join(_KNOWN)}.") from None
    if "max_workers" not in given and params.cold_workers > params.max_workers:
        params = replace(params, max_workers=params.cold_workers)
    if not (0 <= params.cold_workers <= params.max_workers and params.max_workers >= 1):
        raise ConfigError(f"autoscaling needs 0 <= cold_workers <= max_workers and max_workers >= 1; "
                          f"got cold_workers={params.cold_workers}, max_workers={params.max_workers}.")
    if not (0 < params.target_util <= 1) or params.inactivity_timeout < 0:
        raise ConfigError("autoscaling target_util must be in (0, 1] and inactivity_timeout >= 0 seconds.")
    return params


def needed_workers(params: AutoscalingParams, load: LoadSnapshot) -> int:
    """Workers the current load needs, ignoring cold/max bounds."""
    workload = load.inflight + load.waiting_workload
    if workload <= 0 and load.waiting_calls == 0:
        return 0
    perf = (sum(load.perfs) / len(load.perfs)) if load.perfs else DEFAULT_PERF
    needed = math.ceil(workload / (max(perf, 1e-9) * params.target_util)) if workload > 0 else 0
    return max(needed, 1)


def desired_workers(params: AutoscalingParams, load: LoadSnapshot, now: float,
                    state: PolicyState) -> tuple[int, PolicyState]:
    """The worker count to run now, and the state to pass next time."""
    target = min(params.max_workers, max(params.cold_workers, needed_workers(params, load)))
    if target >= state.workers:
        return target, PolicyState(workers=target, last_needed=now)
    if state.last_needed is None:              # first look at running workers: start the clock
        return state.workers, PolicyState(workers=state.workers, last_needed=now)
    if now - state.last_needed >= params.inactivity_timeout:
        return target, PolicyState(workers=target, last_needed=now)
    return state.workers, state
