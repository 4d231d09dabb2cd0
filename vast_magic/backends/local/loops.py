"""The engine's background loops, which never die of an exception, and its log line format.

A loop that ends on its first exception takes a whole duty with it: when
reconciliation stopped on one EMFILE, ttl expiry, idle shutdown, autoscaling
and dead-worker detection all stopped until a restart. So each loop step that
raises is logged with its traceback, the loop pauses longer after each
failure in a row (up to ``MAX_BACKOFF``), and goes on.
"""
from __future__ import annotations

import asyncio
import os
import time
import traceback
from typing import Awaitable, Callable

__all__ = ['MAX_BACKOFF', 'backoff', 'keep_running', 'log']

MAX_BACKOFF = 5.0


def log(message: str) -> None:
    """One line of engine.log (the daemon's stdout)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} engine[{os.getpid()}]: {message}", flush=True)


def backoff(period: float, failures: int) -> float:
    """The pause before the next step: ``period`` normally, doubling per failure in a row, capped."""
    if failures <= 0:
        return period
    return min(MAX_BACKOFF, max(period, 0.05) * 2 ** failures)


async def keep_running(step: Callable[[], Awaitable[None]], period: float, name: str,
                       stop: asyncio.Event | None = None) -> None:
    """Run ``step`` every ``period`` s until ``stop`` is set (or the task is cancelled); never die of it."""
    failures = 0
    while stop is None or not stop.is_set():
        await asyncio.sleep(backoff(period, failures))
        try:
            await step()
        except Exception as exc:
            failures += 1
            log(f"{name} failed ({failures} in a row; next try in {backoff(period, failures):.2f}s): "
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc().rstrip()}")
        else:
            failures = 0
