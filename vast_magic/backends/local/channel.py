"""One message at a time over an authenticated stream, using the runtime's framing and wire.

Both sides of the engine connection (daemon and client) and the client's
worker connections send whole messages through ``Channel`` so concurrent
senders never interleave frames.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

from ...runtime import framing, handshake, shm, wire

__all__ = ["Channel", "connect"]


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 class_refs: Mapping[type, str] | None = None, segments: shm.Segments | None = None):
        self.reader, self.writer = reader, writer
        # worker connections: big buffers via shared memory; closing removes what the worker never attached
        self.segments = segments.link() if segments is not None else None
        self.class_refs = dict(class_refs or {})
        self.resolve = {name: cls for cls, name in self.class_refs.items()}
        self._sender = framing.FrameSender(writer, self.segments)
        self.closed = False

    async def send(self, message: Any) -> None:
        await self.send_pickled(*wire.dumps(message, self.class_refs))

    async def send_pickled(self, main: bytes, buffers=()) -> None:
        """Write a message already pickled by ``wire.dumps`` (for callers that must tell a failure
        to pickle from a failure to send); a closed connection raises a ConnectionError."""
        await self._sender.send(main, buffers)

    async def recv(self) -> Any:
        main, buffers = await framing.read_frame(self.reader, segments=self.segments)
        return wire.loads(main, buffers, self.resolve)

    def close(self) -> None:
        self.closed = True
        if self.segments is not None:
            self.segments.close()
        try:
            self.writer.close()
        except Exception:  # the transport may already be gone
            pass


async def connect(port: int, token: str, class_refs: Mapping[type, str] | None = None,
                  timeout: float = 10.0, segments: shm.Segments | None = None) -> Channel:
    """Open a mutually authenticated channel to 127.0.0.1:port (TCP within ``timeout`` s, then the handshake).

    Raises ``handshake.HandshakeError`` (a PermissionError) when the listener
    cannot prove it holds the token: nothing was sent to it, nothing read from it.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
    try:
        await handshake.client_hello(reader, writer, token)
    except BaseException:
        writer.close()
        raise
    return Channel(reader, writer, class_refs, segments)
