"""Calls through Vast: endpoint lookup, /route/ polling, the worker POST and our envelope (reference 3).

Answers are a third party's: a hostile answer that would run code on the
client (os.system, exec, eval, subprocess, getattr, __import__) is refused by
name and its canary never appears; plain, stdlib and numpy values, exceptions
and shipped classes come back; other classes need ``trusted_types``.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import datetime
import decimal
import fractions
import json
import pathlib
import re
import sys
import uuid

import httpx
import numpy as np
import pytest

from vast_magic.backends.base import CallSpec
from vast_magic.backends.vast import envelope, routing, sealing
from vast_magic.runtime import sealed
from vast_magic import Deployment
from vast_magic.backends.vast.trusted import normalize
from vast_magic.errors import (BackendError, CallTimeoutError, ConfigError, OverloadedError, RemoteError,
                               UntrustedTypeError, VastNotFoundError, WorkerLostError)
from vast_magic.remote import write_outcome
from vast_magic.testing import AUTOSCALER, WORKER, FakeVast
from tests.backends.vast.vast_harness import KEY, Harness, make_plan


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


def opened(h: Harness, text: str, function: str):
    """A sealed request as its worker opens it (the key is the one this machine created for demo/default)."""
    key = sealing.read_key(h.backend.home, "demo", "default")
    header, payload = sealed.Opener(key, url=WORKER).open(text, function)
    return header, envelope.decode(base64.b64encode(payload).decode("ascii"))


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
    header, message = opened(h, worker.body["payload"]["kwargs"]["__vast_magic__"], "square")
    assert message == {"args": (7,), "kwargs": {}}
    assert (header.function, header.url, header.version) == ("square", WORKER, None)
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


@pytest.mark.parametrize("status", ["waiting for workers: 2 loading, 1 model_loading", "endpoint stopped"])
def test_route_waiting_is_bounded_by_the_timeout_and_quotes_vast(h, status):
    h.fake.route_waits, h.fake.route_status = 10 ** 6, status
    with pytest.raises(CallTimeoutError) as info:
        asyncio.run(h.backend.call(spec("square", timeout=0.2), (1,), {}, {}))
    assert "became ready for square before its timeout" in str(info.value)
    assert f"Vast's last /route/ answer said: {status!r}. Check app.status()" in str(info.value)


# /route/ answers in the recorded shapes (reference 8.3): 200 without ``url`` is "waiting"; its ``request_idx`` is
# sent back; each new ``status`` is shown once in the call's display
WAITING = {"endpoint": "ep-1", "request_idx": 41, "cost": 100.0, "reqnum": 0, "signature": "", "status": None}
ROUTED = {"endpoint": "ep-1", "request_idx": 41, "url": WORKER, "cost": 100.0, "reqnum": 7, "signature": "c2ln"}
ROUTES = [
    ([ROUTED], [], [0]),
    ([{**WAITING, "status": "1 loading"}, ROUTED], [("1 loading", 1)], [0, 41]),
    ([{**WAITING, "status": "1 loading"}, {**WAITING, "status": "1 loading"}, {**WAITING, "status": "1 idle"}, ROUTED],
     [("1 loading", 1), ("1 idle", 3)], [0, 41, 41, 41]),
    ([{**WAITING, "status": None}, {**WAITING, "status": " "}, ROUTED], [], [0, 41, 41]),       # no status: no note
    ([{"request_idx": 5, "status": "endpoint stopped"}, ROUTED], [("endpoint stopped", 1)], [0, 5]),
    ([{**WAITING, "url": "", "status": "0 workers"}, ROUTED], [("0 workers", 1)], [0, 41]),     # empty url: waiting
]


@pytest.mark.parametrize("answers, notes, indices", ROUTES,
                         ids=["routed", "one-wait", "status-changes", "no-status", "stopped", "empty-url"])
def test_route_answers_in_recorded_shapes(answers, notes, indices):
    queue, sent = list(answers), []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["request_idx"])
        return httpx.Response(200, json=queue.pop(0))

    async def scenario():
        async def sleep(seconds):
            await asyncio.sleep(0)
        api = routing.VastAPI("k", transport=httpx.MockTransport(handler), sleep=sleep)
        waits: list = []
        try:
            endpoint = routing.Endpoint(1, "ep-1", "ekey")
            answer = await routing.Router(api).route(endpoint, 100.0, asyncio.get_running_loop().time() + 30, "f",
                                                     waits)
        finally:
            await api.aclose()
        return answer, waits

    answer, waits = asyncio.run(scenario())
    assert answer == ROUTED and sent == indices
    assert [(w.status, w.polls) for w in waits] == notes and all(w.what == "f" for w in waits)


def test_a_maps_calls_write_each_wait_status_once(capsys):
    from vast_magic.backends.base import CallOutcome
    from vast_magic.events import Waited
    outcomes = [CallOutcome(value=i, waits=(Waited("f", "2 loading", 1, 0.5), Waited("f", "1 loading", 4, 3.0)))
                for i in range(100)]
    shown: set = set()
    for outcome in outcomes:
        write_outcome(outcome, shown)
    assert capsys.readouterr().err == ("[vast_magic] f: waiting for a worker after 0.5s (vast: 2 loading)\n"
                                       "[vast_magic] f: waiting for a worker after 3.0s (vast: 1 loading)\n")


def test_waiting_status_is_written_into_the_calls_cell(h, capsys):
    h.fake.route_waits = 2
    outcome = call(h, "square", 4)
    assert outcome.value == 16 and [w.status for w in outcome.waits] == ["waiting for workers: 1 loading"]
    write_outcome(outcome)
    err = capsys.readouterr().err
    assert re.fullmatch(r"\[vast_magic\] square: waiting for a worker after \d+\.\ds "
                        r"\(vast: waiting for workers: 1 loading\)\n", err)


@pytest.mark.parametrize("polls", [1, 2, 3, 1024, 10 ** 6])
def test_route_wait_delay_stays_within_bounds_after_any_number_of_polls(h, polls):
    assert 0.1 <= h.backend.router.wait_delay(polls) <= h.backend.router.retry.cap


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
    with_args = {"type": "obj", "class": "ValueError", "module": {"type": "absolute", "path": ["builtins"]},
                 "contents": {"args": {"type": "tuple", "contents": ["boom-7"]}, "note": "x"}}
    outcome = routing.decode_response(api, httpx.Response(200, json={"result": {"err": with_args}}), spec("f"), {})
    assert isinstance(outcome.error, ValueError) and "boom-7" in str(outcome.error)
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


# -- answers from a Vast host are a third party's: a restricted unpickler ----------------------------
class _Hostile:
    """What a hostile host returns: an object whose unpickling would run ``call(*args)`` on the client."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


def _hostile_cases(canary) -> dict:
    import builtins
    import os
    import subprocess
    return {
        "posix.system": _Hostile(os.system, f"touch {canary}"),
        "builtins.exec": _Hostile(builtins.exec, f"open({str(canary)!r}, 'w').close()"),
        "builtins.eval": _Hostile(builtins.eval, f"open({str(canary)!r}, 'w')"),
        "subprocess.Popen": _Hostile(subprocess.Popen, ["touch", str(canary)]),
        "builtins.getattr": {"nested": [_Hostile(getattr, os, "system")]},
        "builtins.__import__": _Hostile(builtins.__import__, "this"),
    }


@pytest.mark.parametrize("refused", list(_hostile_cases("x")))
def test_a_hostile_answer_cannot_run_code_on_the_client(h, tmp_path, refused):
    canary = tmp_path / "canary"
    h.fake.functions["hostile"] = lambda: _hostile_cases(canary)[refused]
    with pytest.raises(UntrustedTypeError, match="trusted_types") as info:
        call(h, "hostile")
    assert info.value.type_name == refused and refused in str(info.value)
    assert isinstance(info.value, BackendError)
    assert not canary.exists() and "this" not in sys.modules


def test_error_type_names_from_a_vast_worker_import_nothing(h):
    outcome = envelope.outcome_from_message({"ok": False, "error": {"type": "this.Boom", "message": "m",
                                                                    "traceback": ""}})
    assert isinstance(outcome.error, RemoteError) and outcome.error.remote_type == "this.Boom"
    wire_error = {"type": "obj", "class": "Boom", "contents": {"message": "m"}, "module": {"path": ["this"]}}
    api = h.backend.api
    answer = routing.decode_response(api, httpx.Response(200, json={"result": {"err": wire_error}}), spec("f"), {})
    assert isinstance(answer.error, RemoteError)
    assert "this" not in sys.modules                       # importing it would print the Zen of Python


ALLOWED_VALUES = {
    "scalars and containers": [1, 2.5, 1 + 2j, True, None, "s", b"b", bytearray(b"ba"), (1,), [1], {"a": 1},
                               {1, 2}, frozenset({3}), range(3), slice(1, 5, 2), Ellipsis],
    "stdlib values": [datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone.utc), datetime.date(2024, 1, 2),
                      datetime.time(1, 2), datetime.timedelta(days=2), decimal.Decimal("1.10"),
                      fractions.Fraction(1, 3), uuid.UUID(int=5), collections.OrderedDict(a=1),
                      collections.defaultdict(list, a=[1]), collections.deque([1, 2]), collections.Counter("aab"),
                      pathlib.PurePosixPath("/x/y"), pathlib.Path("rel/p")],
    "exceptions": [ValueError("bad"), KeyError("k"), json.JSONDecodeError("m", "doc", 1)],
}


@pytest.mark.parametrize("kind", list(ALLOWED_VALUES))
def test_plain_values_stdlib_values_and_exceptions_come_back(h, kind):
    h.fake.functions["give"] = lambda: ALLOWED_VALUES[kind]
    value = call(h, "give").value
    assert [(type(v), repr(v)) for v in value] == [(type(v), repr(v)) for v in ALLOWED_VALUES[kind]]


def test_numpy_arrays_scalars_and_dtypes_come_back(h):
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4).T, np.array([1, "x", None], dtype=object),
              np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]), np.array(["2020-01-01"], dtype="datetime64[D]"),
              np.ones(3 << 18)]
    scalars = [np.float64(1.5), np.int8(-3), np.bool_(True), np.str_("s"), np.dtype("f8"), np.dtype([("x", "u1")])]
    h.fake.functions["give"] = lambda: (arrays, scalars)
    got_arrays, got_scalars = call(h, "give").value
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got_arrays[:1] + got_arrays[2:],
                                                                          arrays[:1] + arrays[2:]))
    assert got_arrays[1].tolist() == [1, "x", None]
    assert [(type(s), s) for s in got_scalars] == [(type(s), s) for s in scalars]


def test_other_classes_need_trusted_types_and_shipped_classes_never_do(h):
    h.fake.functions["point"] = lambda: Point(3)
    with pytest.raises(UntrustedTypeError, match=f"trusted_types=\\[{__name__}.Point\\]"):
        call(h, "point")
    for trusted in ([Point], [__name__]):
        outcome = asyncio.run(h.backend.call(spec("point", trusted_types=normalize(trusted)), (), {}, {}))
        assert isinstance(outcome.value, Point) and outcome.value.x == 3
    h.fake.classes = {"Point": Point}                      # shipped with the deployment: by reference
    assert isinstance(call(h, "point", classes={Point: "Point"}).value, Point)


@pytest.mark.parametrize("given, expected", [
    (None, ()),
    ([], ()),
    ([Point, "pandas", "my_pkg.models", Point], (f"{__name__}:Point", "pandas", "my_pkg.models")),
    ((int,), ("builtins:int",)),
])
def test_trusted_types_are_normalized(given, expected):
    assert normalize(given) == expected


@pytest.mark.parametrize("given, message", [
    ("pandas", "must be a list of classes or module names"),
    (Point, "must be a list"),
    (5, "must be a list"),
    ([5], "5 is neither a class nor a module name"),
    (["not a module!"], "'not a module!' is neither"),
    ([b"pandas"], "neither a class"),
    ([Point(1)], "neither a class"),
])
def test_bad_trusted_types_are_config_errors(given, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Deployment(name="demo", trusted_types=given)
