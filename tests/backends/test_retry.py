"""The backends' one retry policy (backends/retry.py): backoff, bounds, budgets, deadline, one event per retry."""
from __future__ import annotations

import asyncio

import pytest

from vast_magic.backends.retry import IMMEDIATE, Retryable, RetryPolicy
from vast_magic.events import Retry


class Script:
    """An attempt function that fails as scripted, then returns "done"; it records the sleeps asked for."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls = 0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def lost(reason: str = "worker lost") -> Retryable:
    return Retryable(ConnectionError(reason), reason)


def run(script: Script, policy: RetryPolicy | None = None, **options):
    policy = RetryPolicy(jitter=lambda: 0.5, sleep=script.sleep) if policy is None else policy
    events: list[Retry] = []

    async def go():
        return await policy.run(script, what="f", emit=events.append, **options)
    return asyncio.run(go()), events


@pytest.mark.parametrize("jitter, expected", [
    (0.0, [1.0, 2.0, 4.0, 5.0, 5.0]),
    (0.5, [1.5, 2.5, 4.5, 5.0, 5.0]),
    (0.99, [1.99, 2.99, 4.99, 5.0, 5.0]),
])
def test_backoff_doubles_plus_jitter_capped(jitter, expected):
    assert [RetryPolicy(jitter=lambda: jitter).delay(n) for n in range(1, 6)] == expected


def test_backoff_never_overflows():
    assert RetryPolicy(jitter=lambda: 0.0).delay(10 ** 6) == 5.0
    assert RetryPolicy(jitter=lambda: 0.0).poll_delay(10 ** 6) == pytest.approx(0.1)


@pytest.mark.parametrize("polls, jitter, expected", [
    (1, 0.7, 1.0),                      # the first wait is always 1 s
    (2, 0.0, 0.1),                      # then uniform(0.1, min(2 ** polls + jitter, 5))
    (2, 0.5, 0.1 + 0.5 * (4.5 - 0.1)),
    (5, 0.5, 0.1 + 0.5 * (5.0 - 0.1)),
])
def test_poll_delay(polls, jitter, expected):
    assert RetryPolicy(jitter=lambda: jitter).poll_delay(polls) == pytest.approx(expected)


def test_immediate_retries_without_waiting():
    assert [IMMEDIATE.delay(n) for n in (1, 2, 10)] == [0.0, 0.0, 0.0]


def test_every_retry_is_one_event_before_its_sleep():
    script = Script(lost("HTTP 503"), lost("ConnectError"))
    result, events = run(script)
    assert result == "done" and script.calls == 3
    assert events == [Retry("f", 1, 4, 1.5, "HTTP 503"), Retry("f", 2, 4, 2.5, "ConnectError")]
    assert script.sleeps == [1.5, 2.5]


@pytest.mark.parametrize("failures, options, calls, retries", [
    (4, {}, 4, 3),                                       # default: 4 attempts
    (9, {"attempts": 2}, 2, 1),
    (9, {"attempts": 1}, 1, 0),                          # one attempt: no retry
    (9, {"attempts": 9, "allow": lambda failure: False}, 1, 0),
])
def test_when_no_retry_is_left_the_caller_gets_the_failures_error(failures, options, calls, retries):
    script = Script(*[lost(f"try {n}") for n in range(failures)])
    with pytest.raises(ConnectionError, match=f"try {calls - 1}"):
        run(script, **options)
    assert script.calls == calls and len(script.sleeps) == retries


def test_a_budget_per_kind_of_failure():
    budget = {"a": 1, "b": 0}

    def allow(failure: Retryable) -> bool:
        budget[failure.reason] -= 1
        return budget[failure.reason] >= 0

    script = Script(lost("a"), lost("b"))
    with pytest.raises(ConnectionError, match="b"):
        run(script, attempts=10, allow=allow)
    assert script.calls == 2


def test_no_retry_that_would_start_after_the_deadline():
    script = Script(lost(), lost(), lost())

    async def go():
        deadline = asyncio.get_running_loop().time() + 2.0          # room for the 1.5 s wait, not for 1.5 + 2.5
        return await RetryPolicy(jitter=lambda: 0.5, sleep=script.sleep).run(script, what="f", deadline=deadline)
    with pytest.raises(ConnectionError):
        asyncio.run(go())
    assert script.sleeps == [1.5] and script.calls == 2


def test_other_exceptions_propagate_at_once():
    script = Script(ValueError("not retryable"))
    with pytest.raises(ValueError, match="not retryable"):
        run(script)
    assert script.calls == 1 and script.sleeps == []
