"""Framing and hello: big buffers out-of-band, absurd headers and wrong tokens refused before unpickling."""
from __future__ import annotations

import asyncio
import pickle
import socket
import struct

import numpy as np
import pytest

from vast_magic.runtime import framing, wire

TOKEN = "s3cret-token"


async def _pair(handler):
    """A loopback server running ``handler(reader, writer)`` and a connected client."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return server, port, reader, writer


def test_round_trip_with_a_50_mib_array_out_of_band():
    array = np.arange(50 * 2**20 // 8, dtype=np.float64)

    async def scenario():
        got = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            assert await framing.server_hello(reader, writer, TOKEN)
            got.set_result(await framing.read_frame(reader))
            writer.close()

        server, _, reader, writer = await _pair(handler)
        await framing.client_hello(reader, writer, TOKEN)
        main, buffers = wire.dumps({"x": array, "note": "hi"})
        assert len(main) < 1024 and sum(b.nbytes for b in buffers) == array.nbytes
        await framing.write_frame(writer, main, buffers)
        rmain, rbuffers = await asyncio.wait_for(got, 30)
        writer.close()
        server.close()
        return wire.loads(rmain, rbuffers)

    value = asyncio.run(scenario())
    assert value["note"] == "hi" and np.array_equal(value["x"], array)
    value["x"][0] = 7.0                     # rebuilt on a bytearray: writable like a normal array


def test_round_trip_without_buffers_and_empty_main():
    async def scenario():
        got = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            got.set_result([await framing.read_frame(reader), await framing.read_frame(reader)])

        server, _, reader, writer = await _pair(handler)
        await framing.write_frame(writer, b"")
        await framing.write_frame(writer, b"abc", [b"", bytearray(b"xyz")])
        frames = await asyncio.wait_for(got, 5)
        writer.close()
        server.close()
        return frames

    assert asyncio.run(scenario()) == [(b"", []), (b"abc", [bytearray(), bytearray(b"xyz")])]


@pytest.mark.parametrize("header, message", [
    (struct.pack("!IQ", framing.MAX_BUFFERS + 1, 10), "buffers"),
    (struct.pack("!IQ", 0, framing.MAX_FRAME_BYTES + 1), "bytes"),
    (struct.pack("!IQ", 1, 10) + struct.pack("!Q", framing.MAX_FRAME_BYTES), "bytes"),
])
def test_absurd_headers_are_refused_before_allocating(header, message):
    async def scenario():
        reader = asyncio.StreamReader()
        reader.feed_data(header)
        reader.feed_eof()
        with pytest.raises(framing.FrameError, match=message):
            await framing.read_frame(reader)
    asyncio.run(scenario())


def _raw_hello(port: int, payload: bytes) -> bytes:
    """Send raw bytes like a hostile client would; return what the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _frame(main: bytes) -> bytes:
    return struct.pack("!IQ", 0, len(main)) + main


class _Bomb:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise AssertionError("the server unpickled data from an unauthenticated client")


@pytest.mark.parametrize("payload", [
    pytest.param(_frame(b"VMAG1 wrong-token"), id="wrong token"),
    pytest.param(_frame(b"VMAG1 " + TOKEN.encode() + b"x"), id="token with suffix"),
    pytest.param(_frame(b"VMAG1 "), id="empty token"),
    pytest.param(_frame(pickle.dumps(_Bomb())), id="a pickle instead of a hello"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http request"),
    pytest.param(struct.pack("!IQ", 1, 3) + struct.pack("!Q", 3) + b"abcdef", id="hello with a buffer"),
    pytest.param(b"", id="nothing"),
])
def test_bad_hellos_are_refused_without_unpickling(payload):
    async def scenario():
        outcomes = []

        async def handler(reader, writer):
            ok = await framing.server_hello(reader, writer, TOKEN, timeout=5)
            outcomes.append(ok)
            if ok:                           # would unpickle next: must never get here
                wire.loads(*await framing.read_frame(reader))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        answer = await asyncio.to_thread(_raw_hello, port, payload)
        server.close()
        return outcomes, answer

    outcomes, answer = asyncio.run(scenario())
    assert outcomes == [False] and answer == b""


def test_client_hello_raises_permission_error_on_refusal():
    async def scenario():
        async def handler(reader, writer):
            await framing.server_hello(reader, writer, "other-token")
            writer.close()

        server, _, reader, writer = await _pair(handler)
        with pytest.raises(PermissionError):
            await framing.client_hello(reader, writer, TOKEN)
        writer.close()
        server.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("token", ["", b""])
def test_an_empty_token_is_a_programming_error(token):
    async def scenario():
        reader = asyncio.StreamReader()
        with pytest.raises(ValueError, match="empty token"):
            await framing.server_hello(reader, None, token)
    asyncio.run(scenario())
