"""Time limits of many calls on one event loop, kept with one timer.

A timer per call (``loop.call_later`` then ``cancel``) costs a handle, a heap
push and, later, a heap clean-up, on every call, though almost every call ends
long before its limit. Here a call's limit is one dict entry; the single timer
is armed for the earliest limit and, when it fires, expires what is due and
arms itself for the next. With equal limits (the common case) a new call's
limit is never the earliest, so it costs no timer work at all.
"""
from __future__ import annotations

import asyncio
import math
import weakref
from typing import Callable

__all__ = ["Limit", "Deadlines", "on_loop"]


class Limit:
    """One call's limit: ``expired`` once its action ran."""

    __slots__ = ("when", "action", "expired")

    def __init__(self, when: float, action: Callable[[], None]):
        self.when, self.action, self.expired = when, action, False


class Deadlines:
    """Limits on ``loop``: ``add`` one (its action runs once it is due, unless removed first), ``remove`` it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._limits: set[Limit] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf                   # when the timer fires

    def add(self, seconds: float, action: Callable[[], None]) -> Limit:
        return self.at(self.loop.time() + seconds, action)

    def at(self, when: float, action: Callable[[], None]) -> Limit:
        """A limit at ``when`` (the loop's clock)."""
        limit = Limit(when, action)
        self._limits.add(limit)
        if limit.when < self._armed:
            self._arm(limit.when)
        return limit

    def remove(self, limit: Limit) -> None:
        self._limits.discard(limit)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed = self.loop.call_at(when, self._fire), when

    def _fire(self) -> None:
        """Everything due by the time this timer was armed for (the loop may run it a clock tick early)."""
        due_by = max(self._armed, self.loop.time())
        self._timer, self._armed = None, math.inf
        due = [limit for limit in self._limits if limit.when <= due_by]
        for limit in due:
            self._limits.discard(limit)
        if self._limits:
            self._arm(min(limit.when for limit in self._limits))
        for limit in due:
            limit.expired = True
            limit.action()

    def __len__(self) -> int:
        return len(self._limits)


_BY_LOOP: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines]" = weakref.WeakKeyDictionary()


def on_loop(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The limits of ``loop`` (one set per loop, gone with it)."""
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = Deadlines(loop)
    return found
