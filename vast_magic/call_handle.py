"""``CallHandle``: what ``f.spawn(...)`` returns at once, and ``Deployment.get_call(id)`` finds again.

The handle is an id plus the backend that keeps the call. On the local engine the engine runs the call
and keeps its answer (``backends/local/spawned.py``: a finished call's result for an hour, the newest
1,000), so the id works from another cell, another process or after a kernel restart. On Vast there is
no engine: the call runs as a task of this process, so the id works only in the process that spawned it.

Every wait runs on vast_magic's background loop (``loop``); the outcome is fetched once and then kept in
the handle, and what the worker printed is written when the result is first delivered.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import loop
from .backends.base import CallOutcome
from .errors import CallCancelledError

__all__ = ["POLL_SECONDS", "CANCEL_WAIT", "CallHandle"]

POLL_SECONDS = 10.0          # one long poll of the backend; a result arrives as soon as the call finishes
CANCEL_WAIT = 30.0           # how long cancel() waits for the worker to say what the cancel did


class CallHandle:
    """A spawned call. ``.result(timeout=None)`` or ``await handle`` for its value (its remote error is
    raised), ``.done()``, ``.cancel()``, and ``.id`` to find it again with ``app.get_call(id)``."""

    def __init__(self, call_id: str, function: str, backend: Any, classes: Any,
                 show: Callable[[CallOutcome], None]):
        """``show`` writes what the worker printed (``remote.write_outcome``) when the result is delivered."""
        self.id = call_id
        self.function = function
        self._backend = backend
        self._classes = classes
        self._show = show
        self._outcome: CallOutcome | None = None
        self._delivered = False

    def __repr__(self) -> str:
        known = "" if self._outcome is None else ": finished"     # repr never asks the backend
        return f"<call {self.id} of {self.function}{known}>"

    async def _fetch(self, wait: float) -> CallOutcome | None:
        if self._outcome is None:
            self._outcome = await self._backend.call_result(self.id, wait, self._classes)
        return self._outcome

    async def _wait(self, timeout: float | None) -> CallOutcome:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            left = POLL_SECONDS if deadline is None else deadline - asyncio.get_running_loop().time()
            outcome = await self._fetch(max(0.0, min(POLL_SECONDS, left)))
            if outcome is not None:
                return outcome
            if deadline is not None and left <= 0:
                raise TimeoutError(f"{self.function} ({self.id}) is still running after {timeout:g}s; call "
                                   "result() again later, or cancel() it.")

    def _deliver(self, outcome: CallOutcome) -> Any:
        if not self._delivered:
            self._delivered = True
            self._show(outcome)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the value (``timeout`` seconds at most: then ``TimeoutError``, and the call goes on)."""
        return self._deliver(loop.run_sync(self._wait(timeout)))

    def __await__(self):
        return self._await().__await__()

    async def _await(self) -> Any:
        return self._deliver(await loop.run_on_loop(self._wait(None)))

    def done(self) -> bool:
        """True once the call finished (with a value, an error or a cancellation)."""
        return loop.run_sync(self._fetch(0.0)) is not None

    def cancel(self) -> str:
        """Cancel the call and say what that did: ``"never_ran"`` (it was still queued: it never runs),
        ``"stopped"`` (an ``async def`` interrupted while running), ``"still_running"`` (a plain ``def``
        cannot be interrupted: it runs to its end and its result is dropped), ``"finished"`` (too late:
        ``result()`` gives its value) or ``"requested"`` (the worker did not answer within 30 s).
        After a cancel, ``result()`` raises ``CallCancelledError``."""
        return loop.run_sync(self._cancel())

    async def _cancel(self) -> str:
        if self._outcome is None:
            said = await self._backend.cancel_call(self.id)
            if said == "requested":
                await self._fetch(CANCEL_WAIT)
            elif said == "finished":
                await self._fetch(0.0)
            else:
                await self._fetch(0.0)
                return said
        if self._outcome is None:
            return "requested"
        error = self._outcome.error
        return error.outcome if isinstance(error, CallCancelledError) else "finished"
