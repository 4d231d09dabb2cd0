"""Readiness from ``get_endpoint_workers`` (reference 8.2), as tables: answer shapes, worker rows, the watch."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from vast_magic.backends.vast import readiness
from vast_magic.backends.vast.api import VastAPI
from vast_magic.errors import ConfigError, DeployError, VastRejectedError
from vast_magic.events import BenchmarkScored, WorkerRow, WorkerState, format_worker
from vast_magic.reports import LogLine, WorkerInfo

# (raw worker, expected (state, perf, detail, error))
ROWS = [
    ({"id": 1, "status": "idle", "measured_perf": 50.0, "perf": 50.0}, ("ready", 50.0, "idle", None)),
    ({"id": 1, "status": "IDLE", "measured_perf": 7}, ("ready", 7.0, "IDLE", None)),               # any case
    ({"id": 1, "status": "idle", "measured_perf": 0, "perf": 12.5}, ("starting", None, "idle", None)),
    ({"id": 1, "status": "loading", "perf": 12.5, "dlperf": 12.5}, ("starting", None, "loading", None)),
    ({"id": 1, "status": "model_loading", "measured_perf": 0}, ("starting", None, "model_loading", None)),
    ({"id": 1, "status": "UPDATE_REBOOTING", "measured_perf": 50}, ("starting", None, "UPDATE_REBOOTING", None)),
    ({"id": 1, "status": "stopped", "measured_perf": 50}, ("stopped", None, "stopped", None)),
    ({"id": 1, "status": "destroying"}, ("stopped", None, "destroying", None)),
    ({"id": 1, "status": "Unavail"}, ("stopped", None, "Unavail", None)),
    ({"id": 1, "status": "error", "error_msg": "boom"}, ("failed", None, "error", "boom")),
    ({"id": 1, "status": "error"}, ("failed", None, "error", "Vast reports status 'error'")),
    ({"id": 1, "status": "idle", "measured_perf": 9, "error_msg": "late"}, ("failed", None, "idle", "late")),
    ({"id": 1}, ("starting", None, None, None)),
    ({"id": 1, "status": "idle", "measured_perf": "n/a"}, ("starting", None, "idle", None)),
]


@pytest.mark.parametrize("raw, expected", ROWS, ids=[f"{r.get('status')}-{r.get('measured_perf')}" for r, _ in ROWS])
def test_worker_rows(raw, expected):
    info = readiness.worker_info(raw)
    assert (info.state, info.perf, info.detail, info.error) == expected
    assert info.perf is None or info.state == "ready"          # a placeholder is never shown as a benchmark


WORKER = {"id": 5, "status": "idle", "measured_perf": 3.0, "loaded_at": 17.0}
SHAPES = [
    ([WORKER], ["5"], None),                                                     # the SDK's bare list
    ({"workers": [WORKER]}, ["5"], None),                                        # the API spec's object
    ({"workers": []}, [], None),
    ({"error_msg": "authenticate_endpoint_apikey_by_id failed"}, [], "authenticate_endpoint_apikey_by_id failed"),
    ([WORKER, "junk", None], ["5"], None),
    ("nonsense", [], None),
]


@pytest.mark.parametrize("data, ids, said", SHAPES, ids=["list", "dict", "empty", "error_msg", "junk", "text"])
def test_both_answer_shapes(data, ids, said):
    reported, vast_said = readiness.parse_workers(data)
    assert [w.info.id for w in reported] == ids and vast_said == said
    assert all(w.generation == (17.0, 0.0) for w in reported)


def test_worker_line_shows_vast_status_next_to_ours():
    assert format_worker(WorkerRow("7", "starting", None, None, "model_loading")) == \
        "worker 7: starting (vast: model_loading)"
    assert format_worker(WorkerRow("7", "ready", 3.0, None, "idle")) == "worker 7: ready (vast: idle) perf=3.0/s"
    assert format_worker(WorkerRow("7", "stopped", None, None, "stopped")) == "worker 7: stopped"
    assert format_worker(WorkerRow("7", "ready", 3.0, None, "idle", load=1.5, reliability=0.992)) == \
        "worker 7: ready (vast: idle) perf=3.0/s load=1.5 reliability=99.2%"


@pytest.mark.parametrize("interval, url, ok", [
    (5.0, "https://run.vast.ai", True), (30.0, "https://run.vast.ai", True), (4.9, "https://run.vast.ai", False),
    (0.5, "http://127.0.0.1:8080", True), (0.5, "http://[::1]:8080", True), (0.5, "http://localhost:1", True),
    (0.5, "https://run.example.com", False),
])
def test_polls_faster_than_5s_only_on_loopback(interval, url, ok):
    if ok:
        assert readiness.check_poll_interval(interval, url) == interval
    else:
        with pytest.raises(ConfigError, match=r"below 5s: Vast rate-limits get_endpoint_workers.*loopback"):
            readiness.check_poll_interval(interval, url)


# -- the watch, against scripted answers -------------------------------------------------------------------
def w(worker_id, status, perf=0.0, loaded_at=0.0, error="", started_at=50.0):
    return {"id": worker_id, "status": status, "measured_perf": perf, "loaded_at": loaded_at, "error_msg": error,
            "started_at": started_at}


OLD_READY = w(1, "idle", 9.0, loaded_at=100.0)
BEFORE = {"1": (100.0, 50.0)}
WATCHES = [
    # (answers in order, previous generation, returned ready ids or the error text)
    ([[w(1, "loading")], [OLD_READY]], None, ["1"]),
    ([{"error_msg": "not yet"}, {"workers": [OLD_READY]}], None, ["1"]),
    ([[OLD_READY], [OLD_READY, w(2, "loading")], [w(1, "destroying"), w(2, "idle", 8.0, 200.0)]], BEFORE, ["2"]),
    ([[OLD_READY], [w(1, "update_rebooting")], [w(1, "idle", 9.5, 150.0)]], BEFORE, ["1"]),   # same id, reloaded
    ([[OLD_READY], [w(1, "update_rebooting")], [OLD_READY]], BEFORE, ["1"]),      # seen restarting, same times
    ([[OLD_READY], [w(1, "idle", 9.0, 100.0, started_at=60.0)]], BEFORE, ["1"]),   # started again
    ([[OLD_READY, w(2, "error", error="boom")]], BEFORE, "What the workers said:\nworker 2: boom"),
    ([[w(1, "error", error="old bug")], [w(1, "error", error="old bug"), w(2, "idle", 3.0, 300.0)]],
     {"1": (0.0, 50.0)}, ["2"]),                        # the failed worker of before the update does not fail it
    ([[w(1, "error", error="bad import")]], None, "worker 1: bad import"),
    ([[OLD_READY]] * 3, BEFORE, "no worker of endpoint 9 became ready for an updated worker within"),
    ([{"error_msg": "no such endpoint"}] * 3, None, "Vast reported no workers yet (no machine matched the "
                                                    "requirements, or none was started); it answered: no such endpoint"),
]


@pytest.mark.parametrize("answers, previous, expected", WATCHES, ids=[
    "first-ready", "error-msg-then-dict", "replacement", "reloaded-in-place", "restart-seen", "started-again",
    "new-worker-failed", "old-failure-ignored", "failed", "old-only-times-out", "never-queryable"])
def test_readiness_watch(answers, previous, expected):
    queue = list(answers)
    seen_bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_bodies.append(json.loads(request.content))
        return httpx.Response(200, json=queue.pop(0) if len(queue) > 1 else queue[0])

    async def scenario():
        clock = {"now": 0.0}
        loop = asyncio.get_running_loop()
        loop.time = lambda: clock["now"]           # the watch's deadline follows the scripted sleeps

        async def sleep(seconds):
            clock["now"] += seconds

        api = VastAPI("k", autoscaler_url="http://127.0.0.1:1", transport=httpx.MockTransport(handler), sleep=sleep)
        watch = readiness.ReadinessWatch(api, 9, lambda event: None, interval=5.0, sleep=sleep, previous=previous)
        try:
            return await watch.wait(timeout=12.0)
        finally:
            await api.aclose()

    if isinstance(expected, list):
        workers = asyncio.run(scenario())
        assert [x.id for x in workers if x.state == "ready" and (previous is None or x.id in expected)] == expected
    else:
        with pytest.raises(DeployError) as info:
            asyncio.run(scenario())
        assert expected in str(info.value)
    assert all(body == {"id": 9, "api_key": "k"} for body in seen_bodies)


def test_worker_info_keeps_its_public_fields():
    assert WorkerInfo("1", "ready").detail is None          # detail is optional: old constructors still work


# -- the progress: both recorded shapes through the fake, as the text view prints them --------------------
@pytest.mark.parametrize("shape", ["list", "dict"])
def test_progress_shows_status_perf_load_and_reliability(tmp_path, shape):
    from tests.backends.vast.vast_harness import KEY, Harness, make_plan
    from vast_magic.events import format_event
    from vast_magic.testing import FakeVast
    h = Harness(tmp_path, FakeVast(api_key=KEY, ready_after=2, workers_shape=shape))
    h.apply(make_plan(tmp_path, wait=True))
    worker = next(iter(h.fake.deployments.values())).id * 10
    lines = [format_event(e) for e in h.events if isinstance(e, (WorkerState, BenchmarkScored))]
    assert lines == [f"worker {worker}: starting (vast: loading) load=0.0 reliability=99.2%",
                     f"worker {worker}: benchmark 1,234.5/s",
                     f"worker {worker}: ready (vast: idle) perf=1,234.5/s load=0.0 reliability=99.2%"]
    assert "8.5" not in "\n".join(lines)                  # the DLPerf placeholder is never shown as a score


def test_vasts_error_msg_is_shown_once_and_quoted():
    answers = [{"error_msg": "not yet"}, {"error_msg": "not yet"}, {"error_msg": "no such endpoint"}]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])

    async def scenario(events):
        clock = {"now": 0.0}
        asyncio.get_running_loop().time = lambda: clock["now"]

        async def sleep(seconds):
            clock["now"] += seconds
        api = VastAPI("k", autoscaler_url="http://127.0.0.1:1", transport=httpx.MockTransport(handler), sleep=sleep)
        try:
            await readiness.ReadinessWatch(api, 9, events.append, interval=5.0, sleep=sleep).wait(timeout=20.0)
        finally:
            await api.aclose()

    events: list = []
    with pytest.raises(DeployError, match="it answered: no such endpoint"):
        asyncio.run(scenario(events))
    assert [e.text for e in events if isinstance(e, LogLine)] == [
        "get_endpoint_workers answered: not yet", "get_endpoint_workers answered: no such endpoint"]


def test_http_400_error_msg_fails_at_once_quoting_vast():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error_msg": "id is required"})

    async def scenario():
        api = VastAPI("k", autoscaler_url="http://127.0.0.1:1", transport=httpx.MockTransport(handler))
        try:
            await readiness.ReadinessWatch(api, 9, lambda event: None, interval=5.0).wait(timeout=60.0)
        finally:
            await api.aclose()

    with pytest.raises(VastRejectedError, match=r'HTTP 400\): \{"error_msg": ?"id is required"\}'):
        asyncio.run(scenario())
