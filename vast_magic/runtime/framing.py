"""Length-prefixed frames over asyncio streams, and the token hello that opens every connection.

A frame is ``struct "!IQ"`` (number of out-of-band buffers, length of the main
part), one ``"!Q"`` per buffer, the main bytes, then each buffer (docs/internals.md).
Big buffers are read into preallocated bytearrays and written in bounded chunks,
so a 100 MiB array costs one copy per side, never a join of the whole frame.
Every length is checked before anything is allocated, and the hello is plain
bytes compared with ``hmac.compare_digest``: nothing is unpickled for a peer
that has not proved it holds the token.
"""
from __future__ import annotations

import asyncio
import hmac
import struct

HEADER = struct.Struct("!IQ")
LENGTH = struct.Struct("!Q")
HELLO_PREFIX = b"VMAG1 "
HELLO_OK = b"OK"
MAX_BUFFERS = 4096
MAX_FRAME_BYTES = 4 << 30          # 4 GiB: more is a bug or an attack, not a payload
MAX_HELLO_BYTES = 1024
HELLO_TIMEOUT = 10.0
_CHUNK = 4 << 20                   # read/write granularity for big buffers


class FrameError(ConnectionError):
    """The peer sent a frame that breaks the framing rules; the connection is unusable."""


async def read_frame(reader: asyncio.StreamReader, *, max_bytes: int = MAX_FRAME_BYTES,
                     max_buffers: int = MAX_BUFFERS) -> tuple[bytes, list[bytearray]]:
    """Read one frame; refuse absurd headers before allocating anything."""
    count, main_len = HEADER.unpack(await reader.readexactly(HEADER.size))
    if count > max_buffers:
        raise FrameError(f"frame announces {count} buffers (limit {max_buffers})")
    lengths = [LENGTH.unpack(await reader.readexactly(LENGTH.size))[0] for _ in range(count)]
    if main_len + sum(lengths) > max_bytes:
        raise FrameError(f"frame announces {main_len + sum(lengths)} bytes (limit {max_bytes})")
    main = await reader.readexactly(main_len) if main_len else b""
    return main, [await _read_into(reader, n) for n in lengths]


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


async def write_frame(writer: asyncio.StreamWriter, main: bytes, buffers=()) -> None:
    """Write one frame. Callers sharing a writer must serialize calls (frames must not interleave)."""
    views = [memoryview(b).cast("B") for b in buffers]
    head = HEADER.pack(len(views), len(main)) + b"".join(LENGTH.pack(v.nbytes) for v in views)
    writer.writelines([head, main])
    await writer.drain()
    for view in views:
        for start in range(0, view.nbytes, _CHUNK):
            writer.write(view[start:start + _CHUNK])
            await writer.drain()


async def client_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token) -> None:
    """Prove we hold the token; raise PermissionError if the server refuses."""
    await write_frame(writer, HELLO_PREFIX + _token_bytes(token))
    try:
        answer, _ = await asyncio.wait_for(
            read_frame(reader, max_bytes=MAX_HELLO_BYTES, max_buffers=0), HELLO_TIMEOUT)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise PermissionError("the peer refused the token (connection closed during hello)") from exc
    if answer != HELLO_OK:
        raise PermissionError(f"unexpected hello answer {answer[:32]!r}")


async def server_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token,
                       timeout: float = HELLO_TIMEOUT) -> bool:
    """Check the client's hello; answer OK and return True, or return False (caller closes)."""
    expected = HELLO_PREFIX + _token_bytes(token)
    try:
        hello, _ = await asyncio.wait_for(
            read_frame(reader, max_bytes=MAX_HELLO_BYTES, max_buffers=0), timeout)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        return False
    if not hmac.compare_digest(hello, expected):
        return False
    await write_frame(writer, HELLO_OK)
    return True


def _token_bytes(token) -> bytes:
    data = token.encode() if isinstance(token, str) else bytes(token)
    if not data:
        raise ValueError("an empty token authenticates nothing")
    return data
