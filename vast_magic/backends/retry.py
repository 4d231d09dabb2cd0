"""One retry policy for both backends: bounded attempts, capped backoff, one ``Retry`` event per retry.

A small loop of our own rather than tenacity's ``AsyncRetrying``: tenacity
fits every need below (injectable sleep, a custom wait, stop and retry
predicates, ``before_sleep``), but it costs tens of microseconds per call even
when nothing fails (its per-call state machine), which is a tenth of a local
no-op call; every call goes through this policy. stamina builds on tenacity
and keeps its hooks and test mode process-wide, with its own jitter. What
the policy gives every caller:

- the backoff draws its jitter from an injected function, so a test passes a
  constant and every delay is exact;
- an attempt raises ``Retryable(error, reason)`` for a failure that may be
  retried; whether it is also depends on attempts left, an optional
  per-failure ``allow`` (budgets such as "only with retries=N") and an
  optional deadline (no retry that would start after it);
- every retry is one ``events.Retry`` handed to the caller's sink before the
  sleep: a deploy shows it in its progress view, a call in the calling cell;
- when no retry is left, the caller gets the failure's own ``error``.

Backoff before retry ``n``: ``min(first * 2 ** (n - 1) + jitter(), cap)``
with jitter in [0, 1) (the official SDK's rule); ``first=0, cap=0`` retries
at once. Polling something that is not ready yet waits 1 s, then a uniform
draw between 0.1 s and that backoff (the official client's ``/route/`` rule).
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from ..events import EventSink, Retry

__all__ = ["Retryable", "RetryPolicy", "IMMEDIATE"]

T = TypeVar("T")
#: doubling stops here, so a long wait never computes 2 ** 1000 (an OverflowError as a float)
_MAX_EXPONENT = 30


class Retryable(Exception):
    """Raised inside an attempt: this failure may be retried; if it is not, the caller gets ``error``."""

    def __init__(self, error: BaseException, reason: str):
        super().__init__(reason)
        self.error = error
        self.reason = reason


def _ignore(_event: Any) -> None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, how long between them, and where the randomness and the sleeping come from."""

    attempts: int = 4
    first: float = 1.0
    cap: float = 5.0
    jitter: Callable[[], float] = random.random
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        return min(self.first * 2.0 ** min(retry - 1, _MAX_EXPONENT) + self.jitter(), self.cap)

    def poll_delay(self, polls: int, low: float = 0.1) -> float:
        """Seconds to wait after ``polls`` polls found nothing ready: 1 s, then uniform(low, backoff)."""
        if polls <= 1:
            return 1.0
        high = self.delay(polls + 1)
        return low + self.jitter() * max(0.0, high - low)

    async def run(self, attempt: Callable[[], Awaitable[T]], *, what: str, emit: EventSink | None = None,
                  attempts: int | Callable[[], int] | None = None, allow: Callable[[Retryable], bool] | None = None,
                  deadline: float | None = None) -> T:
        """``await attempt()`` until it returns; see the module docstring for when a failure is retried.

        ``deadline`` is in event-loop time. Exceptions other than ``Retryable`` propagate at once.
        ``attempts`` may be a function, read after ``allow`` saw each failure: a budget that grows as
        it is used (re-routes during a rolling update) then shows its true total in each event.
        """
        limit = attempts if callable(attempts) else (lambda: attempts or self.attempts)
        sink = emit or _ignore
        tried = 0
        while True:
            tried += 1
            try:
                return await attempt()
            except Retryable as failure:
                if allow is not None and not allow(failure):
                    raise failure.error from None
                total = limit()
                if tried >= total:
                    raise failure.error from None
                delay = self.delay(tried)
                if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
                    raise failure.error from None
                sink(Retry(what, tried, total, delay, failure.reason))
                await self.sleep(delay)


#: what a local call does when its worker was lost: the engine already routes elsewhere, so retry at once
IMMEDIATE = RetryPolicy(first=0.0, cap=0.0)
