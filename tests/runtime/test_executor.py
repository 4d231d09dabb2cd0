"""One call at a time: admission, FIFO for serial functions, timeouts, bad requests; log line assembly."""
from __future__ import annotations

import asyncio

import pytest

from vast_magic.runtime.engine_link import LogBuffer
from vast_magic.runtime.executor import Executor
from vast_magic.runtime.registry import LoadedApp, RemoteEntry
from tests.runtime.worker_harness import remote_spec


def _app(**functions) -> LoadedApp:
    remotes = {}
    for name, (function, options) in functions.items():
        remotes[name] = RemoteEntry(name, function, remote_spec(name, **options))
    return LoadedApp(modules={}, remotes=remotes, contexts=[])


def _call(fn, *args, id=1, **extra):
    return {"op": "call", "id": id, "fn": fn, "args": args, "kwargs": {}, "cost": 100.0, "timeout": 5.0, **extra}


def test_serial_functions_run_one_at_a_time_in_arrival_order():
    order, running = [], []

    async def step(i):
        running.append(i)
        assert len(running) == 1
        await asyncio.sleep(0.01 * (5 - i))
        order.append(i)
        running.remove(i)
        return i

    async def scenario():
        ex = Executor(_app(step=(step, {"allow_parallel_requests": False})), {"step": None})
        return await asyncio.gather(*(ex.handle(_call("step", i, id=i)) for i in range(5)))

    responses = asyncio.run(scenario())
    assert order == [0, 1, 2, 3, 4] and [r["value"] for r in responses] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in responses] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("perf, inflight_cost, cost, overloaded", [
    (10.0, 250.0, 100.0, True),      # (250 + 100) / 10 = 35 s > 30 s
    (10.0, 250.0, 40.0, False),      # 29 s
    (1e-9, 1.0, 1.0, True),          # perf floor 1e-5: anything queued behind a call is too much
    (None, 1e12, 1e12, False),       # no perf known: no admission rule
])
def test_overload_rule(perf, inflight_cost, cost, overloaded):
    async def scenario():
        release = asyncio.Event()

        async def wait():
            await release.wait()
            return "ok"

        ex = Executor(_app(wait=(wait, {})), {"wait": perf})
        first = asyncio.ensure_future(ex.handle(_call("wait", cost=inflight_cost)))
        await asyncio.sleep(0.01)
        assert ex.inflight_workload == inflight_cost and ex.inflight_calls == 1
        second = asyncio.ensure_future(ex.handle(_call("wait", id=2, cost=cost)))
        await asyncio.sleep(0.01)
        release.set()
        results = await first, await second
        assert ex.inflight_workload == 0 and ex.inflight_calls == 0
        return results

    first, second = asyncio.run(scenario())
    assert first["ok"] is True
    assert second.get("overloaded", False) is overloaded and second["id"] == 2


def test_an_idle_worker_admits_any_cost():
    async def f():
        return 1
    ex = Executor(_app(f=(f, {"max_queue_time": 0.001})), {"f": 1.0})
    assert asyncio.run(ex.handle(_call("f", cost=1e9)))["value"] == 1


@pytest.mark.parametrize("request_, error_type, message", [
    ("not a dict", "builtins.ValueError", "not a call request"),
    ({"op": "stop", "id": 1}, "builtins.ValueError", "not a call request"),
    (_call("missing"), "builtins.LookupError", "no remote function 'missing'"),
    (_call("f", args="xy"), "builtins.TypeError", "tuple"),
    (_call("f", kwargs=[1]), "builtins.TypeError", "tuple"),
    (_call("f", cost=-1), "builtins.ValueError", "cost"),
    (_call("f", cost=float("nan")), "builtins.ValueError", "cost"),
    (_call("f", cost="10"), "builtins.ValueError", "cost"),
    (_call("f", timeout=float("inf")), "builtins.ValueError", "timeout"),
    (_call("f", 1, 2, 3), "builtins.TypeError", "positional"),
])
def test_bad_requests_get_error_responses(request_, error_type, message):
    async def f(x=1):
        return x
    response = asyncio.run(Executor(_app(f=(f, {})), {"f": None}).handle(request_))
    assert response["ok"] is False and response["error"]["type"] == error_type
    assert message in response["error"]["message"]


def test_timeout_keeps_the_output_printed_so_far():
    async def slow():
        print("started")
        await asyncio.sleep(5)

    response = asyncio.run(Executor(_app(slow=(slow, {})), {}).handle(_call("slow", timeout=0.1)))
    assert response["error"]["type"] == "builtins.TimeoutError"
    assert response["output"] == [("stdout", "started\n")]


def test_missing_timeout_falls_back_to_the_function_option():
    async def slow():
        await asyncio.sleep(5)
    ex = Executor(_app(slow=(slow, {"timeout": 0.05})), {})
    assert asyncio.run(ex.handle(_call("slow", timeout=None)))["error"]["type"] == "builtins.TimeoutError"


def test_log_buffer_assembles_lines_per_stream_and_call():
    buf, call_a, call_b = LogBuffer(), object(), object()
    buf.write("stdout", "hel", "f", call_a)
    buf.write("stdout", "other\n", "f", call_b)
    buf.write("stdout", "lo\nwor", "f", call_a)
    buf.write("stderr", "e1\n", None)
    assert [line[1:] for line in buf.take(include_partial=False)] == [
        ("stdout", "other", "f"), ("stdout", "hello", "f"), ("stderr", "e1", None)]
    assert [line[1:] for line in buf.take()] == [("stdout", "wor", "f")]
    assert buf.take() == []


def _map(fn, items, id=9, timeout=5.0):
    return {"op": "map", "id": id, "fn": fn, "items": [((x,), {}) for x in items], "cost": 100.0, "timeout": timeout}


@pytest.mark.parametrize("options", [{}, {"allow_parallel_requests": False}])
def test_a_map_chunk_answers_each_item_in_order_and_one_failure_loses_nothing(options):
    async def half(x):
        if x == 3:
            raise ValueError("three")
        print("item", x)
        await asyncio.sleep(0.001 * (5 - x))
        return x / 2

    response = asyncio.run(Executor(_app(half=(half, options)), {"half": None}).handle(_map("half", range(6))))
    assert response["id"] == 9 and response["ok"] and len(response["items"]) == 6
    assert [item.get("value") for item in response["items"]] == [0.0, 0.5, 1.0, None, 2.0, 2.5]
    assert response["items"][3]["error"]["type"] == "builtins.ValueError"
    assert response["items"][4]["output"] == [("stdout", "item 4\n")]


def test_map_items_of_a_sync_function_and_their_timeouts():
    import time

    def nap(x):
        time.sleep(x)
        return x

    async def late(x):
        await asyncio.sleep(x)
        return x

    ex = Executor(_app(nap=(nap, {}), late=(late, {})), {"nap": None, "late": None})
    assert [i["value"] for i in asyncio.run(ex.handle(_map("nap", [0.0, 0.01])))["items"]] == [0.0, 0.01]
    items = asyncio.run(ex.handle(_map("late", [0.0, 30.0], timeout=0.2)))["items"]
    assert items[0]["value"] == 0.0
    assert items[1]["error"]["type"] == "builtins.TimeoutError" and "within its timeout" in items[1]["error"]["message"]
    assert ex.inflight_calls == 0 and ex.inflight_workload == 0


@pytest.mark.parametrize("items, error", [
    ([], "non-empty list"),
    ("abc", "non-empty list"),
    ([((1,), {}), "x"], "not enough values to unpack"),
])
def test_a_bad_map_request_is_one_error_answer(items, error):
    async def f(x):
        return x

    request = {"op": "map", "id": 4, "fn": "f", "items": items, "cost": 1.0, "timeout": 1.0}
    response = asyncio.run(Executor(_app(f=(f, {})), {"f": None}).handle(request))
    assert response["id"] == 4 and not response["ok"] and error in response["error"]["message"]
