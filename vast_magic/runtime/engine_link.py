"""The worker's connection to the engine: state, log and load messages out, stop in.

Losing this connection means the engine is gone (or we were replaced), so the
link turns any disconnect into a stop request; the worker then exits within 2 s
instead of serving orphaned. Log lines are batched (split on newlines, tagged with
time, stream and function) because prints can be many and tiny.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from . import framing, handshake, wire

__all__ = ["LOG_FLUSH_SECONDS", "MAX_PENDING_LOG_LINES", "DROP_GRACE", "EngineLink", "LogBuffer"]

LOG_FLUSH_SECONDS = 0.2
MAX_PENDING_LOG_LINES = 10_000
DROP_GRACE = 0.9            # engine gone: finish short in-flight calls (clients talk to us directly), still exit within 2 s


class EngineLink:
    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.stop_requested = asyncio.Event()
        self.stop_grace = DROP_GRACE
        self._reader = self._writer = None
        self._lock = asyncio.Lock()
        self.logs = LogBuffer()

    async def connect(self, address: str, token) -> None:
        host, _, port = address.rpartition(":")
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10.0)
        await handshake.client_hello(self._reader, self._writer, token)   # the engine proves itself first

    async def send(self, op: str, **fields) -> None:
        """Send one message; a dead engine is a stop request, not an exception."""
        main, buffers = wire.dumps({"op": op, "worker": self.worker_id, **fields})
        try:
            async with self._lock:
                await framing.write_frame(self._writer, main, buffers)
        except (ConnectionError, RuntimeError, OSError):
            self.request_stop(DROP_GRACE)

    async def state(self, state: str, *, perf=None, median=None, port=None, error=None) -> None:
        await self.flush_logs()                      # the lines that explain a state come before it
        await self.send("state", state=state, perf=perf, median=median, port=port, error=error)

    def request_stop(self, grace: float) -> None:
        if not self.stop_requested.is_set():
            self.stop_grace = grace
            self.stop_requested.set()

    async def listen(self) -> None:
        """Read engine messages until it sends stop or the connection ends."""
        try:
            while True:
                main, buffers = await framing.read_frame(self._reader)
                message = wire.loads(main, buffers)
                if isinstance(message, dict) and message.get("op") == "stop":
                    self.request_stop(_grace(message.get("grace")))
                    return
        except Exception:
            self.request_stop(DROP_GRACE)

    async def flush_logs(self, force: bool = True) -> None:
        lines = self.logs.take(force)
        if lines:
            await self.send("log", lines=lines)

    async def ship_logs_forever(self) -> None:
        """Never ends on an exception: a lost batch is reported in the log, the next one still goes."""
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            try:
                await self.flush_logs(force=False)     # partial lines wait for their newline
            except Exception as exc:
                self.logs.write("stderr", f"[vast_magic] log lines lost: {type(exc).__name__}: {exc}\n", None)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 0.5)


def _grace(value) -> float:
    try:
        return min(max(float(value), 0.0), 600.0)
    except (TypeError, ValueError):
        return DROP_GRACE


class LogBuffer:
    """Thread-safe line assembly for the output proxies' log sink."""

    def __init__(self):
        self._lock = threading.Lock()
        self._partial: dict[tuple, str] = {}
        self._lines: list[tuple[float, str, str, str | None]] = []
        self.dropped = 0

    def write(self, stream: str, text: str, function: str | None, owner: object = None) -> None:
        key = (stream, function, id(owner))
        with self._lock:
            pieces = (self._partial.pop(key, "") + text).split("\n")
            if pieces[-1]:
                self._partial[key] = pieces[-1]
            for line in pieces[:-1]:
                self._add(stream, line, function)

    def _add(self, stream: str, line: str, function: str | None) -> None:
        if len(self._lines) >= MAX_PENDING_LOG_LINES:
            self.dropped += 1
            return
        self._lines.append((time.time(), stream, line, function))

    def take(self, include_partial: bool = True) -> list[tuple[float, str, str, str | None]]:
        with self._lock:
            if include_partial:
                for (stream, function, _), text in self._partial.items():
                    self._add(stream, text, function)
                self._partial.clear()
            lines, self._lines = self._lines, []
            return lines
