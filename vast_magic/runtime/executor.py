"""Running one call: admission (overload rule), ordering, timeout, output capture, response.

The response dicts are the call protocol of docs/internals.md. Admission follows
the official rule (in-flight workload / perf > max_queue_time -> overloaded) with
one exception: an idle worker always admits, since rejecting there would make a
large call impossible forever. Functions without ``allow_parallel_requests``
run one call at a time in arrival order (asyncio.Lock is FIFO). A call that
names the deployment version it expects, sent to a worker of another version
(a rolling update), is answered ``{"ok": False, "stale": True, "version": v}``
without running; the client routes it again.
"""
from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any

from . import deadlines, output, streaming, wire
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
    task: Any = None                # the server's task running it, once it waited (cancels go to it)


def cancel_outcome(state: CallState) -> str:
    """What a cancel did: ``never_ran`` (still queued), ``stopped`` (interrupted) or ``still_running``."""
    if not state.started:
        return "never_ran"
    return "still_running" if state.in_thread else "stopped"


_CANCEL_WORDS = {"never_ran": "cancelled before it started: it never ran",
                 "stopped": "cancelled while running: it was interrupted",
                 "still_running": "cancelled while running, but a plain def cannot be interrupted: it runs to its "
                                  "end on the worker and its result is dropped"}


_SIGNATURES: dict = {}     # function -> (signature, positional count or -1, is async, yields): µs per call


def _described(function) -> tuple[inspect.Signature, int, bool, bool]:
    found = _SIGNATURES.get(function)
    if found is None:
        signature = inspect.signature(function)
        params = signature.parameters.values()
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
        found = _SIGNATURES[function] = (signature, len(params) if plain else -1,
                                         inspect.iscoroutinefunction(function), streaming.is_generator(function))
    return found


async def invoke(entry: RemoteEntry, args: tuple = (), kwargs: dict | None = None,
                 state: CallState | None = None, collect: bool = False) -> Any:
    """Call the function: coroutine functions on the loop, plain ones in a thread. A generator's items
    are gathered with ``collect`` (``streaming.collect``: a Vast stream, a benchmark); else it is refused."""
    signature, positional, is_async, yields = _described(entry.function)
    if yields:
        if not collect:
            raise TypeError(f"{entry.name} yields items: consume it with `for x in {entry.name}.stream(...)` "
                            f"(or `async for`), not a plain call.")
        return await streaming.collect(entry.function, tuple(args), dict(kwargs or {}),
                                       state if state is not None else CallState())
    if kwargs or positional != len(args):       # else every parameter is given by position: nothing to check
        bound = signature.bind(*args, **(kwargs or {}))
        args, kwargs = bound.args, bound.kwargs
    kwargs = kwargs or {}
    if state is not None:
        state.started = True
    try:
        if is_async:
            return await entry.function(*args, **kwargs)
        if state is not None:
            state.in_thread = True
        result = await asyncio.to_thread(entry.function, *args, **kwargs)
        if state is not None:
            state.in_thread = False
        if inspect.isawaitable(result):          # a sync wrapper around an async function
            result = await result
        return result
    except (SystemExit, KeyboardInterrupt) as exc:
        raise UserExit(exc) from exc


class Executor:
    """Admits, orders and runs calls for one loaded app; tracks the load for the engine."""

    def __init__(self, app: LoadedApp, perf: dict[str, float | None], version: str | None = None):
        self.app = app
        self.perf = dict(perf)
        self.version = version
        self.inflight_workload = 0.0
        self.inflight_calls = 0
        self._locks = {name: asyncio.Lock() for name, e in app.remotes.items()
                       if not e.option("allow_parallel_requests", True)}

    async def handle(self, request: dict, state: CallState | None = None) -> dict:
        """Answer one call request (never raises, except on a cancellation nobody asked for: shutdown).
        ``state``: the server's view of the call, through which it cancels it."""
        state = state or CallState()
        collect = isinstance(request, dict) and bool(request.get("collect"))
        return await self._answer(request, state, (lambda entry, args, kwargs: invoke(
            entry, args, kwargs, state, collect=True)) if collect else None)

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
        """One request, a call or a chunk of ``f.map``, through the one admission: parsed, admitted (or
        answered ``overloaded``), counted while it runs."""
        call_id = request.get("id") if isinstance(request, dict) else None
        expected = request.get("version") if isinstance(request, dict) else None
        if expected and self.version and expected != self.version:
            return {"id": call_id, "ok": False, "stale": True, "version": self.version}   # rolling update: not run
        items = None
        try:
            if call_id is not None and request.get("op") == "map":
                entry, items, cost, timeout = self._parse_map(request)
            else:
                entry, args, kwargs, cost, timeout = self._parse(request)
        except Exception as exc:
            return {"id": call_id, "ok": False, "error": wire.error_envelope(exc), "output": []}
        refusal = self._admission(entry, cost)
        if refusal:
            return {"id": call_id, "ok": False, "overloaded": True, "message": refusal}
        self.inflight_workload += cost
        self.inflight_calls += 1
        try:
            if items is None:
                return {"id": call_id, **await self._run(entry, args, kwargs, timeout, state, work)}
            return {"id": call_id, "ok": True, "items": await self._map(entry, items, timeout), "output": []}
        finally:
            self.inflight_workload -= cost
            self.inflight_calls -= 1

    async def _map(self, entry: RemoteEntry, items: list, timeout: float) -> list:
        """A chunk of ``f.map``: many calls of one function in one request, each answered on its own
        (its value or error, its output) so one failure loses nothing else. Admitted as one call whose
        workload is the sum of the items'."""
        if entry.name in self._locks or not _described(entry.function)[2]:   # run in turn: a timeout each
            return await asyncio.gather(*(self._run(entry, args, kwargs, timeout) for args, kwargs in items))
        return await self._together(entry, items, timeout)

    async def _together(self, entry: RemoteEntry, items: list, timeout: float) -> list:
        """Items of an async function all start at once, so one timer bounds each of them as its own would."""
        tasks = [asyncio.ensure_future(self._run(entry, args, kwargs, None)) for args, kwargs in items]
        try:
            _, late = await asyncio.wait(tasks, timeout=timeout)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        for task in late:
            task.cancel()
        expired = TimeoutError(f"{entry.name} did not finish within its timeout of {timeout:g} s")
        return [task.result() if task not in late else {"ok": False, "error": wire.error_envelope(expired),
                                                        "output": []} for task in tasks]

    def _parse_map(self, request: dict) -> tuple[RemoteEntry, list, float, float]:
        items = request.get("items")
        if not isinstance(items, (list, tuple)) or not items:
            raise TypeError("a map request carries a non-empty list of (args, kwargs) items")
        parsed = [self._parse({"op": "call", "fn": request.get("fn"), "args": args, "kwargs": kwargs,
                               "cost": request.get("cost", DEFAULT_COST), "timeout": request.get("timeout")})
                  for args, kwargs in items]
        entry, _, _, cost, timeout = parsed[0]
        return entry, [(args, kwargs) for _, args, kwargs, _, _ in parsed], cost * len(parsed), timeout

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
        if not (type(cost) is float and type(timeout) is float and 0.0 <= cost < math.inf
                and 0.0 <= timeout < math.inf):     # what clients send; else the full check
            cost, timeout = _amount("cost", cost), _amount("timeout", timeout)
        return entry, tuple(args), kwargs, cost, timeout

    def _admission(self, entry: RemoteEntry, cost: float) -> str | None:
        """Why a call (or a map chunk, as one call of its summed cost) may not start now, or None."""
        perf = self.perf.get(entry.name)
        if perf is None or self.inflight_calls == 0:
            return None
        max_wait = entry.option("max_queue_time", 30.0)
        wait = (self.inflight_workload + cost) / max(perf, 1e-5)
        if wait > max_wait:
            return (f"worker overloaded: {self.inflight_workload + cost:g} workload queued at "
                    f"{perf:g}/s is {wait:.1f} s, over max_queue_time {max_wait:g} s for {entry.name}")
        return None

    async def _run(self, entry: RemoteEntry, args: tuple, kwargs: dict, timeout: float | None,
                   state: CallState | None = None, work=None) -> dict:
        """One call's answer; ``timeout`` None: the caller bounds it (a map chunk's one timer). ``work``:
        what runs instead of a plain ``invoke`` (a stream's pump, a collected generator); ``state``: the
        server's view of the call, through which a cancel it asked for is answered."""
        with output.Capture(entry.name) as out:
            try:
                if state is not None and state.cancel_requested:    # cancelled before its task began
                    raise asyncio.CancelledError
                call = self._ordered(entry, args, kwargs, state, work)
                value = await (_within(call, timeout, state) if timeout is not None else call)
            except asyncio.CancelledError:
                if state is None or not state.cancel_requested:
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

    async def _ordered(self, entry: RemoteEntry, args: tuple, kwargs: dict, state: CallState | None, work) -> Any:
        lock = self._locks.get(entry.name)
        if lock is None:
            return await (work(entry, args, kwargs) if work is not None else invoke(entry, args, kwargs, state))
        async with lock:
            return await (work(entry, args, kwargs) if work is not None else invoke(entry, args, kwargs, state))


def _amount(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"call {label} must be a finite non-negative number, got {value!r}")
    return float(value)


async def _within(coro, seconds: float, state: CallState | None = None) -> Any:
    """``await coro`` within ``seconds`` (asyncio.TimeoutError after), in this task: no second task, and no
    timer of its own (``deadlines``: one set per loop for every call). The limit can only expire between this
    task's steps, so a cancellation it caused is told from one from outside by ``expired``. ``state.task``,
    when the server set it, is this task (found without ``current_task``, a system call before Python 3.12)."""
    task = state.task if state is not None and state.task is not None else asyncio.current_task()
    limits = deadlines.on_loop(task.get_loop())
    limit = limits.add(seconds, task.cancel)
    try:
        return await coro
    except asyncio.CancelledError:
        if not limit.expired:
            raise
        uncancel = getattr(task, "uncancel", None)          # 3.11+: this cancellation is handled here
        if uncancel is not None:
            uncancel()
        raise asyncio.TimeoutError() from None
    finally:
        limits.remove(limit)
