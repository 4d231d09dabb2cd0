"""Frames parsed as the bytes arrive, in the event loop's own read callback (an ``asyncio.BufferedProtocol``).

A stream reader needs a task to pull each frame: the bytes arrive, the loop
wakes that task on its next turn, and only then is the frame handed on, which
wakes its consumer one turn later again. On a no-op call that extra turn (an
``epoll_wait`` and a task step on each side) is a good part of the time. Here
the transport reads straight into this protocol's buffer and each complete
frame goes to ``on_frame`` at once, so an answer wakes its caller in the same
turn it arrived, as a plain echo does.

The framing is ``framing``'s, byte for byte, with the same limits checked before
anything is allocated. Small frames are cut from one reusable buffer; a big
part (the main pickle or an inline buffer past half that buffer) is received
straight into its own preallocated ``bytearray``, so it is copied once, as
``framing.read_frame`` does. A connection is taken over after its handshake
(``adopt``), which ran on asyncio streams. Writing goes through ``writer``
(what ``framing.FrameSender`` needs: ``write``, ``writelines``,
``is_closing``, ``drain``, ``transport``), with the transport's flow control.
"""
from __future__ import annotations

import asyncio
import collections
import struct
from typing import Callable

from . import shm
from .framing import HEADER, LENGTH, MAX_BUFFERS, MAX_FRAME_BYTES, SHARED, FrameError

__all__ = ["FrameProtocol", "adopt"]

_BUFFER = 256 << 10                # the reusable receive buffer; header and lengths always fit in half of it
_BIG = _BUFFER // 2                # a part at least this long is received into its own bytearray

OnFrame = Callable[[bytearray, list], None]
OnClosed = Callable[["BaseException | None"], None]


class FrameProtocol(asyncio.BufferedProtocol):
    """One connection's frames to ``on_frame(main, buffers)``, then ``on_closed(exc)`` once when it ends.

    ``on_frame`` runs in the read callback: it must not block or raise (an
    exception closes the connection). A frame that breaks the rules closes the
    connection with that ``FrameError``.
    """

    def __init__(self, on_frame: OnFrame, on_closed: OnClosed, *, segments=None,
                 max_bytes: int = MAX_FRAME_BYTES, max_buffers: int = MAX_BUFFERS):
        self.on_frame, self.on_closed = on_frame, on_closed
        self.segments, self.max_bytes, self.max_buffers = segments, max_bytes, max_buffers
        self.transport: asyncio.Transport | None = None
        self.writer = _Writer(self)
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)
        self._lo = self._hi = 0                  # unread bytes are _buf[_lo:_hi]
        self._parts: list[tuple[str, int]] | None = None   # the frame being read: (kind, length) of each part
        self._got: list = []
        self._blob: bytearray | None = None      # a big part received directly, and how much of it came
        self._blob_pos = 0
        self._paused = False
        self._drain_waiters: collections.deque = collections.deque()
        self._ended = False
        self._kept = None                        # the stream writer of the handshake (see adopt)

    # -- asyncio protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._blob is not None:
            return memoryview(self._blob)[self._blob_pos:]
        if self._lo == self._hi:
            self._lo = self._hi = 0
        elif self._hi == len(self._buf):
            self._compact()
        return self._view[self._hi:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._blob is not None:
            self._blob_pos += nbytes
            if self._blob_pos < len(self._blob):
                return
            blob, self._blob = self._blob, None
            self._got.append(self._part(blob))
        else:
            self._hi += nbytes
        self._parse_guarded()

    def eof_received(self) -> bool:
        return False                             # the transport closes; connection_lost follows

    def connection_lost(self, exc) -> None:
        self._end(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drainers(None)

    def buffered(self) -> bool:
        """Whether bytes of a further frame are already here (more requests are on their way)."""
        return self._hi > self._lo or self._parts is not None

    # -- parsing --------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes that arrived before this protocol took over (with the handshake's last message)."""
        while data and not self._ended:
            target = self.get_buffer(len(data))
            n = min(len(target), len(data))
            target[:n] = data[:n]
            data = data[n:]
            self.buffer_updated(n)

    def _parse_guarded(self) -> None:
        try:
            self._parse()
        except FrameError as exc:
            self._fail(exc)
        except Exception as exc:                 # on_frame broke its promise: the connection cannot go on
            self._fail(exc)

    def _parse(self) -> None:
        while not self._ended:
            if self._parts is None and not self._start_frame():
                return
            if not self._read_parts():
                return
            main, *buffers = self._got
            self._parts, self._got = None, []
            self.on_frame(main, buffers)

    def _start_frame(self) -> bool:
        """Read a header and its lengths when they are all here; False to wait for more."""
        lo, available = self._lo, self._hi - self._lo
        if available < HEADER.size:
            return False
        count, main_len = HEADER.unpack_from(self._buf, lo)
        if count > self.max_buffers:
            raise FrameError(f"frame announces {count} buffers (limit {self.max_buffers})")
        if available < HEADER.size + count * LENGTH.size:
            return False
        lengths = struct.unpack_from(f"!{count}Q", self._buf, lo + HEADER.size) if count else ()
        if any(n & SHARED for n in lengths) and self.segments is None:
            raise FrameError("frame announces a shared-memory buffer on a connection that does not take them")
        total = main_len + sum(n & ~SHARED for n in lengths)
        if total > self.max_bytes:
            raise FrameError(f"frame announces {total} bytes (limit {self.max_bytes})")
        self._lo = lo + HEADER.size + count * LENGTH.size
        self._parts = [("main", main_len)] + [("shm", n & ~SHARED) if n & SHARED else ("inline", n) for n in lengths]
        return True

    def _read_parts(self) -> bool:
        """Take the frame's parts that are here; False when one is still on its way."""
        parts = self._parts
        while len(self._got) < len(parts):
            kind, length = parts[len(self._got)]
            size = shm.NAME_BYTES if kind == "shm" else length
            available = self._hi - self._lo
            if available >= size:
                data = self._buf[self._lo:self._lo + size]
                self._lo += size
                self._got.append(self._part(data))
                continue
            if size >= _BIG and kind != "shm":   # received straight into its own buffer: copied once
                blob = bytearray(size)
                blob[:available] = self._view[self._lo:self._hi]
                self._lo = self._hi = 0
                self._blob, self._blob_pos = blob, available
            elif len(self._buf) - self._lo < size:
                self._compact()
            return False
        return True

    def _part(self, data: bytearray):
        """A received part as ``on_frame`` gets it: the main pickle and inline buffers as bytearrays
        (numpy arrays rebuilt on them are writable); a shared-memory buffer mapped from its segment."""
        kind, length = self._parts[len(self._got)]
        if kind != "shm":
            return data
        try:
            return self.segments.attach(bytes(data), length)
        except (OSError, ValueError) as exc:
            raise FrameError(f"cannot attach the shared-memory buffer ({exc})") from exc

    def _compact(self) -> None:
        size = self._hi - self._lo
        self._buf[:size] = bytes(self._view[self._lo:self._hi])     # a copy: the ranges may overlap
        self._lo, self._hi = 0, size

    # -- ending -----------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._end(exc)

    def _end(self, exc) -> None:
        if self._ended:
            return
        self._ended = True
        self._wake_drainers(exc or ConnectionResetError("the connection is closed"))
        self.on_closed(exc)

    def _wake_drainers(self, exc) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc if isinstance(exc, ConnectionError) else ConnectionResetError(str(exc)))

    async def drain(self) -> None:
        if self._ended:
            raise ConnectionResetError("the connection is closed")
        if not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Writer:
    """What ``framing.FrameSender`` and ``write_frame`` write through: the transport, with this protocol's
    flow control for ``drain``."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FrameProtocol):
        self._protocol = protocol

    @property
    def transport(self):
        return self._protocol.transport

    def write(self, data) -> None:
        self._protocol.transport.write(data)

    def writelines(self, chunks) -> None:
        self._protocol.transport.writelines(chunks)

    def is_closing(self) -> bool:
        return self._protocol._ended or self._protocol.transport.is_closing()

    def get_extra_info(self, name, default=None):
        return self._protocol.transport.get_extra_info(name, default)

    async def drain(self) -> None:
        await self._protocol.drain()

    def close(self) -> None:
        self._protocol.close()


def adopt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: FrameProtocol) -> FrameProtocol:
    """Hand a stream connection whose handshake just ended to ``protocol``, bytes already read included.

    The handshake's stream writer is kept with the protocol: from Python 3.11 a
    stream writer closes its transport when it is garbage collected.
    """
    transport = writer.transport
    leftover = bytes(reader._buffer)             # what came with the handshake's last message (no public reader)
    reader._buffer.clear()
    protocol._kept = writer
    protocol.connection_made(transport)
    transport.set_protocol(protocol)
    if transport.is_closing() or reader.at_eof():   # the peer left during the handshake's last step
        protocol.feed(leftover)
        transport.close()
        protocol.connection_lost(None)
        return protocol
    if not transport.is_reading():               # the stream reader had paused it (a big first request)
        transport.resume_reading()
    protocol.feed(leftover)
    return protocol
