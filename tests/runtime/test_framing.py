"""Framing: big buffers out-of-band, absurd headers refused before allocating (the handshake: test_handshake.py)."""
from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from vast_magic.runtime import framing, handshake, wire

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
            assert await handshake.server_hello(reader, writer, TOKEN)
            got.set_result(await framing.read_frame(reader))
            writer.close()

        server, _, reader, writer = await _pair(handler)
        await handshake.client_hello(reader, writer, TOKEN)
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
