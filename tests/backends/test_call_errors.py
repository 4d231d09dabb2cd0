"""Which error a failed call raises: the arguments are blamed only where they are pickled.

A call's request is pickled once per attempt, before a worker is chosen; only that step
raises ``CaptureError``, chained to the pickling error. Whatever fails after it (the
connection, the worker, the retry loop) is a ``WorkerLostError``, on every Python: the
socket transport of 3.12 and 3.13 answers a write after the connection closed with
``TypeError: 'NoneType' object is not callable``, which was once reported as
"the arguments of echo cannot be sent to a worker".
"""
from __future__ import annotations

import asyncio
import gc
import socket
import threading

import numpy as np
import pytest

from tests.backends.vast.vast_harness import KEY, Harness as VastHarness, make_plan
from vast_magic.backends.base import CallSpec
from vast_magic.backends.local.backend import pickled_call
from vast_magic.backends.local.channel import connect_worker
from vast_magic.backends.local.pool import Route, WorkerConnection
from vast_magic.testing import FakeVast
from vast_magic.errors import CaptureError, WorkerLostError
from vast_magic.runtime import handshake, wire

TOKEN = "token-of-the-test"
SPEC = CallSpec("demo", "default", "echo", timeout=10.0, max_queue_time=30.0)


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_a_send_queued_behind_one_that_loses_the_connection_is_a_worker_loss():
    """The race of the SIGKILL test: one call is writing a big frame, a second waits for its turn,
    the worker dies. Both calls were pickled fine, so both are WorkerLostError (retryable)."""
    async def scenario():
        loop, unhandled, die = asyncio.get_running_loop(), [], asyncio.Event()
        loop.set_exception_handler(lambda _, context: unhandled.append(context.get("message")))

        async def worker(reader, writer):            # takes the hello, then reads nothing until it dies
            if await handshake.server_hello(reader, writer, TOKEN):
                await die.wait()
            writer.transport.abort()

        listener = socket.create_server(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # accepted sockets take little: the
        server = await asyncio.start_server(worker, sock=listener)          # big frame cannot hide in the kernel
        conn = WorkerConnection(Route("w", 0, 1.0, "v1"), await connect_worker(server.sockets[0].getsockname()[1], TOKEN))
        # an array travels out of band, in chunks with a drain each: the writer waits for the reader
        big = asyncio.ensure_future(conn.call(1, pickled_call(SPEC, 1, (np.zeros(16 << 20, np.uint8),), {}, {}), {}))
        await _until(lambda: conn.channel.writer.transport.get_write_buffer_size() > 0, "the big frame to stall")
        small = asyncio.ensure_future(conn.call(2, pickled_call(SPEC, 2, (7,), {}, {}), {}))
        await _until(lambda: 2 in conn.pending, "the second call to wait for its turn")
        die.set()
        errors = await asyncio.wait_for(asyncio.gather(big, small, return_exceptions=True), 10)
        server.close()
        del big, small
        gc.collect()                                 # a failed future nobody retrieved would be reported now
        return errors, conn, unhandled

    (big_error, small_error), conn, unhandled = asyncio.run(scenario())
    assert isinstance(big_error, WorkerLostError) and isinstance(small_error, WorkerLostError), (big_error, small_error)
    assert isinstance(small_error.__cause__, ConnectionError)
    assert "worker w is unreachable" in str(small_error)
    assert conn.pending == {} and not conn.alive
    assert unhandled == []


class _StaysHere:
    def __reduce__(self):
        raise RuntimeError("this object stays on the client")


UNPICKLABLE = [
    ("lock", lambda: threading.Lock(), TypeError, "cannot pickle '_thread.lock' object"),
    ("generator", lambda: (x for x in ()), TypeError, "cannot pickle 'generator' object"),
    ("reduce raises", _StaysHere, RuntimeError, "this object stays on the client"),
]


@pytest.mark.parametrize("make, cause, words", [case[1:] for case in UNPICKLABLE], ids=[c[0] for c in UNPICKLABLE])
def test_local_unpicklable_argument_is_a_capture_error_chained_to_the_pickling_error(make, cause, words):
    with pytest.raises(CaptureError, match="the arguments of echo cannot be sent.*Pass plain data") as info:
        pickled_call(SPEC, 1, (1,), {"x": make()}, {})
    assert isinstance(info.value.__cause__, cause) and words in str(info.value.__cause__)
    assert words in str(info.value)


def test_local_call_request_is_pickled_as_the_wire_documents():
    main, buffers = pickled_call(SPEC, 5, (1, bytearray(b"ab")), {"k": "v"}, {})
    assert wire.loads(main, buffers) == {"op": "call", "id": 5, "fn": "echo", "args": (1, bytearray(b"ab")),
                                         "kwargs": {"k": "v"}, "cost": 100.0, "timeout": 10.0, "version": None}


@pytest.mark.parametrize("make, cause, words", [case[1:] for case in UNPICKLABLE], ids=[c[0] for c in UNPICKLABLE])
def test_vast_unpicklable_argument_is_a_capture_error_chained_to_the_pickling_error(tmp_path, make, cause, words):
    fake = FakeVast(api_key=KEY, functions={"echo": lambda *a, **k: a})
    harness = VastHarness(tmp_path, fake)
    harness.apply(make_plan(tmp_path))
    requests = len(fake.requests)
    with pytest.raises(CaptureError, match="the arguments of echo cannot be sent") as info:
        asyncio.run(harness.backend.call(SPEC, (make(),), {}, {}))
    assert isinstance(info.value.__cause__, cause) and words in str(info.value.__cause__)
    assert len(fake.requests) == requests                  # nothing was sent, not even a /route/
