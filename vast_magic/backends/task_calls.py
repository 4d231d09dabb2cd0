"""Spawned calls that live in this process, for a backend with no engine to keep them (Vast).

A call runs as a task on vast_magic's background loop; its id finds it again from another cell of
the same process, never after a restart. Kept like the local engine keeps them: every unfinished call,
and each finished one for ``KEEP_SECONDS`` after it finished, the newest ``KEEP_CALLS``.

A cancel before the request left this process means the call never runs. After that, Vast has no way
to stop a request: the task stops waiting and the outcome says the call may still run on the worker.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..errors import CallCancelledError, ConfigError
from .base import CallOutcome

__all__ = ["KEEP_SECONDS", "KEEP_CALLS", "TaskCalls"]

KEEP_SECONDS = 3600.0
KEEP_CALLS = 1000


@dataclass(eq=False)
class _TaskCall:
    function: str
    task: asyncio.Task | None = None
    sent: bool = False
    cancelled: bool = False
    outcome: CallOutcome | None = None
    finished_at: float | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def may_send(self) -> bool:
        """Asked just before the request leaves this process: False once cancelled (then nothing is sent)."""
        if self.cancelled:
            return False
        self.sent = True
        return True

    def finish(self, outcome: CallOutcome) -> None:
        if self.outcome is None:
            self.outcome, self.finished_at = outcome, time.time()
            self.settled.set()


class TaskCalls:
    """The spawned calls of this process by id."""

    def __init__(self, where: str = "Vast"):
        self.where = where
        self.calls: dict[str, _TaskCall] = {}

    def spawn(self, function: str, run: Callable[[Callable[[], bool]], Awaitable[CallOutcome]]) -> str:
        """Start ``run(may_send)`` (it asks ``may_send()`` just before the request leaves this process, and
        sends nothing when it says False); returns the id."""
        self.prune()
        call = _TaskCall(function)
        call.task = asyncio.ensure_future(run(call.may_send))
        call.task.add_done_callback(lambda task: call.finish(_outcome_of(task)) if not task.cancelled() else None)
        call_id = f"call-{secrets.token_hex(8)}"
        self.calls[call_id] = call
        return call_id

    def get(self, call_id: str) -> _TaskCall:
        self.prune()
        call = self.calls.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            raise ConfigError(f"this process has no call {call_id!r}: on {self.where}, spawned calls live in the "
                              f"process that spawned them, for {KEEP_SECONDS / 3600:g} h after they finished (the "
                              f"newest {KEEP_CALLS}). Spawn the call again.")
        return call

    async def result(self, call_id: str, wait: float) -> CallOutcome | None:
        call = self.get(call_id)
        if call.outcome is None and wait > 0:
            try:
                await asyncio.wait_for(asyncio.shield(call.settled.wait()), wait)
            except asyncio.TimeoutError:
                pass
        return call.outcome

    def cancel(self, call_id: str) -> str:
        call = self.get(call_id)
        if call.outcome is not None:
            return "finished"
        call.task.cancel()
        if not call.sent:
            call.cancelled = True
            call.finish(CallOutcome(error=CallCancelledError(
                f"{call.function} was cancelled before it was sent: it never ran", "never_ran")))
            return "never_ran"
        call.finish(CallOutcome(error=CallCancelledError(
            f"{call.function} was cancelled after it was sent to a {self.where} worker, which cannot be told to "
            "stop: it may run to its end there, and its result is dropped", "still_running")))
        return "still_running"

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        finished = sorted((c for c in self.calls.values() if c.finished_at is not None), key=lambda c: c.finished_at)
        fresh = [c for c in finished if now - c.finished_at <= KEEP_SECONDS]
        drop = {id(c) for c in finished if now - c.finished_at > KEEP_SECONDS}
        drop |= {id(c) for c in fresh[:max(0, len(fresh) - KEEP_CALLS)]}
        for call_id in [k for k, c in self.calls.items() if id(c) in drop]:
            del self.calls[call_id]


def _outcome_of(task: asyncio.Task) -> CallOutcome:
    error = task.exception()
    return CallOutcome(error=error) if error is not None else task.result()
