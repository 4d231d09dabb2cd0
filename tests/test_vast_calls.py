"""Calls through Vast: endpoint lookup, /route/ polling, the worker POST and our envelope (reference 3)."""
from __future__ import annotations

import asyncio
import datetime
import json

import httpx
import numpy as np
import pytest

from vast_magic.backends.base import CallSpec
from vast_magic.backends.vast import envelope, routing
from vast_magic.errors import VastNotFoundError
from vast_magic.testing import AUTOSCALER, WORKER, FakeVast
from vast_magic.errors import (BackendError, CallTimeoutError, OverloadedError, RemoteError, WorkerLostError)
from vast_magic.remote import write_outcome
from test_vast_api import KEY, Harness, make_plan


class Point:
    def __init__(self, x):
        self.x = x


def square(x):
    print("squaring", x)
    return x * x


def boom(message):
    raise ValueError(message)


def echo(*args, **kwargs):
    return {"args": args, "kwargs": kwargs}


async def asquare(x):
    await asyncio.sleep(0)
    return x * x


FUNCTIONS = {"square": square, "asquare": asquare, "boom": boom, "echo": echo}


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path, FakeVast(api_key=KEY, functions=dict(FUNCTIONS)))
    harness.apply(make_plan(tmp_path))
    return harness


def spec(function: str, **kw) -> CallSpec:
    return CallSpec(**{"name": "demo", "tag": "default", "function": function, "timeout": 30.0,
                       "max_queue_time": 30.0, **kw})


def call(h: Harness, function: str, *args, classes=None, **kwargs):
    return asyncio.run(h.backend.call(spec(function), args, kwargs, classes or {}))


def test_call_requests_match_reference(h):
    h.fake.route_waits = 2
    outcome = call(h, "square", 7)
    assert outcome.value == 49 and outcome.error is None
    d = next(iter(h.fake.deployments.values()))
    ekey = h.fake.endpoint_key(d.endpoint_id)
    (lookup,) = h.fake.sent("GET", f"/api/v0/endptjobs/{d.endpoint_id}/")
    assert lookup.headers["authorization"] == f"Bearer {KEY}" and lookup.query == {"api_key": KEY}
    routes = h.fake.sent("POST", "/route/")
    assert len(routes) == 3
    assert routes[0].url.startswith(f"{AUTOSCALER}/route/")
    assert routes[0].body == {"endpoint": f"ep-{d.endpoint_id}", "api_key": ekey, "cost": 100.0,
                              "request_idx": 0, "replay_timeout": 60.0}
    assert routes[1].body["request_idx"] == 41  # the index the waiting answer returned is sent back
    assert routes[0].headers["authorization"] == f"Bearer {ekey}" and routes[0].query == {"api_key": ekey}
    (worker,) = h.fake.sent("POST", "/remote/square")
    assert worker.url.startswith(f"{WORKER}/remote/square?") and worker.query == {"api_key": ekey}
    assert worker.headers["authorization"] == f"Bearer {ekey}"
    route_answer = h.fake.requests[h.fake.requests.index(worker) - 1]
    assert route_answer.path == "/route/"
    assert set(worker.body) == {"auth_data", "session_id", "payload"} and worker.body["session_id"] is None
    assert set(worker.body["auth_data"]) >= {"cost", "endpoint", "reqnum", "request_idx", "signature", "url"}
    assert list(worker.body["payload"]) == ["kwargs"] and list(worker.body["payload"]["kwargs"]) == ["__vast_magic__"]
    assert envelope.decode(worker.body["payload"]["kwargs"]["__vast_magic__"]) == {"args": (7,), "kwargs": {}}
    assert h.sleeps[-2:][0] == 1.0  # first /route/ wait is 1 s like the official client


@pytest.mark.parametrize("function", ["square", "asquare"])
def test_sync_and_async_functions(h, function):
    assert call(h, function, 12).value == 144


def test_cost_is_the_calls_workload(h):
    asyncio.run(h.backend.call(spec("square", cost=2500.0), (3,), {}, {}))
    assert h.fake.sent("POST", "/route/")[0].body["cost"] == 2500.0


@pytest.mark.parametrize("args, kwargs, expected", [
    ((True,), {}, {"args": (True,), "kwargs": {}}),
    ((), {"s": {1, 2}, "when": datetime.date(2024, 1, 2)}, {"args": (), "kwargs": {"s": {1, 2}, "when": datetime.date(2024, 1, 2)}}),
])
def test_values_json_cannot_carry_travel(h, args, kwargs, expected):
    outcome = call(h, "echo", *args, **kwargs)
    assert outcome.value == expected


def test_numpy_and_output_come_back(h):
    outcome = call(h, "square", np.arange(4))
    assert outcome.value.tolist() == [0, 1, 4, 9]
    assert outcome.output == (("stdout", "squaring [0 1 2 3]\n"),)
    logs = asyncio.run(h.backend.logs("demo", "default", "square", 10))
    assert [line.text for line in logs] == ["squaring [0 1 2 3]"]      # one line per LogLine, as the local engine


def test_remote_exception_keeps_type_and_message(h):
    outcome = call(h, "boom", "bad input")
    assert isinstance(outcome.error, RemoteError) and isinstance(outcome.error, ValueError)
    assert outcome.error.remote_message == "bad input" and "raise ValueError(message)" in outcome.error.remote_traceback


def test_shipped_classes_travel_by_reference(h):
    h.fake.classes = {"Point": Point}
    outcome = call(h, "echo", classes={Point: "Point"}, p=Point(3))
    point = outcome.value["kwargs"]["p"]
    assert isinstance(point, Point) and point.x == 3


@pytest.mark.parametrize("outcomes, retries, error", [
    ((429,) * 10, 0, OverloadedError),
    ((503,), 0, BackendError),
    ((httpx.ConnectError("refused"),) * 10, 0, WorkerLostError),
    ((httpx.ReadError("reset"),), 0, WorkerLostError),
    ((httpx.ReadTimeout("slow"),), 5, CallTimeoutError),
    ((404,), 3, VastNotFoundError),
])
def test_call_failures(h, outcomes, retries, error):
    h.fake.fail("POST", "/remote/square", *outcomes)
    with pytest.raises(error) as info:
        asyncio.run(h.backend.call(spec("square", retries=retries), (2,), {}, {}))
    assert KEY not in str(info.value) and "endpoint-key" not in str(info.value)


@pytest.mark.parametrize("outcomes, retries, attempts", [
    ((429, 429), 0, 3),                     # never started: retried without retries=
    ((httpx.ConnectError("refused"),), 0, 2),
    ((503,), 1, 2),                         # may have run: only with retries=
    ((httpx.ReadError("reset"),), 2, 2),
])
def test_call_retries_then_succeeds(h, outcomes, retries, attempts):
    h.fake.fail("POST", "/remote/square", *outcomes)
    outcome = asyncio.run(h.backend.call(spec("square", retries=retries), (5,), {}, {}))
    assert outcome.value == 25 and len(h.fake.sent("POST", "/remote/square")) == attempts
    assert len(h.fake.sent("POST", "/route/")) == attempts  # every attempt routes again
    assert [(r.what, r.attempt) for r in outcome.retries] == [("square", n) for n in range(1, attempts)]
    assert h.sleeps[-len(outcome.retries):] == [r.delay for r in outcome.retries]


def test_retries_are_events_written_into_the_calling_cell(tmp_path, capsys):
    """Deterministic: the jitter is injected, so the delays are exact (1 + 0.25, then 2 + 0.25)."""
    harness = Harness(tmp_path, FakeVast(api_key=KEY, functions=dict(FUNCTIONS)), jitter=lambda: 0.25)
    harness.apply(make_plan(tmp_path))
    harness.fake.fail("POST", "/remote/square", 429, httpx.ConnectError("refused"))
    outcome = asyncio.run(harness.backend.call(spec("square"), (3,), {}, {}))
    assert [(r.attempt, r.max_attempts, r.delay, r.reason) for r in outcome.retries] == [
        (1, 4, 1.25, "HTTP 429"), (2, 4, 2.25, "ConnectError")]
    capsys.readouterr()
    write_outcome(outcome)
    captured = capsys.readouterr()
    assert captured.err == ("[vast_magic] square: retry 1/4 in 1.2s (HTTP 429)\n"
                            "[vast_magic] square: retry 2/4 in 2.2s (ConnectError)\n")
    assert captured.out == "squaring 3\n"


def test_route_waiting_is_bounded_by_the_timeout(h):
    h.fake.route_waits = 10 ** 6
    with pytest.raises(CallTimeoutError, match="became ready"):
        asyncio.run(h.backend.call(spec("square", timeout=0.2), (1,), {}, {}))


def test_call_before_deploy_is_explained(tmp_path):
    harness = Harness(tmp_path, FakeVast(api_key=KEY))
    with pytest.raises(BackendError, match="ensure_ready"):
        call(harness, "square", 1)


def test_official_plain_json_answers_are_understood(h):
    api = h.backend.api
    ok = httpx.Response(200, json={"result": {"err": {"type": "obj", "class": "KeyError", "contents": {},
                                                      "module": {"type": "absolute", "path": ["builtins"]}}}})
    outcome = routing.decode_response(api, ok, spec("f"), {})
    assert isinstance(outcome.error, KeyError) and isinstance(outcome.error, RemoteError)
    with pytest.raises(BackendError, match="not a vast_magic envelope"):
        routing.decode_response(api, httpx.Response(200, json={"result": {"ok": "plain"}}), spec("f"), {})
    with pytest.raises(BackendError, match="unexpected answer"):
        routing.decode_response(api, httpx.Response(200, content=json.dumps({"x": 1}).encode()), spec("f"), {})


@pytest.mark.parametrize("blob", [b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x00" + (99).to_bytes(8, "big") + b"short"])
def test_envelope_rejects_truncated_frames(blob):
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack(blob)


def test_envelope_round_trip_with_out_of_band_buffers():
    value = {"a": np.ones((64, 64)), "b": [1, "x", None]}
    back = envelope.decode(envelope.encode(value))
    assert np.array_equal(back["a"], value["a"]) and back["b"] == value["b"]


@pytest.mark.parametrize("message, error", [
    ({"ok": False, "overloaded": True, "message": "worker overloaded: 300 workload queued"}, OverloadedError),
    ({"ok": False, "error": {"type": "builtins.TimeoutError", "message": "f did not finish within its timeout of 2 s",
                             "traceback": ""}, "output": []}, CallTimeoutError),
])
def test_executor_refusals_are_raised(message, error):
    with pytest.raises(error):
        envelope.outcome_from_message(message)


def test_user_timeout_error_stays_a_remote_error():
    outcome = envelope.outcome_from_message({"ok": False, "error": {"type": "builtins.TimeoutError",
                                                                    "message": "socket timed out", "traceback": ""}})
    assert isinstance(outcome.error, RemoteError) and isinstance(outcome.error, TimeoutError)
