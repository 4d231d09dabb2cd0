"""Why the worker protocol is raw asyncio streams: the same echo over three client stacks.

One server process answers on two ports: a length-prefixed frame echo on raw
asyncio streams (the shape of vast_magic's worker protocol) and an aiohttp
``POST /call`` echo (a typical HTTP worker). The client, in this process,
times a 64-byte payload with raw asyncio streams, aiohttp's client and httpx's
``AsyncClient``: sequential p50/p99, and calls per second with 64 concurrent
callers (one connection each for raw streams, the client's own pool for HTTP).
Runs in the peers venv (it has aiohttp and httpx):
``benchmarks/.peers/bin/python -m benchmarks.transports [--quick]``; one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import struct
import time

from benchmarks.measure import emit, percentile

PAYLOAD = b"p" * 64
LENGTH = struct.Struct("!I")


def _serve(ready, ports) -> None:
    from aiohttp import web

    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = LENGTH.unpack(await reader.readexactly(LENGTH.size))[0]
                writer.write(LENGTH.pack(size) + await reader.readexactly(size))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def call(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def main() -> None:
        server = await asyncio.start_server(raw, "127.0.0.1", 0)
        app = web.Application()
        app.router.add_post("/call", call)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports[0] = server.sockets[0].getsockname()[1]
        ports[1] = site._server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class Raw:
    def __init__(self, port: int):
        self.port, self.streams = port, []

    async def open(self, n: int) -> None:
        self.streams = [await asyncio.open_connection("127.0.0.1", self.port) for _ in range(n)]

    async def call(self, index: int = 0) -> bytes:
        reader, writer = self.streams[index]
        writer.write(LENGTH.pack(len(PAYLOAD)) + PAYLOAD)
        return await reader.readexactly(LENGTH.unpack(await reader.readexactly(LENGTH.size))[0])

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()


class Aiohttp:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/call"

    async def open(self, n: int) -> None:
        import aiohttp
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n))

    async def call(self, index: int = 0) -> bytes:
        async with self.session.post(self.url, data=PAYLOAD) as response:
            return await response.read()

    async def close(self) -> None:
        await self.session.close()


class Httpx:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/call"

    async def open(self, n: int) -> None:
        import httpx
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))

    async def call(self, index: int = 0) -> bytes:
        return (await self.client.post(self.url, content=PAYLOAD)).content

    async def close(self) -> None:
        await self.client.aclose()


async def measure(client, runs: int, total: int, concurrency: int = 64) -> dict:
    await client.open(concurrency)
    try:
        samples = []
        for index in range(200 + runs):
            started = time.perf_counter()
            assert await client.call() == PAYLOAD
            if index >= 200:
                samples.append((time.perf_counter() - started) * 1000)

        async def caller(slot: int) -> None:
            for _ in range(total // concurrency):
                await client.call(slot)

        started = time.perf_counter()
        await asyncio.gather(*(caller(slot) for slot in range(concurrency)))
        rate = total // concurrency * concurrency / (time.perf_counter() - started)
    finally:
        await client.close()
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "throughput": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, total = (500, 3200) if args.quick else (2000, 12800)
    ready, ports = multiprocessing.Event(), multiprocessing.Array("i", 2)
    server = multiprocessing.Process(target=_serve, args=(ready, ports), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the transport server did not start")
        result = {name: asyncio.run(measure(cls(port), runs, total))
                  for name, cls, port in (("raw asyncio streams", Raw, ports[0]), ("aiohttp", Aiohttp, ports[1]),
                                          ("httpx", Httpx, ports[1]))}
    finally:
        server.kill()
        server.join()
    emit(result)


if __name__ == "__main__":
    main()
