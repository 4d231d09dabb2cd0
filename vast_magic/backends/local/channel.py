"""One message at a time over an authenticated stream, using the runtime's framing and wire.

Both sides of the engine connection (daemon and client) send whole messages
through ``Channel`` so concurrent senders never interleave frames. A client's
connection to a worker is a ``WorkerChannel``: the same sending, but its
answers are pushed to a listener from the loop's read callback
(``runtime.frame_protocol``), with no reader task between the socket and the call.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping

from ...runtime import framing, handshake, shm, wire
from ...runtime.frame_protocol import FrameProtocol, adopt

__all__ = ["Channel", "WorkerChannel", "connect", "connect_worker"]


class _Messages:
    """What both channels share: whole messages out through one ``FrameSender`` (concurrent senders never
    interleave frames), and on close the shared-memory segments the peer never attached removed."""

    segments: shm.SegmentLink | None
    class_refs: dict
    closed: bool
    _sender: framing.FrameSender

    async def send(self, message: Any) -> None:
        await self.send_pickled(*wire.dumps(message, self.class_refs))

    async def send_pickled(self, main: bytes, buffers=(), alone: bool = False) -> None:
        """Write a message already pickled by ``wire.dumps`` (for callers that must tell a failure to pickle
        from a failure to send); a closed connection raises a ConnectionError. ``alone``: no other call is
        in flight here (written at once: ``framing.FrameSender``)."""
        await self._sender.send(main, buffers, alone)

    def _mark_closed(self) -> None:
        self.closed = True
        if self.segments is not None:
            self.segments.close()


class Channel(_Messages):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 class_refs: Mapping[type, str] | None = None, segments: shm.Segments | None = None):
        self.reader, self.writer = reader, writer
        # worker connections: big buffers via shared memory; closing removes what the worker never attached
        self.segments = segments.link() if segments is not None else None
        self.class_refs = dict(class_refs or {})
        self.resolve = {name: cls for cls, name in self.class_refs.items()}
        self._sender = framing.FrameSender(writer, self.segments)
        self.closed = False

    async def recv(self) -> Any:
        main, buffers = await framing.read_frame(self.reader, segments=self.segments)
        return wire.loads(main, buffers, self.resolve)

    def close(self) -> None:
        self._mark_closed()
        try:
            self.writer.close()
        except Exception:  # the transport may already be gone
            pass


class WorkerChannel(_Messages):
    """A client's connection to a worker: messages out as ``Channel`` sends them; answers in through
    ``listen``, called with each as it arrives (in the loop's read callback, so the caller it resolves
    runs on the next turn)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 segments: shm.Segments | None = None):
        self.segments = segments.link() if segments is not None else None
        self.class_refs: dict = {}
        self.resolve: dict = {}
        self.closed = False
        self._on_message: Callable[[Any], None] | None = None
        self.protocol = FrameProtocol(self._frame, self._closed, segments=self.segments)
        self.protocol.transport = writer.transport
        self.writer = self.protocol.writer
        self._sender = framing.FrameSender(self.writer, self.segments)
        self._streams: tuple | None = (reader, writer)
        self._on_closed: Callable[[BaseException | None], None] | None = None

    def listen(self, on_message: Callable[[Any], None], on_closed: Callable[[BaseException | None], None]) -> None:
        """``on_message(message)`` for each answer from now on, then ``on_closed(exc)`` once. Must not raise:
        an exception (or an answer that does not unpickle) closes the connection."""
        self._on_message, self._on_closed = on_message, on_closed
        reader, writer = self._streams
        self._streams = None
        adopt(reader, writer, self.protocol)

    def _frame(self, main, buffers) -> None:
        self._on_message(wire.loads(main, buffers, self.resolve))

    def _closed(self, exc: BaseException | None) -> None:
        self._mark_closed()
        if self._on_closed is not None:
            self._on_closed(exc)

    def close(self) -> None:
        self._mark_closed()
        self.protocol.close()
        if self._streams is not None:            # never listened to: the stream writer still owns it
            self._streams[1].close()


async def _authenticated(port: int, token: str, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
    try:
        await handshake.client_hello(reader, writer, token)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def connect(port: int, token: str, class_refs: Mapping[type, str] | None = None,
                  timeout: float = 10.0, segments: shm.Segments | None = None) -> Channel:
    """Open a mutually authenticated channel to 127.0.0.1:port (TCP within ``timeout`` s, then the handshake).

    Raises ``handshake.HandshakeError`` (a PermissionError) when the listener
    cannot prove it holds the token: nothing was sent to it, nothing read from it.
    """
    reader, writer = await _authenticated(port, token, timeout)
    return Channel(reader, writer, class_refs, segments)


async def connect_worker(port: int, token: str, timeout: float = 10.0,
                         segments: shm.Segments | None = None) -> WorkerChannel:
    """``connect`` for a client's calls to a worker: a ``WorkerChannel`` (answers pushed to ``listen``)."""
    reader, writer = await _authenticated(port, token, timeout)
    return WorkerChannel(reader, writer, segments)
