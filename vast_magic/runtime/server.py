"""The call server: authenticated, persistent, multiplexed connections on 127.0.0.1.

Only loopback, never all interfaces (the official worker listens everywhere). Each
connection starts with the mutual handshake (``handshake.py``, at most
``MAX_PRE_AUTH`` at once, each bounded in time); after it, request frames are answered
concurrently and matched by ``id``, with one ``FrameSender`` per connection so response
frames never interleave. A response that cannot be pickled becomes an error
response, so a caller always gets an answer for its id.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys

from . import framing, handshake, wire
from .executor import Executor

__all__ = ["CallServer"]


class CallServer:
    def __init__(self, executor: Executor, token, host: str = "127.0.0.1", segments=None):
        self.executor = executor
        self._segments = segments                  # shm.Segments: big buffers via shared memory (local workers)
        self._stopping = False
        self._gate = handshake.PreAuthGate(token)
        self._host = host
        self._server: asyncio.base_events.Server | None = None
        self._calls: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int | None = None

    async def start(self) -> int:
        """Listen on an ephemeral loopback port; return it."""
        self._server = await asyncio.start_server(self._connection, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight calls finish for ``grace`` s, cancel the rest, close."""
        self._stopping = True
        self.stop_accepting()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=max(grace, 0.0))
        for task in set(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=0.5)
        for writer in set(self._writers):
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        link = self._segments.link() if self._segments is not None else None
        try:
            if await self._gate.admit(reader, writer):
                await self._serve(reader, writer, link)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass                                  # client went away; its calls' answers are dropped
        finally:
            self._writers.discard(writer)
            writer.close()
            if link is not None and not self._stopping:
                link.close()                      # the client is gone: what it never attached, nobody will
                                                  # (at shutdown it may still read them: the engine sweeps later)

    async def _serve(self, reader, writer, link) -> None:
        sender = framing.FrameSender(writer, link)          # whole frames, small ones of a loop turn in one write
        resolve = self.executor.app.classes
        while True:
            main, buffers = await framing.read_frame(reader, segments=link)
            try:
                request = wire.loads(main, buffers, resolve)
            except Exception as exc:
                await self._send(writer, sender, {"id": None, "ok": False, "error": wire.error_envelope(exc),
                                                "output": []}, link)
                continue
            task = _start(self._answer(request, writer, sender, link))
            if not task.done():
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)

    async def _answer(self, request, writer, sender, link) -> None:
        response = await self.executor.handle(request)
        with contextlib.suppress(ConnectionError):
            await self._send(writer, sender, response, link)

    async def _send(self, writer, sender: framing.FrameSender, response: dict, link) -> None:
        refs = self.executor.app.class_refs
        try:
            main, buffers = wire.dumps(response, refs)
        except Exception as exc:                    # the value (or an output item) is not picklable
            failure = {"id": response.get("id"), "ok": False, "output": response.get("output", []),
                       "error": wire.error_envelope(TypeError(f"the result could not be pickled: {exc!r}"))}
            main, buffers = wire.dumps(failure, refs)
        await sender.send(main, buffers)


def _start(coro) -> asyncio.Task:
    """A task for one request. From Python 3.12 it starts at once (``eager_start``): a call that never
    waits is answered within this step, without a trip round the event loop; before, it starts next turn."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    return loop.create_task(coro)
