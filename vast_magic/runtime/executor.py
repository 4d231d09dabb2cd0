"""Running one call: admission (overload rule), ordering, timeout, output capture, response.

The response dicts are the call protocol of docs/internals.md. Admission follows
the official rule (in-flight workload / perf > max_queue_time -> overloaded) with
one exception: an idle worker always admits, since rejecting there would make a
large call impossible forever. Functions without ``allow_parallel_requests``
run one call at a time in arrival order (asyncio.Lock is FIFO).
"""
from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any

from . import output, streaming, wire
from .registry import LoadedApp, RemoteEntry

__all__ = ["DEFAULT_COST", "UserExit", "CallState", "cancel_outcome", "invoke", "Executor"]

DEFAULT_COST = 100.0


class UserExit(Exception):
    """User code raised SystemExit/KeyboardInterrupt: asyncio would re-raise those out of the
    event loop and end the worker, so they travel as an ordinary exception holding the original."""

    def __init__(self, original: BaseException):
        super().__init__(original)
        self.original = original


@dataclass
class CallState:
    """One call as the server sees it: whether the function began (``started``), whether it runs in a
    thread (a plain ``def``: a cancel cannot stop it), and whether its caller asked to cancel it."""

    started: bool = False
    in_thread: bool = False
    cancel_requested: bool = False
    entered: bool = False           # its task began (a task cancelled before that would never answer)
    answered: bool = False          # the answer is being sent: too late to cancel
    credit: Any = None              # streaming.Credit of a stream call


def cancel_outcome(state: CallState) -> str:
    """What a cancel did: ``never_ran`` (still queued), ``stopped`` (interrupted) or ``still_running``."""
    if not state.started:
        return "never_ran"
    return "still_running" if state.in_thread else "stopped"


_CANCEL_WORDS = {"never_ran": "cancelled before it started: it never ran",
                 "stopped": "cancelled while running: it was interrupted",
                 "still_running": "cancelled while running, but a plain def cannot be interrupted: it runs to its "
                                  "end on the worker and its result is dropped"}


async def invoke(entry: RemoteEntry, args: tuple = (), kwargs: dict | None = None,
                 state: CallState | None = None, collect: bool = False) -> Any:
    """Call the function: coroutine functions on the loop, plain ones in a thread. A generator's items
    are gathered with ``collect`` (``streaming.collect``: a Vast stream, a benchmark); else it is refused."""
    state = state if state is not None else CallState()
    if streaming.is_generator(entry.function):
        if not collect:
            raise TypeError(f"{entry.name} yields items: consume it with `for x in {entry.name}.stream(...)` "
                            f"(or `async for`), not a plain call.")
        return await streaming.collect(entry.function, tuple(args), dict(kwargs or {}), state)
    bound = inspect.signature(entry.function).bind(*args, **(kwargs or {}))
    state.started = True
    try:
        if inspect.iscoroutinefunction(entry.function):
            return await entry.function(*bound.args, **bound.kwargs)
        state.in_thread = True
        result = await asyncio.to_thread(entry.function, *bound.args, **bound.kwargs)
        state.in_thread = False
        if inspect.isawaitable(result):          # a sync wrapper around an async function
            result = await result
        return result
    except (SystemExit, KeyboardInterrupt) as exc:
        raise UserExit(exc) from exc


class Executor:
    """Admits, orders and runs calls for one loaded app; tracks the load for the engine."""

    def __init__(self, app: LoadedApp, perf: dict[str, float | None]):
        self.app = app
        self.perf = dict(perf)
        self.inflight_workload = 0.0
        self.inflight_calls = 0
        self._locks = {name: asyncio.Lock() for name, e in app.remotes.items()
                       if not e.option("allow_parallel_requests", True)}

    async def handle(self, request: dict, state: CallState | None = None) -> dict:
        """Answer one call request (never raises, except on a cancellation nobody asked for: shutdown).
        ``state``: the server's view of the call, through which it cancels it."""
        state = state or CallState()
        return await self._answer(request, state, lambda entry, args, kwargs: invoke(
            entry, args, kwargs, state, collect=bool(request.get("collect"))))

    async def stream(self, request: dict, state: CallState, send) -> dict:
        """Answer a stream request: ``send(item)`` for each item within the caller's credit (``state.credit``,
        from ``window``), then the final answer (its ``value``: how many items were sent)."""
        window = request.get("window") if isinstance(request, dict) else None
        window = window if isinstance(window, int) and not isinstance(window, bool) else streaming.DEFAULT_WINDOW
        state.credit = streaming.Credit(min(max(window, 1), streaming.MAX_WINDOW))

        def work(entry: RemoteEntry, args: tuple, kwargs: dict):
            if not streaming.is_generator(entry.function):
                raise TypeError(f"{entry.name} does not yield: call it with `await {entry.name}(...)` or "
                                f"`{entry.name}.call(...)`; .stream(...) is for generators.")
            return streaming.pump(entry.function, args, kwargs, state, state.credit, send)
        return await self._answer(request, state, work)

    async def _answer(self, request: dict, state: CallState, work) -> dict:
        call_id = request.get("id") if isinstance(request, dict) else None
        try:
            entry, args, kwargs, cost, timeout = self._parse(request)
        except Exception as exc:
            return {"id": call_id, "ok": False, "error": wire.error_envelope(exc), "output": []}
        refusal = self._admission(entry, cost)
        if refusal:
            return {"id": call_id, "ok": False, "overloaded": True, "message": refusal}
        self.inflight_workload += cost
        self.inflight_calls += 1
        try:
            return {"id": call_id, **await self._run(entry, timeout, state, lambda: work(entry, args, kwargs))}
        finally:
            self.inflight_workload -= cost
            self.inflight_calls -= 1

    def _parse(self, request) -> tuple[RemoteEntry, tuple, dict, float, float]:
        if not isinstance(request, dict) or request.get("op") not in ("call", "stream"):
            raise ValueError(f"not a call request: {type(request).__name__}")
        entry = self.app.remotes.get(request.get("fn"))
        if entry is None:
            raise LookupError(f"no remote function {request.get('fn')!r} on this worker "
                              f"(serving: {', '.join(sorted(self.app.remotes)) or 'none'})")
        args, kwargs = request.get("args", ()), request.get("kwargs", {})
        if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
            raise TypeError("call args must be a tuple and kwargs a dict")
        cost = request.get("cost", DEFAULT_COST)
        timeout = request.get("timeout") or entry.option("timeout", 600.0)
        for label, value in (("cost", cost), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"call {label} must be a finite non-negative number, got {value!r}")
        return entry, tuple(args), kwargs, float(cost), float(timeout)

    def _admission(self, entry: RemoteEntry, cost: float) -> str | None:
        perf = self.perf.get(entry.name)
        if perf is None or self.inflight_calls == 0:
            return None
        max_wait = entry.option("max_queue_time", 30.0)
        wait = (self.inflight_workload + cost) / max(perf, 1e-5)
        if wait > max_wait:
            return (f"worker overloaded: {self.inflight_workload + cost:g} workload queued at "
                    f"{perf:g}/s is {wait:.1f} s, over max_queue_time {max_wait:g} s for {entry.name}")
        return None

    async def _run(self, entry: RemoteEntry, timeout: float, state: CallState, work) -> dict:
        with output.capture(entry.name) as out:
            try:
                if state.cancel_requested:       # cancelled before its task began: never started
                    raise asyncio.CancelledError
                value = await asyncio.wait_for(self._ordered(entry, work), timeout)
            except asyncio.CancelledError:
                if not state.cancel_requested:
                    raise
                outcome = cancel_outcome(state)
                return {"ok": False, "cancelled": outcome, "message": f"{entry.name} was {_CANCEL_WORDS[outcome]}",
                        "output": out.items()}
            except asyncio.TimeoutError:
                exc = TimeoutError(f"{entry.name} did not finish within its timeout of {timeout:g} s")
                return {"ok": False, "error": wire.error_envelope(exc), "output": out.items()}
            except UserExit as exc:
                return {"ok": False, "error": wire.error_envelope(exc.original), "output": out.items()}
            except Exception as exc:
                return {"ok": False, "error": wire.error_envelope(exc), "output": out.items()}
        return {"ok": True, "value": value, "output": out.items()}

    async def _ordered(self, entry: RemoteEntry, work) -> Any:
        lock = self._locks.get(entry.name)
        if lock is None:
            return await work()
        async with lock:
            return await work()
