"""The call server: authenticated, persistent, multiplexed connections on 127.0.0.1.

Only loopback, never all interfaces (the official worker listens everywhere). Each
connection starts with the mutual handshake (``handshake.py``, at most
``MAX_PRE_AUTH`` at once, each bounded in time); after it, request frames are taken
as their bytes arrive (``frame_protocol``), answered concurrently and matched by ``id``, with one ``FrameSender`` per connection so response
frames never interleave. A response that cannot be pickled becomes an error
response, so a caller always gets an answer for its id.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys

from . import framing, handshake, wire
from .executor import CallState, Executor
from .frame_protocol import FrameProtocol, adopt

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
        """Answer this connection's requests until it closes. Frames are taken in the loop's read callback
        (``frame_protocol``): each request's task is made as its bytes arrive, with no reader task between."""
        loop = asyncio.get_running_loop()
        closed = loop.create_future()
        resolve = self.executor.app.classes
        running: dict = {}                       # call id -> CallState (with its task), for this connection's cancels

        def frame(main, buffers) -> None:
            try:
                request = wire.loads(main, buffers, resolve)
            except Exception as exc:
                self._track(asyncio.ensure_future(self._send(sender, {
                    "id": None, "ok": False, "error": wire.error_envelope(exc), "output": []})))
                return
            if isinstance(request, dict) and request.get("op") in ("cancel", "credit"):
                _control(running, request)
                return
            state = CallState()
            call_id = request.get("id") if isinstance(request, dict) else None
            task = _start(self._answer(request, sender, protocol, state, running, call_id), loop)
            if not task.done():                  # it forgets itself when it ends (no done callbacks: a turn less)
                state.task = task
                self._calls.add(task)
                if call_id is not None:
                    running[call_id] = state

        def ended(exc) -> None:
            if not closed.done():
                closed.set_result(None)

        protocol = FrameProtocol(frame, ended, segments=link)
        protocol.connection_made(writer.transport)
        sender = framing.FrameSender(protocol.writer, link)  # whole frames, small ones of a loop turn in one write
        adopt(reader, writer, protocol)
        await closed

    def _track(self, task: asyncio.Task) -> None:
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, request, sender, protocol, state: CallState, running: dict, call_id) -> None:
        state.entered = True
        try:
            if isinstance(request, dict) and request.get("op") == "stream":
                async def send(item) -> None:
                    await self._send_item(sender, call_id, item)
                response = await self.executor.stream(request, state, send)
            else:
                response = await self.executor.handle(request, state)
            state.answered = True
            alone = len(running) <= 1 and not protocol.buffered()     # no other call of this connection waits
            with contextlib.suppress(ConnectionError):
                await self._send(sender, response, alone)
        finally:
            if state.task is not None:
                self._calls.discard(state.task)
                if running.get(call_id) is state:
                    del running[call_id]

    async def _send_item(self, sender: framing.FrameSender, call_id, item) -> None:
        """One item of a stream; an item that cannot be pickled ends the stream with that error."""
        try:
            main, buffers = wire.dumps({"id": call_id, "item": item}, self.executor.app.class_refs)
        except Exception as exc:
            raise TypeError(f"a yielded item could not be pickled: {exc!r}") from None
        await sender.send(main, buffers)

    async def _send(self, sender: framing.FrameSender, response: dict, alone: bool = False) -> None:
        refs = self.executor.app.class_refs
        try:
            main, buffers = wire.dumps(response, refs)
        except Exception as exc:                    # the value (or an output item) is not picklable
            failure = {"id": response.get("id"), "ok": False, "output": response.get("output", []),
                       "error": wire.error_envelope(TypeError(f"the result could not be pickled: {exc!r}"))}
            main, buffers = wire.dumps(failure, refs)
        await sender.send(main, buffers, alone)


def _start(coro, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
    """A task for one request. From Python 3.12 it starts at once (``eager_start``): a call that never
    waits is answered within this step, without a trip round the event loop; before, it starts next turn."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    return loop.create_task(coro)


def _control(running: dict, request: dict) -> None:
    """``{"op": "cancel", "id": n}``: stop call n of this connection (its answer then says what ran);
    ``{"op": "credit", "id": n, "n": k}``: stream n may send k more items. Ids that answered are ignored."""
    state = running.get(request.get("id"))
    if state is None or state.answered:
        return
    if request["op"] == "credit":
        if state.credit is not None and isinstance(request.get("n"), int):
            state.credit.grant(request["n"])
        return
    state.cancel_requested = True
    if state.entered:                    # else the executor sees the request when the task begins
        state.task.cancel()
