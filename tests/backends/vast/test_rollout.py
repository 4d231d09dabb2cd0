"""Calls pinned to the deployed version during a Vast rolling update (reference 8.6), on the fake Vast API.

After a soft update the fake routes every other call to a worker still on the
previous bundle (``old_worker_routes``). That worker answers the stale-version
marker without running anything; the client routes again, each time a Retry
event, until the new version answers, or gives up with a clear error.
"""
from __future__ import annotations

import asyncio

import pytest

from vast_magic.backends.base import CallSpec
from vast_magic.errors import CallTimeoutError
from vast_magic.testing import FakeVast
from tests.backends.vast.vast_harness import KEY, MINIMAL_ENTRY, Harness, make_bundle, make_plan

CALLS, CONCURRENCY = 1000, 32


def versioned_plan(tmp_path, version: str, **changes):
    bundle = make_bundle(tmp_path / f"{version}.tar.gz", code=f"{MINIMAL_ENTRY}_VM_VERSION = {version!r}\n")
    return make_plan(tmp_path, bundle_path=bundle, **changes)


def spec(version: str | None, **kw) -> CallSpec:
    return CallSpec(**{"name": "demo", "tag": "default", "function": "which", "timeout": 60.0,
                       "max_queue_time": 30.0, "version": version, **kw})


@pytest.fixture
def rolled(tmp_path, request):
    """v1 deployed, then v2 applied (a soft update) with the old worker still taking routes."""
    old_runs: list = []
    fake = FakeVast(api_key=KEY, functions={"which": lambda x: ("new", x)}, ready_after=0,
                    old_functions={"which": lambda x: old_runs.append(x) or ("old", x)})
    h = Harness(tmp_path, fake)
    request.addfinalizer(fake.close)
    h.apply(versioned_plan(tmp_path, "v1", wait=True))
    fake.old_worker_routes = 600
    result = h.apply(versioned_plan(tmp_path, "v2", wait=True, tier=2))
    assert result.backend_action == "soft_update" and fake.deployments[next(iter(fake.deployments))].versions == [
        "v1", "v2"]
    return h, old_runs


def test_calls_after_a_rollout_all_run_the_new_version(rolled):
    h, old_runs = rolled

    async def many():
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i):
            async with gate:
                return await h.backend.call(spec("v2"), (i,), {}, {})
        return await asyncio.gather(*(one(i) for i in range(CALLS)))

    outcomes = asyncio.run(many())
    assert [o.value for o in outcomes] == [("new", i) for i in range(CALLS)]
    retries = [r for o in outcomes for r in o.retries]
    assert old_runs == [] and h.fake.stale_answers == len(retries) == 600      # every old route was answered stale
    assert {r.reason for r in retries} == {"worker runs version v1, expected v2"}
    assert max(len(o.retries) for o in outcomes) >= 1


def test_a_call_without_a_version_runs_anywhere(rolled):
    h, old_runs = rolled
    values = [asyncio.run(h.backend.call(spec(None), (i,), {}, {})).value for i in range(4)]
    assert values == [("old", 0), ("new", 1), ("old", 2), ("new", 3)] and old_runs == [0, 2]


def test_a_rollout_that_never_reaches_the_new_version_times_out_clearly(rolled):
    h, old_runs = rolled
    with pytest.raises(CallTimeoutError, match=r"still ran version v1, not v3, which ensure_ready\(\) deployed; "
                                               r"the rolling update has not finished"):
        asyncio.run(h.backend.call(spec("v3"), (1,), {}, {}))
    assert old_runs == []
