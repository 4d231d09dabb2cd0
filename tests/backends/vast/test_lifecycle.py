"""Lifecycle on the fake Vast API: heartbeats, readiness polling, teardown, status and list."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from vast_magic.backends.vast.backend import VastBackend
from vast_magic.testing import FakeVast
from vast_magic.errors import DeployError
from vast_magic.events import BenchmarkScored, Failed, WorkerState
from vast_magic.reports import LogLine
from tests.backends.vast.vast_harness import KEY, Harness, make_plan


# -- heartbeats ----------------------------------------------------------------------------------------
async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_heartbeat_while_ttl_is_set_and_stopped_by_teardown(tmp_path):
    fake = FakeVast(api_key=KEY)
    backend = VastBackend(home=str(tmp_path), api_key=KEY, transport=fake.transport())

    async def scenario():
        await backend.apply(make_plan(tmp_path, ttl=0.1), lambda e: None)
        d = next(iter(fake.deployments.values()))
        assert backend.heartbeats.running(d.id)
        await until(lambda: d.heartbeats >= 3)                         # then every ttl / 3 (at least 0.05 s)
        await backend.teardown("demo", "default")
        beats = d.heartbeats
        await asyncio.sleep(0.2)
        return d, beats

    d, beats = asyncio.run(scenario())
    assert d.heartbeats == beats and d.deleted and not backend.heartbeats.running(d.id)
    hb = fake.sent("POST", f"/api/v0/deployment/{d.id}/heartbeat/")[0]
    assert hb.headers["authorization"] == f"Bearer {KEY}" and hb.query == {} and hb.raw == b""


def test_heartbeat_interval_is_one_rule_for_both_backends(tmp_path):
    from vast_magic.backends.heartbeat import HeartbeatScheduler, interval_for
    from vast_magic.backends.local.backend import LocalBackend
    assert [interval_for(t) for t in (0.1, 1.5, 30, 90, 3600)] == [0.05, 0.5, 10, 30, 30]
    backends = [VastBackend(home=str(tmp_path), api_key=KEY), LocalBackend(home=tmp_path)]
    assert all(type(backend.heartbeats) is HeartbeatScheduler for backend in backends)


def test_heartbeat_survives_errors(tmp_path):
    fake = FakeVast(api_key=KEY)
    backend = VastBackend(home=str(tmp_path), api_key=KEY, transport=fake.transport())
    fake.fail("POST", "/heartbeat/", 500, httpx.ConnectError("down"), 503)

    async def scenario():
        await backend.apply(make_plan(tmp_path, ttl=0.1), lambda e: None)
        d = next(iter(fake.deployments.values()))
        await until(lambda: d.heartbeats >= 2)
        backend.close()
        return d

    d = asyncio.run(scenario())
    assert len(fake.sent("POST", f"/api/v0/deployment/{d.id}/heartbeat/")) >= 5   # 3 failures, then beats again
    assert d.id not in backend.heartbeats.last_error


# -- readiness -------------------------------------------------------------------------------------------
def test_readiness_events_and_result(h, tmp_path):
    result = h.apply(make_plan(tmp_path, wait=True))
    states = [(e.worker, e.state) for e in h.of(WorkerState)]
    d = next(iter(h.fake.deployments.values()))
    assert states == [(str(d.id * 10), "starting"), (str(d.id * 10), "ready")]
    assert [(e.worker, e.perf) for e in h.of(BenchmarkScored)] == [(str(d.id * 10), 1234.5)]
    assert result.benchmark == 1234.5 and [w.state for w in result.workers] == ["ready"]
    (poll,) = h.fake.sent("POST", "/get_endpoint_workers/")[:1]
    assert poll.body == {"id": d.endpoint_id, "api_key": KEY}


@pytest.mark.parametrize("changes, note", [
    (dict(wait=False), None),
    (dict(wait=True, autoscaling={"cold_workers": 0, "max_workers": 2}), "cold_workers=0: workers start on the first call"),
])
def test_returns_without_polling(h, tmp_path, changes, note):
    result = h.apply(make_plan(tmp_path, **changes))
    assert result.workers == () and h.fake.sent("POST", "/get_endpoint_workers/") == []
    assert [e.text.split(",")[0] for e in h.of(LogLine)] == ([note] if note else [])


NO_WORKERS = "became ready within 0.05s: Vast reported no workers yet (no machine matched the requirements, or none " \
             "was started)"


@pytest.mark.parametrize("fake_knobs, timeout, expected", [
    (dict(ready_after=10 ** 6), 0.05, "became ready within 0.05s: worker 1010: starting (loading)"),
    (dict(worker_error="Lifecycle startup failed: boom"), 600,
     "every new worker of endpoint 1101 failed; fix the cause and deploy again (the previous version, if any, "
     "keeps serving). What the workers said:\nworker 1010: Lifecycle startup failed: boom"),
    (dict(worker_error="Lifecycle startup failed: boom", workers_shape="dict"), 600,
     "What the workers said:\nworker 1010: Lifecycle startup failed: boom"),
    (dict(worker_status="stopped"), 0.05, "became ready within 0.05s: worker 1010: stopped (stopped). Check"),
    (dict(worker_status="unavail"), 0.05, "became ready within 0.05s: worker 1010: stopped (unavail). Check"),
    (dict(workers_shape="none"), 0.05, NO_WORKERS + ". Check image.preview_offers()"),
    (dict(workers_shape="error_msg"), 0.05,
     NO_WORKERS + "; it answered: no workers are running for endpoint 1101. Check image.preview_offers()"),
])
def test_readiness_failure_says_what_was_seen(tmp_path, fake_knobs, timeout, expected):
    """No ready worker by the deadline (starting, stopped, or none ever), or every worker failed (at once)."""
    h = Harness(tmp_path, FakeVast(api_key=KEY, **fake_knobs))
    try:
        with pytest.raises(DeployError) as info:
            h.apply(make_plan(tmp_path, wait=True, timeout=timeout))
    finally:
        h.fake.close()
    assert expected in str(info.value)
    assert h.of(Failed) and expected in h.of(Failed)[-1].message


# -- teardown, status, list ------------------------------------------------------------------------------
def test_teardown_is_idempotent(h, tmp_path):
    h.apply(make_plan(tmp_path))
    d = next(iter(h.fake.deployments.values()))
    asyncio.run(h.backend.teardown("demo", "default"))
    asyncio.run(h.backend.teardown("demo", "default"))
    deletes = [(r.path, r.body) for r in h.fake.sent("DELETE")]
    assert deletes == [(f"/api/v0/deployment/{d.id}/", None), ("/api/v0/deployments/", {"name": "demo", "tag": "default"})]
    assert d.deleted and asyncio.run(h.backend.previous_manifest_json("demo", "default")) is None


def test_teardown_all_tags(h, tmp_path):
    h.apply(make_plan(tmp_path))
    h.apply(make_plan(tmp_path, tag="canary"))
    asyncio.run(h.backend.teardown("demo", None))
    assert all(d.deleted for d in h.fake.deployments.values())
    assert h.fake.sent("DELETE")[-1].body == {"name": "demo"}


def test_status_and_list(h, tmp_path):
    assert asyncio.run(h.backend.status("demo", "default")).state == "stopped"
    h.apply(make_plan(tmp_path, wait=True))
    status = asyncio.run(h.backend.status("demo", "default"))
    d = next(iter(h.fake.deployments.values()))
    assert (status.state, status.endpoint, [w.state for w in status.workers]) == \
        ("ready", f"vast endpoint {d.endpoint_id}", ["ready"])
    assert h.fake.sent("GET", f"/api/v0/deployment/{d.id}/")
    listed = asyncio.run(h.backend.list_deployments())
    assert [(s.name, s.tag) for s in listed] == [("demo", "default")]
    assert h.fake.sent("GET", "/api/v0/deployments")[0].headers["authorization"] == f"Bearer {KEY}"
    d.deleted = True
    assert asyncio.run(h.backend.status("demo", "default")).state == "stopped"
