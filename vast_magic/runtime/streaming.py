"""Remote generators: items one at a time under the caller's credit, or collected into one answer.

A stream request (``{"op": "stream", "window": n, ...}``) is answered with one ``{"id", "item": x}``
frame per item, then the usual final answer (``{"id", "ok", ..., "count"}``; an error raised mid-stream
is that answer's error, after the items already sent). The caller grants credit: ``window`` items at
first, then ``{"op": "credit", "id", "n"}`` as it consumes them; an item is sent only with credit in
hand, so at most ``window`` items are in flight, and the generator, paused until then, holds one more
(it must run one step past the last item to find its end).

The stock Vast worker answers one JSON body per request, so there a stream request is a call with
``collect``: the items are gathered on the worker and answered together as ``{"items", "error"}``.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, AsyncIterator, Awaitable, Callable

from . import wire

__all__ = ["DEFAULT_WINDOW", "MAX_WINDOW", "Credit", "is_generator", "generate", "collect", "pump"]

DEFAULT_WINDOW = 64
MAX_WINDOW = 4096


def is_generator(function: Callable) -> bool:
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


class Credit:
    """How many more items the caller will take; ``take`` waits for a grant when there is none."""

    def __init__(self, window: int):
        self.available = window
        self._granted = asyncio.Event()

    def grant(self, n: int) -> None:
        self.available += max(0, int(n))
        self._granted.set()

    async def take(self) -> None:
        while self.available <= 0:
            self._granted.clear()
            await self._granted.wait()
        self.available -= 1


def _next(generator) -> tuple[bool, Any]:
    try:
        return True, next(generator)
    except StopIteration:
        return False, None


async def generate(function: Callable, args: tuple, kwargs: dict, state: Any) -> AsyncIterator[Any]:
    """The items of a remote ``def``/``async def`` generator; a plain generator advances in a thread, one
    item at a time, only when the next item is asked for."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    state.started = True
    if inspect.isasyncgenfunction(function):
        agen = function(*bound.args, **bound.kwargs)
        try:
            async for item in agen:
                yield item
        finally:
            await agen.aclose()
        return
    gen = function(*bound.args, **bound.kwargs)
    try:
        while True:
            state.in_thread = True
            more, item = await asyncio.to_thread(_next, gen)
            state.in_thread = False
            if not more:
                return
            yield item
    finally:
        if not state.in_thread:          # a generator still running in its thread cannot be closed
            gen.close()


async def collect(function: Callable, args: tuple, kwargs: dict, state: Any) -> dict:
    """Every item, gathered: ``{"items": [...], "error": envelope or None}`` (items before an error kept)."""
    items: list = []
    try:
        async for item in generate(function, args, kwargs, state):
            items.append(item)
    except Exception as exc:
        return {"items": items, "error": wire.error_envelope(exc)}
    return {"items": items, "error": None}


async def pump(function: Callable, args: tuple, kwargs: dict, state: Any, credit: Credit,
               send: Callable[[Any], Awaitable[None]]) -> int:
    """Send each item as it is made, once there is credit for it; returns how many were sent."""
    count = 0
    async for item in generate(function, args, kwargs, state):
        await credit.take()
        await send(item)
        count += 1
    return count
