"""Scale-up timings for a deployment whose code imports numpy: one more worker wanted, until it is ready.

Run by the driver as ``python -m benchmarks.scaleup [--quick]`` with a private
``VAST_MAGIC_HOME`` and no engine running, twice: with the engine's
``worker_fork`` setting off (``VAST_MAGIC_WORKER_FORK=0``: every worker a
fresh interpreter) and on (workers forked from the version's template). What
the engine really did is read back from ``status()`` (each worker's
``start``), so the table says which path was measured. Through the public API,
as a user scales:

- scale-up: the engine is asked for a second worker (the tier 1 request
  that ``configure_autoscaling(cold_workers=2)`` + ``ensure_ready()`` sends,
  made straight through the local backend so capture and packaging are not
  counted), timed from the request to its answer, which comes once that
  worker is ready; then back to one worker, waiting until the extra one is
  gone (median of 5, 9 in a full run, after one untimed round: the first
  worker of a version starts fresh and its template boots after it);
- scale to zero and back: ``cold_workers=0`` and ``inactivity_timeout=0``;
  once no worker runs, ``mean.call(...)`` from the call to its result (median
  of 3, 5 in a full run).

Prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import emit
from vast_magic import Deployment, loop, settings
from vast_magic.backends.base import DeployPlan
from vast_magic.backends.local.backend import LocalBackend

app = Deployment(name="bench-scale")
app.configure_autoscaling(cold_workers=1, max_workers=2, inactivity_timeout=0)


@app.remote(benchmark_dataset=[{"n": 1000}], benchmark_runs=2)
async def mean(n: int) -> float:
    return float(np.arange(n).mean())


def _live_workers() -> list:
    return [w for w in app.status().workers if w.state not in ("failed", "stopped")]


def _wait_for_count(count: int, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _live_workers()
        if len(workers) == count and all(w.state == "ready" for w in workers):
            return workers
        time.sleep(0.05)
    raise RuntimeError(f"the deployment did not settle at {count} worker(s) within {timeout:g}s: {_live_workers()}")


class Scaler:
    """Tier 1 requests to the engine for the deployed version, as ``ensure_ready`` sends them."""

    def __init__(self, folder: Path):
        self.backend = LocalBackend(Path(settings.home()))
        self.manifest = app.manifest()
        self.bundle = app.build_bundle(folder / "bundle.tar.gz")

    def cold_workers(self, count: int) -> None:
        plan = DeployPlan(name=app.name, tag=app.tag, tier=1, reasons=(f"autoscaling: cold_workers -> {count}",),
                          manifest=self.manifest, bundle_path=str(self.bundle.path), env=(), secrets=(),
                          autoscaling={"cold_workers": count, "max_workers": 2, "inactivity_timeout": 0}, image=None)
        loop.run_sync(self.backend.apply(plan, lambda event: None))


def scale_up_once(scaler: Scaler) -> tuple[float, str | None]:
    """Seconds from asking the engine for a second worker to its being ready; how the engine started it."""
    before = {w.id for w in _wait_for_count(1)}
    started = time.perf_counter()
    scaler.cold_workers(2)
    seconds = time.perf_counter() - started
    [new] = [w for w in _wait_for_count(2) if w.id not in before]
    scaler.cold_workers(1)
    return seconds, new.start


def zero_and_back_once() -> tuple[float, str | None]:
    """Seconds from a call on a deployment scaled to zero to its result; how the worker was started."""
    _wait_for_count(0)
    started = time.perf_counter()
    assert mean.call(5) == 2.0
    seconds = time.perf_counter() - started
    return seconds, next((w.start for w in _live_workers()), None)


def _path(starts: list) -> str:
    """The one start path seen, or "mixed: ..." when the runs disagree (a fallback happened)."""
    kinds = sorted({str(s) for s in starts})
    return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(f"{k} x{starts.count(k)}" for k in kinds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, zero_runs = (5, 3) if args.quick else (9, 5)
    app.ensure_ready()
    assert mean.call(4) == 1.5
    with tempfile.TemporaryDirectory() as folder:
        scaler = Scaler(Path(folder))
        scale_up_once(scaler)               # untimed: the version's template boots once its first worker is ready
        scale_ups = [scale_up_once(scaler) for _ in range(runs)]
    app.configure_autoscaling(cold_workers=0)
    app.ensure_ready()
    zeros = [zero_and_back_once() for _ in range(zero_runs)]
    app.teardown()
    emit({"scale_up_ms": statistics.median(s for s, _ in scale_ups) * 1000,
          "scale_up_all_ms": [round(s * 1000, 1) for s, _ in scale_ups],
          "scale_up_start": _path([start for _, start in scale_ups]),
          "zero_and_back_ms": statistics.median(s for s, _ in zeros) * 1000,
          "zero_and_back_all_ms": [round(s * 1000, 1) for s, _ in zeros],
          "zero_and_back_start": _path([start for _, start in zeros]), "runs": runs, "zero_runs": zero_runs})


if __name__ == "__main__":
    main()
