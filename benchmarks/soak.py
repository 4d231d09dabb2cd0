"""Soak the local engine: many calls on loopback, memory of every process sampled over time.

    python benchmarks/soak.py            # full: ~100,000 calls, at most 5 minutes
    python benchmarks/soak.py --quick    # CI: ~10,000 calls, well under a minute

It deploys a small app (2 workers) in a private VAST_MAGIC_HOME (a temporary
folder unless VAST_MAGIC_HOME is set), runs calls at concurrency 32 (small
values, 64 KiB byte strings, printed output) and samples the RSS of the
client, the engine daemon and each worker from /proc/<pid>/status. It fails
(exit 1) on any wrong result or error, or when any process's peak RSS in the
last window grew by 10% or more over its peak in the first window (a window
is one minute, or a quarter of the run when it is shorter). It always tears
the deployment down and stops the engine by pid. ``--json`` prints the
figures as one JSON line.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from vast_magic import Deployment

app = Deployment(name="soak")
app.configure_autoscaling(cold_workers=2, max_workers=2)


@app.remote(benchmark_dataset=[{"i": 1, "blob": b""}], benchmark_runs=1, max_queue_time=1e6, timeout=30)
async def echo(i, blob):
    if i % 1000 == 0:
        print("soak call", i)
    return i, len(blob)


MAX_GROWTH = 0.10
CONCURRENCY = 32
BLOB = b"\x5a" * 65536


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def processes(home: Path) -> dict[str, int]:
    """client, engine and worker pids right now (workers are looked up in the engine's store)."""
    from vast_magic.backends.local import launcher, store
    found = {"client": os.getpid()}
    engine = launcher.running_engine(home)
    if engine:
        found["engine"] = engine["pid"]
    for worker in store.read_only(home, "workers", "name = ?", ("soak",)):
        found[f"worker {worker.pid}"] = worker.pid
    return found


class Sampler(threading.Thread):
    """Samples RSS every ``period`` s into (elapsed, name, kib) rows until stopped."""

    def __init__(self, home: Path, period: float):
        super().__init__(daemon=True)
        self.home, self.period, self.rows, self.done = home, period, [], threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        """A sample at the start and one at the end besides every period: a quick soak that finishes within
        its first window still has a first and a last reading for each process."""
        self.sample()
        while not self.done.wait(self.period):
            self.sample()
        self.sample()

    def sample(self) -> None:
        elapsed = time.monotonic() - self.started
        for name, pid in processes(self.home).items():
            kib = rss_kib(pid)
            if kib is not None:
                self.rows.append((elapsed, name, kib))


async def drive(calls: int, deadline: float) -> dict:
    """``calls`` calls at CONCURRENCY, stopping early at ``deadline``; counts errors and wrong results."""
    gate, counts = asyncio.Semaphore(CONCURRENCY), {"done": 0, "errors": 0, "wrong": 0}
    latencies = array.array("d", bytes(8 * calls))      # preallocated: our own bookkeeping must not look like a leak
    first_errors: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            if time.monotonic() > deadline:
                return
            blob = BLOB if i % 10 == 0 else b""
            started = time.perf_counter()
            try:
                value = await echo(i, blob)
                counts["wrong"] += value != (i, len(blob))
            except Exception as exc:       # counted and shown: a soak must see every failure
                counts["errors"] += 1
                first_errors[:3] = first_errors[:2] + [f"{type(exc).__name__}: {exc}"]
            latencies[counts["done"]] = time.perf_counter() - started
            counts["done"] += 1

    batch = 5000                           # bounded number of pending tasks at a time
    for start in range(0, calls, batch):
        await asyncio.gather(*(one(i) for i in range(start, min(calls, start + batch))))
        if time.monotonic() > deadline:
            break
    latencies = sorted(latencies[:counts["done"]])
    return {**counts, "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None, "first_errors": first_errors}


def growth(rows: list, window: float, total: float) -> dict[str, dict]:
    """Per process: peak RSS in the first and last window, and the relative growth."""
    out = {}
    for name in sorted({r[1] for r in rows}):
        first = [kib for t, n, kib in rows if n == name and t <= window]
        last = [kib for t, n, kib in rows if n == name and t >= total - window]
        if first and last:
            out[name] = {"first_kib": max(first), "last_kib": max(last),
                         "growth": round((max(last) - max(first)) / max(first), 4)}
    return out


def run(calls: int, max_seconds: float, period: float, home: Path) -> dict:
    from vast_magic.backends.local import launcher
    report = app.ensure_ready()
    sampler = Sampler(home, period)
    sampler.start()
    started = time.monotonic()
    try:
        counts = asyncio.run(drive(calls, started + max_seconds))
    finally:
        elapsed = time.monotonic() - started
        sampler.done.set()
        sampler.join(10)
        app.teardown()
        launcher.engine_stop(home)
    window = min(60.0, elapsed / 4)
    memory = growth(sampler.rows, window, elapsed)
    return {"calls": counts["done"], "errors": counts["errors"], "wrong": counts["wrong"],
            "first_errors": counts["first_errors"], "seconds": round(elapsed, 1),
            "calls_per_s": round(counts["done"] / elapsed, 1), "p50_ms": counts["p50_ms"], "p99_ms": counts["p99_ms"],
            "workers": len(report.workers), "window_s": round(window, 1), "memory": memory,
            "max_growth": max((m["growth"] for m in memory.values()), default=None)}


def verdict(result: dict, expected_calls: int) -> list[str]:
    problems = []
    if result["errors"] or result["wrong"]:
        problems.append(f"{result['errors']} errors and {result['wrong']} wrong results: {result['first_errors']}")
    if result["calls"] < expected_calls:
        problems.append(f"only {result['calls']} of {expected_calls} calls finished in time")
    if not any(name.startswith("worker") for name in result["memory"]) or "engine" not in result["memory"]:
        problems.append(f"memory was not sampled for the engine and workers: {sorted(result['memory'])}")
    for name, mem in result["memory"].items():
        if mem["growth"] >= MAX_GROWTH:
            problems.append(f"{name} RSS grew {mem['growth']:.1%} ({mem['first_kib']} -> {mem['last_kib']} KiB)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10,000 calls in under a minute (CI)")
    parser.add_argument("--calls", type=int, help="number of calls (default 100000, or 10000 with --quick)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    calls = args.calls or (10_000 if args.quick else 100_000)
    max_seconds, period = (45.0, 0.25) if args.quick else (300.0, 2.0)
    home = Path(os.environ.setdefault("VAST_MAGIC_HOME", tempfile.mkdtemp(prefix="vast-magic-soak-")))
    os.environ.setdefault("VAST_MAGIC_DISPLAY", "text")
    result = run(calls, max_seconds, period, home)
    problems = verdict(result, calls)
    result["problems"] = problems
    print("SOAK " + json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
