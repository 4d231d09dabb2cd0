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
from typing import Any

from . import output, wire
from .registry import LoadedApp, RemoteEntry

__all__ = ["DEFAULT_COST", "UserExit", "invoke", "Executor"]

DEFAULT_COST = 100.0


class UserExit(Exception):
    """User code raised SystemExit/KeyboardInterrupt: asyncio would re-raise those out of the
    event loop and end the worker, so they travel as an ordinary exception holding the original."""

    def __init__(self, original: BaseException):
        super().__init__(original)
        self.original = original


_SIGNATURES: dict = {}                 # function -> (signature, is a coroutine function): both cost µs per call


def _described(function) -> tuple[inspect.Signature, bool]:
    found = _SIGNATURES.get(function)
    if found is None:
        found = _SIGNATURES[function] = (inspect.signature(function), inspect.iscoroutinefunction(function))
    return found


async def invoke(entry: RemoteEntry, args: tuple = (), kwargs: dict | None = None) -> Any:
    """Call the function: coroutine functions on the loop, plain ones in a thread."""
    signature, is_async = _described(entry.function)
    bound = signature.bind(*args, **(kwargs or {}))
    try:
        if is_async:
            return await entry.function(*bound.args, **bound.kwargs)
        result = await asyncio.to_thread(entry.function, *bound.args, **bound.kwargs)
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

    async def handle(self, request: dict) -> dict:
        """Answer one call request (never raises except on cancellation)."""
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
            return {"id": call_id, **await self._run(entry, args, kwargs, timeout)}
        finally:
            self.inflight_workload -= cost
            self.inflight_calls -= 1

    def _parse(self, request) -> tuple[RemoteEntry, tuple, dict, float, float]:
        if not isinstance(request, dict) or request.get("op") != "call":
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

    async def _run(self, entry: RemoteEntry, args: tuple, kwargs: dict, timeout: float) -> dict:
        with output.capture(entry.name) as out:
            try:
                value = await _within(self._ordered(entry, args, kwargs), timeout)
            except asyncio.TimeoutError:
                exc = TimeoutError(f"{entry.name} did not finish within its timeout of {timeout:g} s")
                return {"ok": False, "error": wire.error_envelope(exc), "output": out.items()}
            except UserExit as exc:
                return {"ok": False, "error": wire.error_envelope(exc.original), "output": out.items()}
            except Exception as exc:
                return {"ok": False, "error": wire.error_envelope(exc), "output": out.items()}
        return {"ok": True, "value": value, "output": out.items()}

    async def _ordered(self, entry: RemoteEntry, args: tuple, kwargs: dict) -> Any:
        lock = self._locks.get(entry.name)
        if lock is None:
            return await invoke(entry, args, kwargs)
        async with lock:
            return await invoke(entry, args, kwargs)


if hasattr(asyncio, "timeout"):                # 3.11+: the call runs in this task, no second task per call
    async def _within(coro, seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await coro
else:                                           # pragma: no cover - Python 3.10
    async def _within(coro, seconds: float) -> Any:
        return await asyncio.wait_for(coro, seconds)
