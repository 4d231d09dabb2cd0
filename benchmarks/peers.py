"""Ray and ipyparallel measured the way vast_magic is, inside the peers venv.

Run by the driver as ``benchmarks/.peers/bin/python -m benchmarks.peers --peer ray|ipyparallel``
(cwd = repository root, so ``benchmarks.measure`` is importable; nothing of
vast_magic is). Each peer gets a fresh local cluster of 2 workers started and
stopped by this process only (``ray.shutdown()``, ``cluster.stop_cluster_sync()``).
Prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import numpy as np

from benchmarks.measure import descendants, emit, latency_ms, median_of, rss_mib, throughput

ARRAY_BYTES = 100 << 20


def noop():
    return None


def echo(value):
    return value


def worker_pid():
    import os                      # ipyparallel ships the code without this module's globals
    return os.getpid()


def checked_round_trip(send, array: np.ndarray) -> float:
    started = time.perf_counter()
    back = send(array)
    elapsed = time.perf_counter() - started
    if back.shape != array.shape or back[-1] != array[-1] or back[0] != array[0]:
        raise AssertionError("the array came back different")
    return elapsed


def memory(worker_pids: set[int]) -> dict:
    """Idle RSS of the peer's own service processes (not workers) and the median worker RSS."""
    service = [p for p in descendants(os.getpid()) if p not in worker_pids]
    return {"engine_rss": sum(_rss_or_zero(p) for p in service),
            "worker_rss": statistics.median(rss_mib(p) for p in worker_pids)}


def _rss_or_zero(pid: int) -> float:
    try:
        return rss_mib(pid)
    except (OSError, RuntimeError):
        return 0.0


def measure(call_sync, call_async, send_array, only: set[str], quick: bool) -> dict:
    """The same three call metrics as benchmarks/vast_calls.py, with the same sizes."""
    scale, out = (0.2 if quick else 1.0), {}
    if "latency" in only:
        out["latency"] = latency_ms(call_sync, warmup=200, runs=int(3000 * scale))
    if "throughput" in only:
        asyncio.run(throughput(call_async, 64, 640))
        out["throughput"] = median_of(lambda: asyncio.run(throughput(call_async, 64, int(10240 * scale))), 3)
    if "array" in only:
        array = np.random.default_rng(0).random(ARRAY_BYTES // 8)
        checked_round_trip(send_array, array)
        out["array_s"] = median_of(lambda: checked_round_trip(send_array, array), 3 if quick else 7)
    return out


def run_ray(only: set[str], quick: bool) -> dict:
    import ray
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote_noop, remote_echo = ray.remote(noop), ray.remote(echo)
        ray.get(remote_noop.remote())
        out = {"cold_s": time.perf_counter() - started, "version": ray.__version__}
        if "rss" in only:                                     # idle, before any payload grew the workers
            pids = set(ray.get([ray.remote(worker_pid).remote() for _ in range(20)]))
            time.sleep(2.0)
            out.update(memory(pids))
        out.update(measure(lambda: ray.get(remote_noop.remote()), lambda: remote_noop.remote(),
                           lambda a: ray.get(remote_echo.remote(a)), only, quick))
        return out
    finally:
        ray.shutdown()


def run_ipyparallel(only: set[str], quick: bool) -> dict:
    import ipyparallel as ipp
    started = time.perf_counter()
    cluster = ipp.Cluster(n=2, log_level=40)
    try:
        client = cluster.start_and_connect_sync()
        client.wait_for_engines(2, timeout=120)
        direct, balanced = client[0], client.load_balanced_view()
        direct.apply_sync(noop)
        out = {"cold_s": time.perf_counter() - started, "version": ipp.__version__}
        if "rss" in only:
            pids = set(client[:].apply_sync(worker_pid))
            time.sleep(2.0)
            out.update(memory(pids))
        out.update(measure(lambda: direct.apply_sync(noop), lambda: asyncio.wrap_future(balanced.apply_async(noop)),
                           lambda a: direct.apply_sync(echo, a), only, quick))
        client.close()
        return out
    finally:
        cluster.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", choices=("ray", "ipyparallel"), required=True)
    parser.add_argument("--only", default="latency,throughput,array,rss")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    run = run_ray if args.peer == "ray" else run_ipyparallel
    emit(run(set(args.only.split(",")), args.quick))


if __name__ == "__main__":
    main()
