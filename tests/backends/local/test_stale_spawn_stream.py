"""Spawned and streamed calls are pinned to the deployed version like plain calls (the merge of issue 18's
call shapes with issue 15's version pinning).

A stream request names the version; a worker of another version answers it at once without running the
generator, and the client routes it again. The engine reads a spawned call's answer only to see such a
refusal: with an unpickler that resolves no class, so no user value is ever loaded there.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import pickle

import pytest

from tests.backends.local.engine_harness import APP, REMOTES, make_bundle, plan
from tests.runtime.worker_harness import remote_spec
from vast_magic.backends.base import CallSpec
from vast_magic.backends.local import spawned
from vast_magic.errors import ConfigError
from vast_magic.runtime import executor, wire

STREAM_APP = APP + '''
async def count(n):
    for i in range(n):
        yield i
'''


class _App:
    remotes: dict = {}
    classes: dict = {}
    class_refs: dict = {}


def test_a_stream_for_another_version_runs_nothing():
    ran = []
    worker = executor.Executor(_App(), {}, version="v2")
    worker._run = lambda *a: ran.append(a)                          # would record any run
    state = executor.CallState()
    answer = asyncio.run(worker.stream({"op": "stream", "id": 3, "fn": "count", "args": (2,), "kwargs": {},
                                        "version": "v1", "window": 4}, state, lambda item: None))
    assert answer == {"id": 3, "ok": False, "stale": True, "version": "v2"} and ran == []


class Shipped:
    """A class only the deployment knows: the engine must never resolve it."""


@pytest.mark.parametrize("frame, expected", [
    (wire.dumps({"id": 1, "ok": False, "stale": True, "version": "v2"}), "v2"),
    (wire.dumps({"id": 1, "ok": True, "value": 4, "output": []}), None),
    (wire.dumps({"id": 1, "ok": True, "value": Shipped(), "output": []}, {Shipped: "app.Shipped"}), None),
    ((pickle.dumps({"stale": True, "version": "v2", "pad": "x" * 2000}), []), None),    # too big to be one
    ((b"not a pickle", []), None),
], ids=["stale", "plain answer", "a shipped class", "large frame", "garbage"])
def test_the_engine_tells_a_stale_answer_without_loading_user_values(frame, expected):
    main, buffers = frame
    assert spawned.stale_version((bytes(main), [bytes(b) for b in buffers])) == expected


def test_a_stream_that_reaches_a_stale_route_is_routed_again(harness):
    bundle = make_bundle(harness.folder, "v1", app=STREAM_APP.format(version="v1"),
                         remotes=[*REMOTES, remote_spec("count")])
    harness.apply(plan(bundle))
    version = hashlib.sha256(bundle.read_bytes()).hexdigest()       # what plan() uses as the code fingerprint
    spec = CallSpec(name="demo", tag="default", function="count", timeout=60.0, max_queue_time=1e9, version=version)

    async def items(spec):
        got = []
        async for kind, value in harness.backend.stream(spec, (5,), {}, {}):
            got.extend(value if kind == "items" else [value.error])
        return got

    assert harness.run(items(spec)) == [0, 1, 2, 3, 4, None]
    pool = harness.backend.pools[("demo", "default")]
    worker = next(iter(pool.routes))
    pool.mark_version(worker, "elsewhere-v0")                    # the client now thinks the worker runs v0
    stale = dataclasses.replace(spec, version="elsewhere-v0")
    with pytest.raises(ConfigError, match=r"now runs another version .* than this process deployed \(elsewhere-v0"):
        harness.run(items(stale))                                # the worker refused; routed again, the engine says why
    assert pool.routes[worker].version == version                # what the worker said it runs


def test_spawn_carries_the_version_and_the_engine_refuses_one_it_never_runs(harness):
    bundle = make_bundle(harness.folder, "v1")
    harness.apply(plan(bundle))
    version = hashlib.sha256(bundle.read_bytes()).hexdigest()
    spec = CallSpec(name="demo", tag="default", function="square", timeout=60.0, max_queue_time=1e9, version=version)
    call_id = harness.run(harness.backend.spawn(spec, (6,), {}, {}))
    outcome = harness.run(harness.backend.call_result(call_id, 60.0, {}))
    assert (outcome.value, outcome.error) == (36, None)
    with pytest.raises(ConfigError, match=r"than this process deployed \(elsewhere-v0\)"):
        harness.run(harness.backend.spawn(dataclasses.replace(spec, version="elsewhere-v0"), (6,), {}, {}))
