"""Client-side counters of the calls this process makes to a deployment: how many, how fast, p50/p99.

Every remote call goes through ``CallCounter.record`` (``DeployFlow.call``),
and a local no-op call takes about 0.3 ms, so recording is one clock read and
an append to a bounded deque; sorting for percentiles happens only when a
status asks (``summary``), from the last ``RING`` calls of the last ``WINDOW``
seconds. ``record`` runs on the loop that made the call (the background loop,
or a caller's own loop on the fast path) and ``summary`` in the caller's
thread: the copy for a summary is retried if an append races it (calls from
two threads at the same instant may undercount ``total`` by one; the ring is exact).
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Sequence

from .reports import CallStats

__all__ = ["RING", "WINDOW", "CallCounter", "summarize", "percentile"]

RING = 2048          # calls remembered per deployment
WINDOW = 60.0        # seconds a summary looks back


class CallCounter:
    """The recent calls of one deployment: (end time, duration, succeeded) in a ring."""

    __slots__ = ("ring", "total", "first", "clock")

    def __init__(self, size: int = RING, clock: Callable[[], float] = time.perf_counter):
        self.ring: deque = deque(maxlen=size)
        self.total = 0
        self.first: float | None = None        # when the first call ended
        self.clock = clock

    def record(self, started: float, ok: bool) -> None:
        """One call that began at ``started`` (this counter's clock) ended now."""
        now = self.clock()
        self.ring.append((now, now - started, ok))
        self.total += 1
        if self.first is None:
            self.first = now

    def summary(self, window: float = WINDOW) -> CallStats:
        for _ in range(5):
            try:
                entries = tuple(self.ring)
                break
            except RuntimeError:          # appended to while copied (another thread): copy again
                continue
        else:  # pragma: no cover - five races in a row
            entries = ()
        return summarize(entries, self.clock(), window, first=self.first, total=self.total,
                         full=len(entries) == self.ring.maxlen)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (``q`` in 0-1)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(entries: Sequence[tuple[float, float, bool]], now: float, window: float = WINDOW, *,
              first: float | None = None, total: int = 0, full: bool = False) -> CallStats:
    """Figures over the calls that ended in the last ``window`` seconds (pure).

    The rate divides by the time really covered: less than the window when
    counting began more recently, or when the ring (``full``) already forgot
    older calls of the window; never less than one second, so three quick
    calls do not read as thousands per second.
    """
    recent = [entry for entry in entries if entry[0] > now - window]
    if not recent:
        return CallStats(0, 0, window, 0.0, None, None, total)
    span = window
    if first is not None and now - first < span:
        span = now - first
    if full and now - entries[0][0] < span:
        span = now - entries[0][0]
    span = max(span, 1.0)
    durations = sorted(duration for _, duration, _ in recent)
    failed = sum(not ok for _, _, ok in recent)
    return CallStats(len(recent), failed, span, len(recent) / span, percentile(durations, 0.5),
                     percentile(durations, 0.99), total)
