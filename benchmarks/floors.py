"""The floors: what the machine itself needs for a call and for 100 MiB, with no framework at all.

The socket floors run a server in a second process (as every peer does) on 127.0.0.1:
- call floor: the plainest echo, an asyncio streams server echoing one
  64-byte message at a time over one loopback connection, sequential, timed
  per round trip with the same percentile rule as the peers;
- throughput floor: the same server, 64 asyncio callers on 64 connections,
  each sending its next 64-byte message when the last came back (calls/s);
- array floor: a blocking socket sending a pickle-5 frame whose numpy buffer
  travels out of band (header, pickle, raw buffer via ``sendall``; received
  with ``recv_into`` a preallocated buffer), echoed back the same way;
- memory floor (no socket): two 100 MiB copies, each ``numpy.copyto`` into
  fresh pages, as a round trip that copies once each way at memory speed.
Run: ``python -m benchmarks.floors [--quick]``; prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import socket
import struct
import time

import numpy as np

from benchmarks.measure import emit, median_of, percentile

ARRAY_BYTES = 100 << 20
HEADER = struct.Struct("!QQ")            # pickle length, out-of-band buffer length
MESSAGE = b"x" * 64


async def _echo_throughput(port: int, concurrency: int, total: int) -> float:
    """Calls per second: ``concurrency`` connections, each one message in flight at a time."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    for _, writer in streams:
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def caller(reader, writer, count: int) -> None:
        for _ in range(count):
            writer.write(MESSAGE)
            await reader.readexactly(len(MESSAGE))

    per = total // concurrency
    await asyncio.gather(*(caller(r, w, 20) for r, w in streams))          # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(caller(r, w, per) for r, w in streams))
    rate = per * concurrency / (time.perf_counter() - started)
    for _, writer in streams:
        writer.close()
    return rate


def memory_floor(quick: bool) -> float:
    """Seconds for two 100 MiB copies into fresh pages (what a round trip at memory speed must copy)."""
    source = np.random.default_rng(0).random(ARRAY_BYTES // 8)

    def two_copies() -> float:
        started = time.perf_counter()
        there = np.empty_like(source)
        np.copyto(there, source)
        back = np.empty_like(there)
        np.copyto(back, there)
        elapsed = time.perf_counter() - started
        if back[-1] != source[-1]:
            raise AssertionError("the copy differs")
        return elapsed
    two_copies()
    return median_of(two_copies, 3 if quick else 7)


def _echo_server(ready, port_out) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_out.value = server.sockets[0].getsockname()[1]
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


async def _echo_latencies(port: int, warmup: int, runs: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for index in range(warmup + runs):
        started = time.perf_counter()
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))
        if index >= warmup:
            samples.append((time.perf_counter() - started) * 1000)
    writer.close()
    return samples


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        got += sock.recv_into(view[got:], size - got)
    return buffer


def _send_frame(sock: socket.socket, value) -> None:
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raw = buffers[0].raw() if buffers else memoryview(b"")
    sock.sendall(HEADER.pack(len(main), raw.nbytes) + main)
    sock.sendall(raw)


def _recv_frame(sock: socket.socket):
    main_len, buffer_len = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    main = _recv_exactly(sock, main_len)
    return pickle.loads(main, buffers=[_recv_exactly(sock, buffer_len)])


def _frame_server(ready, port_out) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port_out.value = listener.getsockname()[1]
    ready.set()
    conn, _ = listener.accept()
    try:
        while True:
            _send_frame(conn, _recv_frame(conn))
    except (ConnectionError, struct.error):
        pass


def _server(target) -> tuple[multiprocessing.Process, int]:
    ready, port = multiprocessing.Event(), multiprocessing.Value("i", 0)
    process = multiprocessing.Process(target=target, args=(ready, port), daemon=True)
    process.start()
    if not ready.wait(30):
        raise RuntimeError("the floor server did not start")
    return process, port.value


def call_floor(quick: bool) -> dict:
    process, port = _server(_echo_server)
    try:
        runs = 600 if quick else 3000
        samples = asyncio.run(_echo_latencies(port, 200, runs))
        total = 2560 if quick else 10240
        rate = median_of(lambda: asyncio.run(_echo_throughput(port, 64, total)), 3)
        return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": runs, "throughput": rate}
    finally:
        process.kill()
        process.join()


def array_floor(quick: bool) -> float:
    process, port = _server(_frame_server)
    array = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            def round_trip() -> float:
                started = time.perf_counter()
                _send_frame(sock, array)
                back = _recv_frame(sock)
                elapsed = time.perf_counter() - started
                if back.shape != array.shape or back[-1] != array[-1]:
                    raise AssertionError("the floor echoed a different array")
                return elapsed
            round_trip()
            return median_of(round_trip, 3 if quick else 7)
    finally:
        process.kill()
        process.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    latency = call_floor(args.quick)
    emit({"latency": latency, "throughput": latency.pop("throughput"), "array_s": array_floor(args.quick),
          "memory_s": memory_floor(args.quick)})


if __name__ == "__main__":
    main()
