"""The call server's control messages, in process over a real loopback connection: ``cancel`` (queued,
running, arriving in the same read as its call) and ``stream`` with ``credit`` (runtime/streaming.py)."""
from __future__ import annotations

import asyncio
import sys

import pytest

from vast_magic.backends.local.channel import connect
from vast_magic.runtime import framing, wire
from vast_magic.runtime.executor import Executor
from vast_magic.runtime.registry import LoadedApp, RemoteEntry
from vast_magic.runtime.server import CallServer
from tests.runtime.worker_harness import TOKEN, remote_spec


def _server(**functions) -> CallServer:
    remotes = {name: RemoteEntry(name, fn, remote_spec(name, **options)) for name, (fn, options) in functions.items()}
    return CallServer(Executor(LoadedApp(modules={}, remotes=remotes, contexts=[]), {n: None for n in remotes}), TOKEN)


def _request(fn: str, *args, id: int, op: str = "call", **extra) -> dict:
    return {"op": op, "id": id, "fn": fn, "args": args, "kwargs": {}, "cost": 1.0, "timeout": 30.0, **extra}


async def _with_channel(server: CallServer, scenario):
    channel = await connect(await server.start(), TOKEN)
    try:
        return await asyncio.wait_for(scenario(channel), 60)
    finally:
        channel.close()
        await server.shutdown(0.1)


def test_a_cancel_that_arrives_with_its_call_is_answered():
    """Before 3.12 a request's task begins a loop turn after it was read, so a cancel read in the same turn
    finds it not begun (never_ran); from 3.12 the task starts eagerly (server._start) and has begun, so an
    ``async def`` that waits is stopped. Either way the call answers and the function body never finishes."""
    ran = []

    async def work():
        await asyncio.sleep(0)
        ran.append(1)
        return "ran"

    async def scenario(channel):
        frames = [wire.dumps(_request("work", id=7)), wire.dumps({"op": "cancel", "id": 7})]
        assert not any(buffers for _, buffers in frames)
        channel.writer.write(b"".join(framing.HEADER.pack(0, len(main)) + bytes(main) for main, _ in frames))
        await channel.writer.drain()                       # both frames in one write: one read on the server
        return await channel.recv()

    answer = asyncio.run(_with_channel(_server(work=(work, {})), scenario))
    expected = "stopped" if sys.version_info >= (3, 12) else "never_ran"
    assert (answer["id"], answer["ok"], answer["cancelled"]) == (7, False, expected) and ran == []


@pytest.mark.parametrize("plain, outcome", [(False, "stopped"), (True, "still_running")])
def test_cancelling_a_running_call_says_what_it_did(plain, outcome):
    import threading
    started, release = threading.Event(), threading.Event()

    def blocking():
        started.set()
        release.wait(30)
        return "done"

    async def waiting():
        started.set()
        await asyncio.sleep(30)

    async def scenario(channel):
        await channel.send(_request("f", id=1))
        while not started.is_set():
            await asyncio.sleep(0.01)
        await channel.send({"op": "cancel", "id": 1})
        answer = await channel.recv()
        release.set()
        return answer

    answer = asyncio.run(_with_channel(_server(f=(blocking if plain else waiting, {})), scenario))
    assert answer["cancelled"] == outcome and answer["message"].startswith("f was cancelled while running")


def test_a_call_queued_behind_a_serial_one_and_cancelled_never_runs():
    ran = []

    async def serial(name):
        ran.append(name)
        if name == "first":
            await asyncio.sleep(30)
        return name

    async def scenario(channel):
        await channel.send(_request("serial", "first", id=1))
        while not ran:
            await asyncio.sleep(0.01)
        await channel.send(_request("serial", "second", id=2))
        await asyncio.sleep(0.05)
        await channel.send({"op": "cancel", "id": 2})
        second = await channel.recv()
        await channel.send({"op": "cancel", "id": 1})
        return second, await channel.recv()

    second, first = asyncio.run(_with_channel(_server(serial=(serial, {"allow_parallel_requests": False})), scenario))
    assert (second["id"], second["cancelled"]) == (2, "never_ran")
    assert (first["id"], first["cancelled"]) == (1, "stopped") and ran == ["first"]


def test_a_stream_waits_for_credit_and_ends_with_the_count():
    made = []

    async def numbers(n):
        for i in range(n):
            made.append(i)
            yield i

    async def scenario(channel):
        await channel.send(_request("numbers", 10, id=3, op="stream", window=4))
        items = [(await channel.recv())["item"] for _ in range(4)]
        await asyncio.sleep(0.2)
        before_credit = len(made)                         # the window is spent: one more made, then it waits
        await channel.send({"op": "credit", "id": 3, "n": 6})
        items += [(await channel.recv())["item"] for _ in range(6)]
        return items, before_credit, await channel.recv()

    items, before_credit, end = asyncio.run(_with_channel(_server(numbers=(numbers, {})), scenario))
    assert items == list(range(10)) and before_credit == 5
    assert (end["id"], end["ok"], end.get("value")) == (3, True, 10), end


@pytest.mark.parametrize("request_, message", [
    (_request("plain", id=1, op="stream"), "plain does not yield: call it with `await plain(...)`"),
    (_request("numbers", 1, id=1), "numbers yields items: consume it with `for x in numbers.stream(...)`"),
])
def test_stream_and_call_refuse_the_other_kind(request_, message):
    async def plain():
        return 1

    async def numbers(n):
        yield n

    async def scenario(channel):
        await channel.send(request_)
        return await channel.recv()

    answer = asyncio.run(_with_channel(_server(plain=(plain, {}), numbers=(numbers, {})), scenario))
    assert answer["ok"] is False and answer["error"]["type"] == "builtins.TypeError"
    assert answer["error"]["message"].startswith(message)
