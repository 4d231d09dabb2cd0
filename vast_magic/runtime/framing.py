"""Length-prefixed frames over asyncio streams (every connection opens with ``handshake``).

A frame is ``struct "!IQ"`` (number of out-of-band buffers, length of the main
part), one ``"!Q"`` per buffer, the main bytes, then each buffer (docs/internals.md).
Big buffers are read into preallocated bytearrays and written in bounded chunks,
so a 100 MiB array costs one copy per side, never a join of the whole frame;
between a client and a local worker such buffers go through shared memory
instead (``shm``: the length's top bit set, the segment's name in the stream).
Every length is checked before anything is allocated; the mutual handshake
(``handshake.py``) runs before any frame is unpickled.
"""
from __future__ import annotations

import asyncio
import struct

from . import shm

__all__ = ["HEADER", "LENGTH", "MAX_BUFFERS", "MAX_FRAME_BYTES", "SHARED", "FrameError", "read_frame", "write_frame",
           "FrameSender"]

HEADER = struct.Struct("!IQ")
LENGTH = struct.Struct("!Q")
MAX_BUFFERS = 4096
MAX_FRAME_BYTES = 4 << 30          # 4 GiB: more is a bug or an attack, not a payload
_CHUNK = 4 << 20                   # read/write granularity for big buffers
SHARED = 1 << 63                   # length flag: the buffer is a shared-memory segment (see shm.py)
_HIGH_WATER = 1 << 20              # queued bytes above which a small frame's sender waits for the socket


class FrameError(ConnectionError):
    """The peer sent a frame that breaks the framing rules; the connection is unusable."""


async def read_frame(reader: asyncio.StreamReader, *, max_bytes: int = MAX_FRAME_BYTES,
                     max_buffers: int = MAX_BUFFERS, segments=None) -> tuple[bytes, list]:
    """Read one frame; refuse absurd headers before allocating anything.

    A buffer whose length has the ``SHARED`` bit travels as a shared-memory
    segment name (``shm``); only connections given ``segments`` accept one.
    """
    count, main_len = HEADER.unpack(await reader.readexactly(HEADER.size))
    if count > max_buffers:
        raise FrameError(f"frame announces {count} buffers (limit {max_buffers})")
    lengths = [LENGTH.unpack(await reader.readexactly(LENGTH.size))[0] for _ in range(count)]
    if any(n & SHARED for n in lengths) and segments is None:
        raise FrameError("frame announces a shared-memory buffer on a connection that does not take them")
    if main_len + sum(n & ~SHARED for n in lengths) > max_bytes:
        raise FrameError(f"frame announces {main_len + sum(n & ~SHARED for n in lengths)} bytes (limit {max_bytes})")
    main = await reader.readexactly(main_len) if main_len else b""
    return main, [await _read_buffer(reader, n, segments) for n in lengths]


async def _read_buffer(reader: asyncio.StreamReader, length: int, segments):
    if not length & SHARED:
        return await _read_into(reader, length)
    name = await reader.readexactly(shm.NAME_BYTES)
    try:
        return segments.attach(name, length & ~SHARED)
    except (OSError, ValueError) as exc:
        raise FrameError(f"cannot attach the shared-memory buffer ({exc})") from exc


async def _read_into(reader: asyncio.StreamReader, size: int) -> bytearray:
    """Fill a preallocated bytearray (writable, so numpy arrays rebuilt on it are writable)."""
    buf = bytearray(size)
    view = memoryview(buf)
    pos = 0
    while pos < size:
        chunk = await reader.read(min(size - pos, _CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(view[:pos]), size)
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return buf


async def write_frame(writer: asyncio.StreamWriter, main: bytes, buffers=(), segments=None) -> None:
    """Write one frame. Callers sharing a writer must serialize calls (frames must not interleave).

    With ``segments``, buffers of at least ``shm.MIN_BYTES`` go through shared
    memory and the frame carries their names; otherwise bytes go inline.
    """
    if not buffers:                                # a small message: one write, one drain
        _put(writer, HEADER.pack(0, len(main)), main)
        await writer.drain()
        return
    views = [memoryview(b).cast("B") for b in buffers]
    names = [segments.export(v) if segments is not None and v.nbytes >= shm.MIN_BYTES else None for v in views]
    lengths = [v.nbytes | SHARED if name else v.nbytes for v, name in zip(views, names)]
    head = HEADER.pack(len(views), len(main)) + b"".join(LENGTH.pack(n) for n in lengths)
    try:
        _put(writer, head, main)
        await writer.drain()
        for view, name in zip(views, names):
            if name:
                _put(writer, name)
                continue
            for start in range(0, view.nbytes, _CHUNK):
                _put(writer, view[start:start + _CHUNK])
                await writer.drain()
        await writer.drain()
    except BaseException:
        for name in filter(None, names):
            segments.discard(name)                 # no-op for those the receiver already attached
        raise


def _put(writer: asyncio.StreamWriter, *chunks) -> None:
    """Queue ``chunks`` on the stream, or raise ConnectionResetError when the connection is closing.

    asyncio has no single answer for a write after the connection closed: ``write`` drops
    the bytes silently, and on Python 3.12 and 3.13 the socket transport's ``writelines``
    calls a callback that closing cleared (``TypeError: 'NoneType' object is not callable``,
    CPython issue 136234). Checking first gives every version the same ConnectionError; no
    await separates the check from the write, so the connection cannot close in between.
    """
    if writer.is_closing():
        raise ConnectionResetError("the connection is closed")
    if len(chunks) == 1:
        writer.write(chunks[0])          # a big chunk as it is (writelines joins into a copy before 3.12)
    else:
        writer.writelines(chunks)


class FrameSender:
    """Whole frames on one stream, never interleaved; small frames of one loop turn leave in one write.

    With many calls in flight, each answer (or request) written on its own costs a
    send system call and wakes the peer once per frame. Here the first small frame
    of a loop turn is written at once (a lone call waits for nothing) and the
    others written in the same turn are joined and written at its end: one send,
    one wake-up. A frame its sender knows to be ``alone`` (no other call in flight
    on the connection) is written at once without opening a turn, which would cost
    one more trip round the loop. Frames with buffers go through ``write_frame``
    under the lock, after what is queued, so the stream keeps the order frames were sent in.
    """

    def __init__(self, writer: asyncio.StreamWriter, segments=None):
        self.writer, self.segments = writer, segments
        self._lock = asyncio.Lock()
        self._pending: list[bytes] = []
        self._turn = False
        self._loop: asyncio.AbstractEventLoop | None = None    # the writer's loop, looked up once

    async def send(self, main: bytes, buffers=(), alone: bool = False) -> None:
        """Send one frame; a closed connection raises a ConnectionError."""
        if buffers or self._lock.locked():
            async with self._lock:
                self._flush()
                await write_frame(self.writer, main, buffers, self.segments)
            return
        if alone and not self._turn:
            if self.writer.is_closing():
                raise ConnectionResetError("the connection is closed")
            self.writer.write(HEADER.pack(0, len(main)) + main)
        else:
            self._queue(HEADER.pack(0, len(main)), main)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()

    def _queue(self, head: bytes, main: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the connection is closed")
        if self._turn:
            self._pending += (head, main)
            return
        self.writer.write(head + main)
        self._turn = True
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._turn = False
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.writer.is_closing():          # else the reader sees the loss and fails those calls
                self.writer.write(data)
