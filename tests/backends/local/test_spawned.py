"""The engine's spawned calls (``backends/local/spawned.py``): what is kept and for how long, and a cancel
of a call still queued in the engine (no ready worker yet) — it never runs."""
from __future__ import annotations

import asyncio
import types
import time

import pytest

from vast_magic.backends.local import spawned
from vast_magic.errors import ConfigError, OverloadedError

REQUEST = {"function": "f", "call_id": 1, "request": [b"main", [b"buf"]], "timeout": 30.0, "cost": 1.0}


def finished_at(calls: spawned.SpawnedCalls, *ages: float, now: float) -> list[str]:
    ids = []
    for age in ages:
        call = calls.add(("app", "default"), REQUEST)
        call.finish(frame=(b"answer", []))
        call.finished_at = now - age
        ids.append(call.id)
    return ids


@pytest.mark.parametrize("keep_seconds, keep_calls, ages, kept", [
    (3600.0, 1000, (10.0, 3599.0, 3601.0), (True, True, False)),       # an hour after it finished
    (3600.0, 2, (30.0, 20.0, 10.0), (False, True, True)),             # the newest keep_calls
    (3600.0, 1, (5000.0, 10.0), (False, True)),
])
def test_finished_calls_are_kept_for_a_while_and_a_bounded_number(keep_seconds, keep_calls, ages, kept):
    calls = spawned.SpawnedCalls(keep_seconds=keep_seconds, keep_calls=keep_calls)
    now = time.time()
    ids = finished_at(calls, *ages, now=now)
    calls.prune(now=now)
    assert tuple(call_id in calls.calls for call_id in ids) == kept


def test_answers_beyond_the_byte_budget_go_oldest_first():
    calls = spawned.SpawnedCalls(keep_bytes=250)
    now = time.time()
    ids = []
    for age in (30.0, 20.0, 10.0):                      # three answers of 100 bytes
        call = calls.add(("app", "default"), REQUEST)
        call.finish(frame=(b"x" * 60, [b"y" * 40]))
        call.finished_at = now - age
        ids.append(call.id)
    calls.prune(now=now)
    assert [call_id in calls.calls for call_id in ids] == [False, True, True]


def test_unfinished_calls_are_bounded_and_never_pruned():
    calls = spawned.SpawnedCalls(keep_seconds=1.0, keep_calls=0, max_unfinished=2)
    first = calls.add(("app", "default"), REQUEST)
    calls.add(("app", "default"), REQUEST)
    with pytest.raises(OverloadedError, match=r"^the local engine already holds 2 unfinished spawned calls; wait"):
        calls.add(("app", "default"), REQUEST)
    calls.prune(now=1e12)
    assert calls.get(first.id) is first


@pytest.mark.parametrize("call_id", ["call-unknown", 7, None])
def test_an_unknown_id_says_how_long_calls_are_kept(call_id):
    with pytest.raises(ConfigError, match=rf"^the local engine has no call {call_id!r}: it keeps a finished call's "
                                          r"result for 1 h \(the newest 1000, up to 1024 MiB of results\), and "
                                          r"none after it restarted\."):
        spawned.SpawnedCalls().get(call_id)


class _NoWorkerYet:
    """A deployment whose workers are all still starting (no routes)."""

    def __init__(self):
        self.key, self.waiting, self.waiting_workload = ("app", "default"), 0, 0.0
        self.routes_changed = asyncio.Event()
        self.committed, self.rollout = True, False
        self.workers = {"w1": types.SimpleNamespace(role="serving", rec=types.SimpleNamespace(state="starting"))}

    def routes(self):
        return []


class _Engine:
    def __init__(self, dep):
        self.deployments = {dep.key: dep}
        self.token = "unused"


def test_a_call_queued_in_the_engine_and_cancelled_never_runs():
    async def scenario():
        dep = _NoWorkerYet()
        call = spawned.SpawnedCalls().add(dep.key, REQUEST)
        call.task = asyncio.ensure_future(spawned.run(_Engine(dep), call))
        await asyncio.sleep(0.05)
        waiting = dep.waiting                            # counted as demand: the autoscaler starts a worker
        said = await spawned.cancel(call)
        await asyncio.wait([call.task], timeout=5)
        return waiting, said, call, dep.waiting
    waiting, said, call, after = asyncio.run(scenario())
    assert (waiting, said, after) == (1, "never_ran", 0)
    assert (call.state, call.frame, call.channel) == ("done", None, None)
    assert call.error == {"kind": "CallCancelledError", "outcome": "never_ran",
                          "message": "f was cancelled before it started: it never ran"}
