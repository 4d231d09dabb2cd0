"""The local engine end to end: real daemon, real workers, sockets on 127.0.0.1 only."""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.backends.local.engine_harness import make_bundle, pid_gone, plan
from vast_magic import events
from vast_magic.errors import RemoteError
from vast_magic.image import Image


def test_cold_deploy_then_call(harness):
    bundle = make_bundle(harness.folder)
    started = time.perf_counter()
    result = harness.apply(plan(bundle, image=Image("vastai/base:1").apt_get("ffmpeg").spec()))
    assert harness.call("square", 7) == 49
    cold = time.perf_counter() - started
    print(f"cold deploy to first result: {cold:.2f}s")
    assert result.endpoint == "local://demo/default"
    assert len(result.workers) == 1 and result.workers[0].state == "ready"
    assert result.benchmark and result.benchmark > 0
    states = [e.state for e in harness.events if isinstance(e, events.WorkerState)]
    assert states[0] == "starting" and states[-1] == "ready"
    assert any(isinstance(e, events.BenchmarkScored) for e in harness.events)
    with pytest.raises(ValueError) as info:
        harness.call("boom", "bad input")
    assert isinstance(info.value, RemoteError) and "bad input" in str(info.value)
    assert "raise ValueError" in info.value.remote_traceback
    status = harness.run(harness.backend.status("demo", "default"))
    assert status.not_applied_locally == result.not_applied
    assert result.not_applied[:2] == ("image vastai/base:1 (local workers run this machine's Python)", "apt packages: ffmpeg")


def test_tier0_and_tier1_keep_the_same_processes(harness):
    bundle = make_bundle(harness.folder)
    harness.apply(plan(bundle))
    first = {w.pid for w in harness.workers()}
    started = time.perf_counter()
    harness.apply(plan(bundle, tier=0))
    tier0 = time.perf_counter() - started
    print(f"tier-0 apply: {tier0 * 1000:.1f} ms")
    assert {w.pid for w in harness.workers()} == first
    harness.apply(plan(bundle, tier=1, autoscaling={"cold_workers": 2, "max_workers": 2}))
    pids = {w.pid for w in harness.workers()}
    assert first < pids and len(pids) == 2          # same first worker, one more started for cold_workers=2
    status = harness.run(harness.backend.status("demo", "default"))
    assert status.state == "ready" and sum(w.state == "ready" for w in status.workers) == 2


def test_noop_call_latency(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    harness.call("version")
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        assert harness.call("version") == "v1"
        timings.append(time.perf_counter() - started)
    timings.sort()
    p50 = timings[len(timings) // 2]
    print(f"no-op call p50: {p50 * 1000:.2f} ms, p95: {timings[190] * 1000:.2f} ms")   # the figure: benchmarks/


def _keep_calling(harness, function, *args, threads=3):
    """Callers in background threads until stopped; returns (stop, results, errors, joiners)."""
    stop, results, errors = threading.Event(), [], []

    def caller():
        while not stop.is_set():
            try:
                results.append(harness.call(function, *args))
            except Exception as exc:  # every failure is a test failure, collected for the message
                errors.append(exc)

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()

    def finish():
        stop.set()
        for thread in workers:
            thread.join(30)
        return results, errors
    return finish


def test_tier2_rolling_replacement_has_zero_failed_calls(harness):
    scaling = {"cold_workers": 2, "max_workers": 2}
    harness.apply(plan(make_bundle(harness.folder, "v1"), autoscaling=scaling))
    old = {(w.pid, w.start_time) for w in harness.workers()}
    finish = _keep_calling(harness, "slow", 0.05)
    time.sleep(0.5)
    result = harness.apply(plan(make_bundle(harness.folder, "v2"), tier=2, autoscaling=scaling))
    assert {w.state for w in result.workers} == {"ready"} and len(result.workers) == 2
    harness.wait_for(lambda: all(pid_gone(*p) for p in old), what="old workers to stop")
    time.sleep(0.3)
    results, errors = finish()
    assert errors == []
    assert "v1" in results and "v2" in results
    assert results[-1] == "v2" and harness.call("version") == "v2"
    assert len(harness.workers()) == 2


def test_tier3_reapplies_env_and_secrets(harness):
    bundle = make_bundle(harness.folder)
    harness.apply(plan(bundle, env=[("MODE", "slow")], secrets=[("TOKEN", "s1")]))
    assert harness.call("env", "MODE") == "slow" and harness.call("env", "TOKEN") == "s1"
    old = {w.pid for w in harness.workers()}
    harness.apply(plan(bundle, tier=3, env=[("MODE", "fast")], secrets=[("TOKEN", "s2")]))
    harness.wait_for(lambda: harness.call("env", "MODE") == "fast", what="new env")
    assert harness.call("env", "TOKEN") == "s2"
    harness.wait_for(lambda: not old & {w.pid for w in harness.workers()}, what="old worker drained")


def test_tier4_new_tag_serves_next_to_the_old_one(harness):
    harness.apply(plan(make_bundle(harness.folder, "v1")))
    harness.apply(plan(make_bundle(harness.folder, "v2"), tag="canary"))
    assert harness.call("version") == "v1"
    assert harness.call("version", tag="canary") == "v2"
    listed = harness.run(harness.backend.list_deployments())
    assert [(s.name, s.tag, s.state) for s in listed] == [("demo", "canary", "ready"), ("demo", "default", "ready")]
    harness.run(harness.backend.teardown("demo", "canary"))
    harness.run(harness.backend.teardown("demo", "canary"))          # idempotent
    assert harness.call("version") == "v1"
    assert harness.run(harness.backend.status("demo", "canary")).state == "stopped"
    harness.run(harness.backend.teardown("demo", None))
    assert harness.workers() == [] and harness.run(harness.backend.list_deployments()) == []


def test_no_wait_returns_once_accepted(harness):
    result = harness.apply(plan(make_bundle(harness.folder), wait=False))
    assert result.endpoint == "local://demo/default" and result.workers == ()
    harness.wait_for(lambda: harness.run(harness.backend.status("demo", "default")).state == "ready",
                     what="background deploy")
    assert harness.call("square", 3) == 9


def test_not_applied_locally_lists_image_features():
    from vast_magic.backends.local.backend import not_applied_locally
    from vast_magic.query import gpu_ram
    image = Image("vastai/base:1").apt_get("ffmpeg").publish_port(8080).require(gpu_ram >= 24).venv("/venv/main")
    assert not_applied_locally(image.spec()) == (
        "image vastai/base:1 (local workers run this machine's Python)", "apt packages: ffmpeg",
        "python mode venv:/venv/main", "published ports: 3000/tcp, 8080/tcp",
        "GPU filters: gpu_ram>=24 rentable=true rented=false verified=true")
    assert not_applied_locally(Image("vastai/base:1").spec())[0].startswith("image vastai/base:1")

def test_big_arrays_cross_through_shared_memory_and_leave_nothing(harness):
    """4 MiB each way: argument and result go through /dev/shm segments that the receivers take over, keep
    for their next big buffer, and that go with the engine."""
    import numpy as np
    from vast_magic.backends.local import launcher
    from vast_magic.runtime import shm, shm_reuse
    harness.apply(plan(make_bundle(harness.folder)))
    array = np.arange(4 << 17, dtype=np.float64)
    for _ in range(3):
        result = harness.call("square", array)
        assert np.array_equal(result, array * array)
    result[:] = 0                                            # mapped copy-on-write: still a normal writable array
    directory = shm.segment_dir(harness.home)
    names = os.listdir(directory)
    held = [n for n in names if n.startswith(shm_reuse.HELD)]
    kept = [n for n in names if n.startswith(shm_reuse.KEPT)]
    # none in flight: this process holds the result (the worker may still hold its last argument a moment)
    assert 1 <= len(held) <= 2 and len(held) + len(kept) == len(names) <= 2 + 2 * shm_reuse.KEEP_FILES
    assert launcher.engine_stop(harness.home)["stopped"] is True
    assert not os.path.exists(directory)
