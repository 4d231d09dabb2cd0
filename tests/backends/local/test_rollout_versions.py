"""Calls pinned to the deployed version during a local rollout (the same contract as on Vast, issue 15 item 7).

A tier 2 rollout keeps old workers serving until each new one is ready, so a
call made right after ``ensure_ready()`` returned could reach old code. Here
the second new worker is held back 3 s in its context, so an old worker is
provably still routed when the burst starts: 1,000 calls at concurrency 32,
each naming the new version, must all be answered by the new code. A worker
asked for another version answers without running anything.
"""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.backends.local.engine_harness import APP, make_bundle, plan
from vast_magic.backends.base import CallSpec
from vast_magic.errors import ConfigError
from vast_magic.runtime import executor

CALLS, CONCURRENCY = 1000, 32
FAST = "    async def __aenter__(self):\n        return self"
HELD_BACK = '''    async def __aenter__(self):
        try:                                       # the first worker of this version starts at once,
            os.close(os.open({mark!r}, os.O_CREAT | os.O_EXCL))
        except FileExistsError:                    # the others 3 s later
            await asyncio.sleep(3.0)
        return self'''


def version_of(bundle) -> str:
    return hashlib.sha256(bundle.read_bytes()).hexdigest()      # what plan() uses as the code fingerprint


def spec(version: str | None) -> CallSpec:
    return CallSpec(name="demo", tag="default", function="version", timeout=60.0, max_queue_time=1e9,
                    version=version)


def test_calls_after_a_rollout_all_run_the_new_version(harness):
    old = make_bundle(harness.folder, "v1")
    harness.apply(plan(old, autoscaling={"cold_workers": 2, "max_workers": 2}))
    assert sorted(harness.call("version") for _ in range(4)) == ["v1"] * 4
    assert APP.count(FAST) == 1
    new_app = APP.format(version="v2").replace(FAST, HELD_BACK.format(mark=str(harness.folder / "first-v2")))
    new = make_bundle(harness.folder, "v2", app=new_app)
    harness.apply(plan(new, tier=2, autoscaling={"cold_workers": 1, "max_workers": 2}))

    async def burst():
        routes = await harness.backend.engine.request("route", name="demo", tag="default")
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one():
            async with gate:
                return await harness.backend.call(spec(version_of(new)), (), {}, {})
        return routes, await asyncio.gather(*(one() for _ in range(CALLS)))

    routes, outcomes = harness.run(burst())
    assert {r[3] for r in routes} == {version_of(old), version_of(new)}     # an old worker still served
    assert [o.value for o in outcomes] == ["v2"] * CALLS
    assert [o.error for o in outcomes if o.error] == []


def test_a_worker_of_another_version_runs_nothing():
    ran = []

    class App:
        remotes = {}

    worker = executor.Executor(App(), {}, version="v2")
    worker._run = lambda *a: ran.append(a)                         # would record any run
    answer = asyncio.run(worker.handle({"op": "call", "id": 5, "fn": "version", "args": (), "kwargs": {},
                                        "version": "v1"}))
    assert answer == {"id": 5, "ok": False, "stale": True, "version": "v2"} and ran == []


def test_a_version_the_engine_will_never_run_fails_at_once(harness):
    harness.apply(plan(make_bundle(harness.folder, "v1")))
    with pytest.raises(ConfigError, match=r"demo/default now runs another version \(\w{12}\) than this process "
                                          r"deployed \(elsewhere-v0\)"):
        harness.run(harness.backend.call(spec("elsewhere-v0"), (), {}, {}))
