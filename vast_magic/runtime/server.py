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
from .executor import CallState, Executor

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
        running: dict = {}                       # call id -> (task, CallState), for this connection's cancels
        while True:
            main, buffers = await framing.read_frame(reader, segments=link)
            try:
                request = wire.loads(main, buffers, resolve)
            except Exception as exc:
                await self._send(writer, sender, {"id": None, "ok": False, "error": wire.error_envelope(exc),
                                                "output": []}, link)
                continue
            if isinstance(request, dict) and request.get("op") in ("cancel", "credit"):
                _control(running, request)
                continue
            state = CallState()
            task = _start(self._answer(request, writer, sender, link, state))
            if not task.done():
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
                call_id = request.get("id") if isinstance(request, dict) else None
                if call_id is not None:
                    running[call_id] = (task, state)
                    task.add_done_callback(lambda _, key=call_id: running.pop(key, None))

    async def _answer(self, request, writer, sender, link, state: CallState) -> None:
        state.entered = True
        if isinstance(request, dict) and request.get("op") == "stream":
            call_id = request.get("id")

            async def send(item) -> None:
                await self._send_item(sender, call_id, item)
            response = await self.executor.stream(request, state, send)
        else:
            response = await self.executor.handle(request, state)
        state.answered = True
        with contextlib.suppress(ConnectionError):
            await self._send(writer, sender, response, link)

    async def _send_item(self, sender: framing.FrameSender, call_id, item) -> None:
        """One item of a stream; an item that cannot be pickled ends the stream with that error."""
        try:
            main, buffers = wire.dumps({"id": call_id, "item": item}, self.executor.app.class_refs)
        except Exception as exc:
            raise TypeError(f"a yielded item could not be pickled: {exc!r}") from None
        await sender.send(main, buffers)

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


def _control(running: dict, request: dict) -> None:
    """``{"op": "cancel", "id": n}``: stop call n of this connection (its answer then says what ran);
    ``{"op": "credit", "id": n, "n": k}``: stream n may send k more items. Ids that answered are ignored."""
    found = running.get(request.get("id"))
    if found is None or found[1].answered:
        return
    task, state = found
    if request["op"] == "credit":
        if state.credit is not None and isinstance(request.get("n"), int):
            state.credit.grant(request["n"])
        return
    state.cancel_requested = True
    if state.entered:                    # else the executor sees the request when the task begins
        task.cancel()

