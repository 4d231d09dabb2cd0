"""The client's one connection to the engine daemon, living on vast_magic's background loop.

Requests are multiplexed by id; ``apply`` answers come with a stream of
events first; route pushes go to per-deployment handlers. The connection is
opened lazily, auto-starting the daemon when the caller allows it, and is
re-opened (re-subscribing every route handler) after the daemon restarts.
"""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Callable

from ... import errors
from ... import loop as loop_bridge
from ...errors import BackendError, EngineConnectionLostError, EngineUnavailableError
from .channel import Channel, connect
from .launcher import ensure_engine, load_token, running_engine

__all__ = ["RouteHandler", "IDEMPOTENT", "EngineClient", "on_engine_loop"]

RouteHandler = Callable[[list | None], None]
_ERROR_KINDS = {name: getattr(errors, name) for name in
                ("DeployError", "ConfigError", "BackendError", "BundleError", "OverloadedError")}


#: requests safe to send again after the daemon restarted (apply is not: it might have run)
IDEMPOTENT = {"route", "subscribe", "status", "list", "logs", "worker_log", "teardown", "heartbeat", "ping",
              "call_result", "cancel_call"}


class EngineClient:
    def __init__(self, home: Path):
        self.home = Path(home)
        self._channel: Channel | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, Callable[[tuple], None]] = {}
        self.route_handlers: dict[tuple[str, str], RouteHandler] = {}
        self._lock: asyncio.Lock | None = None
        self._reader: asyncio.Task | None = None

    async def _connected(self, autostart: bool) -> Channel:
        if self._channel is not None and not self._channel.closed:
            return self._channel
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._channel is not None and not self._channel.closed:
                return self._channel
            info = running_engine(self.home)
            if info is None and autostart:
                info = await asyncio.to_thread(ensure_engine, self.home)
            if info is None:
                raise EngineUnavailableError(f"the local engine is not running (home {self.home}).")
            channel = await connect(info["port"], load_token(self.home))
            self._channel = channel
            self._reader = asyncio.ensure_future(self._read(channel))
        for name, tag in list(self.route_handlers):
            asyncio.ensure_future(self._resubscribe(name, tag))
        return channel

    async def _resubscribe(self, name: str, tag: str) -> None:
        handler = self.route_handlers.get((name, tag))
        try:
            routes = await self.request("subscribe", autostart=False, name=name, tag=tag)
        except BackendError:
            return
        if handler is not None:
            handler(routes)

    async def _read(self, channel: Channel) -> None:
        try:
            while True:
                message = await channel.recv()
                self._dispatch(message)
        except Exception:
            pass
        finally:
            channel.close()
            if self._channel is channel:
                self._channel = None
            for rid, future in list(self._pending.items()):
                if not future.done():
                    future.set_exception(EngineConnectionLostError("lost the connection to the local engine; "
                                                                   f"see {self.home / 'engine.log'} and retry."))
            self._pending.clear()
            for handler in list(self.route_handlers.values()):
                handler(None)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "push" in message:
            handler = self.route_handlers.get((message.get("name"), message.get("tag")))
            if handler is not None:
                handler(list(message.get("routes") or []))
            return
        rid = message.get("id")
        if "event" in message:
            stream = self._streams.get(rid)
            if stream is not None:
                stream(message["event"])
            return
        future = self._pending.pop(rid, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def request(self, op: str, *, autostart: bool = True, on_event: Callable[[tuple], None] | None = None,
                      answer_timeout: float | None = None, **fields: Any) -> Any:
        """Send one request and return its result; engine errors are raised as our error types.

        A connection that turns out dead (the daemon was killed since our last
        request) is retried once on a fresh one for idempotent requests.
        """
        try:
            return await self._request_once(op, autostart, on_event, answer_timeout, fields)
        except EngineConnectionLostError:
            if op not in IDEMPOTENT:
                raise
            await asyncio.sleep(0.05)
            return await self._request_once(op, autostart, on_event, answer_timeout, fields)

    async def _request_once(self, op: str, autostart: bool, on_event, answer_timeout: float | None,
                            fields: dict) -> Any:
        channel = await self._connected(autostart)
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        if on_event is not None:
            self._streams[rid] = on_event
        try:
            await channel.send({"op": op, "id": rid, **fields})
            answer = await asyncio.wait_for(future, answer_timeout)
        except asyncio.TimeoutError:
            raise BackendError(f"the local engine did not answer {op!r} within {answer_timeout:.0f}s; "
                               f"see {self.home / 'engine.log'}.") from None
        except (ConnectionError, OSError) as exc:
            channel.close()
            raise EngineConnectionLostError(f"lost the connection to the local engine ({exc}); retry.") from exc
        finally:
            self._pending.pop(rid, None)
            self._streams.pop(rid, None)
        if answer.get("ok"):
            return answer.get("result")
        error = answer.get("error") or {}
        raise _ERROR_KINDS.get(error.get("kind"), BackendError)(error.get("message") or "the engine refused")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def on_engine_loop(coro):
    """``coro`` (which talks to the engine) as an awaitable on the running loop: as it is on the
    background loop, where the engine connection lives, else handed to it."""
    return coro if loop_bridge.on_loop_thread() else loop_bridge.run_on_loop(coro)
