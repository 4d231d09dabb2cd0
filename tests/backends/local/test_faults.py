"""Faults with real processes: workers SIGKILLed under load, bad versions that must not replace a good one.

Every test runs a real engine daemon and real workers in a private home; the
``harness`` fixture proves at the end that no process it ever saw is left.
"""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.runtime.worker_harness import remote_spec
from tests.backends.local.engine_harness import APP as ENGINE_APP, make_bundle, plan
from vast_magic import events
from vast_magic.backends.base import CallSpec
from vast_magic.errors import DeployError, WorkerLostError

APP = ENGINE_APP.format(version="v1") + '''
async def echo(i, delay):
    await asyncio.sleep(delay)
    return (i, os.getpid())
'''
REMOTES = [remote_spec("square", benchmark_dataset=[{"x": 2}], benchmark_runs=1), remote_spec("echo")]
CALLS, CONCURRENCY, KILL_AFTER = 1000, 32, 300
CALL_TIMEOUT = 20.0


async def _storm(backend, retries: int, serving: set, killed: list,
                 notes: list) -> list[tuple[int, str, object, float]]:
    """CALLS echo calls at CONCURRENCY; once KILL_AFTER have finished, SIGKILL the worker that answered the
    last of them (pid into ``killed``): the one calls go to, even when the benchmark under load scored the
    two workers so differently that the other one gets none. Retry notes go into ``notes``."""
    loop, gate, finished = asyncio.get_running_loop(), asyncio.Semaphore(CONCURRENCY), [0]
    spec = CallSpec("demo", "default", "echo", timeout=CALL_TIMEOUT, max_queue_time=1e6, retries=retries, cost=1.0)

    async def one(i: int):
        async with gate:
            started = loop.time()
            try:
                outcome = await backend.call(spec, (i, 0.01), {}, {})
                kind, value = ("ok", outcome.value) if outcome.error is None else ("remote", outcome.error)
                notes.extend(outcome.retries)
            except WorkerLostError as exc:
                kind, value = "lost", exc
            except Exception as exc:           # anything else is a finding: recorded, asserted on below
                kind, value = "other", exc
            finished[0] += 1
            if finished[0] == KILL_AFTER:
                killed.append(value[1] if kind == "ok" and value[1] in serving else min(serving))
                os.kill(killed[0], signal.SIGKILL)
            return i, kind, value, loop.time() - started

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CALLS))), 120)


@pytest.mark.parametrize("retries", [0, 2])
def test_worker_sigkilled_during_a_thousand_concurrent_calls(harness, retries):
    harness.apply(plan(make_bundle(harness.folder, app=APP, remotes=REMOTES),
                       autoscaling={"cold_workers": 2, "max_workers": 2}))
    serving = {w.pid for w in harness.workers() if w.state == "ready"}
    assert len(serving) == 2
    killed: list[int] = []
    notes: list[str] = []
    results = harness.run(_storm(harness.backend, retries, serving, killed, notes), timeout=150)
    (victim,) = killed

    harness.wait_for(lambda: len({w.pid for w in harness.workers() if w.state == "ready"} - {victim}) == 2,
                     timeout=30, what="a replacement worker, ready by itself")
    ours = serving | {w.pid for w in harness.workers()}            # the replacement may already have served some
    assert [r[0] for r in results] == list(range(CALLS))           # one outcome per call, no duplicates
    wrong = [(i, kind, value) for i, kind, value, _ in results
             if kind not in ("ok", "lost") or (kind == "ok" and (value[0] != i or value[1] not in ours))]
    assert not wrong, wrong[:5]
    lost = [value for _, kind, value, _ in results if kind == "lost"]
    slowest = max(elapsed for *_, elapsed in results)
    print(f"retries={retries}: {CALLS} calls, {len(lost)} WorkerLostError, slowest {slowest:.2f}s")
    assert slowest < 2 * CALL_TIMEOUT                                # nothing hung (a hung call waits 150 s)
    if retries:
        assert lost == []                                            # retried transparently,
        assert notes and all((r.what, r.attempt, r.max_attempts, r.delay) == ("echo", 1, 3, 0.0) for r in notes)  # visibly
    else:
        assert lost, "the kill hit no call in flight: the test proved nothing"
        assert notes == []
        assert all("retries=N" in str(exc) and "echo" in str(exc) for exc in lost)
    assert {harness.call("echo", 7, 0.0)[0] for _ in range(10)} == {7}


BROKEN = {
    "context __aenter__ raises": (
        "class Model:\n"
        "    async def __aenter__(self):\n"
        "        raise RuntimeError('model weights missing')\n"
        "    async def __aexit__(self, *exc):\n"
        "        return False\n"
        "async def version():\n    return 'v2'\n",
        [remote_spec("version")], "model weights missing"),
    "benchmark raises": (
        "class Model:\n"
        "    async def __aenter__(self):\n        return self\n"
        "    async def __aexit__(self, *exc):\n        return False\n"
        "async def square(x):\n    raise ArithmeticError('benchmark input rejected')\n",
        [remote_spec("square", benchmark_dataset=[{"x": 2}], benchmark_runs=1)], "benchmark input rejected"),
    "worker exits at start-up": (
        "import os, sys\nsys.stderr.write('exiting on purpose: no GPU\\n'); sys.stderr.flush()\nos._exit(3)\n",
        [remote_spec("version")], "exiting on purpose: no GPU"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_version_fails_visibly_and_the_previous_keeps_serving(harness, case):
    app, remotes, words = BROKEN[case]
    harness.apply(plan(make_bundle(harness.folder, "v1")))
    before = {w.pid for w in harness.workers()}
    harness.events.clear()
    with pytest.raises(DeployError) as info:
        harness.apply(plan(make_bundle(harness.folder, "v2", app=app, remotes=remotes, contexts=(
            [{"name": "Model", "args": [], "kwargs": {}}] if "class Model" in app else ())), tier=2))
    assert words in str(info.value) and "previous version keeps serving" in str(info.value)
    failed = [e for e in harness.events if isinstance(e, events.Failed)]
    assert failed and words in failed[-1].message                       # in the progress events
    assert any(isinstance(e, events.WorkerState) and e.state == "failed" and words in (e.error or "")
               for e in harness.events)
    status = harness.run(harness.backend.status("demo", "default"))
    assert status.state == "ready"                                      # v1 serves ...
    assert any(w.state == "failed" and words in (w.error or "") for w in status.workers)   # ... v2's failure shows
    assert harness.call("version") == "v1"
    assert {w.pid for w in harness.workers()} == before


def _established_to(port: int) -> int:
    """How many of this process's TCP sockets are connected to 127.0.0.1:``port``."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    rows = open("/proc/net/tcp").read().splitlines()[1:]
    return sum(1 for row in rows if (f := row.split())[3] == "01" and f[9] in mine
               and int(f[2].split(":")[1], 16) == port)


def test_concurrent_first_calls_share_one_connection_per_worker(harness):
    harness.apply(plan(make_bundle(harness.folder, app=APP, remotes=REMOTES)))
    (worker,) = harness.workers()
    spec = CallSpec("demo", "default", "echo", timeout=CALL_TIMEOUT, max_queue_time=1e6, cost=1.0)

    async def burst():
        return await asyncio.gather(*(harness.backend.call(spec, (i, 0.05), {}, {}) for i in range(64)))

    outcomes = harness.run(burst())
    assert [o.value[0] for o in outcomes] == list(range(64))
    assert _established_to(worker.port) == 1


def test_a_failed_first_deploy_shows_its_traceback_in_status(harness):
    app, remotes, words = BROKEN["context __aenter__ raises"]
    with pytest.raises(DeployError, match=words):
        harness.apply(plan(make_bundle(harness.folder, "v1", app=app, remotes=remotes)))
    status = harness.run(harness.backend.status("demo", "default"))
    assert status.state == "failed"
    (failed,) = status.workers
    assert failed.state == "failed" and words in failed.error and "Traceback" in failed.error
    harness.apply(plan(make_bundle(harness.folder, "v2")))                # a good version clears it
    status = harness.run(harness.backend.status("demo", "default"))
    assert status.state == "ready" and [w.state for w in status.workers] == ["ready"]
