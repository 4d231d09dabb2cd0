"""``RemoteFunction``: the proxy ``@app.remote`` puts where the function was.

Calling it binds the arguments to the real signature locally (a ``TypeError``
before anything is sent), hands the call to its ``Caller`` (what the
deployment deployed, never the Deployment itself) on the background loop,
writes what the worker printed into the caller's output, and returns the
value or raises the remote error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import math
import sys
from typing import Any, AsyncIterator, Callable, Iterable

from . import loop
from .backends.base import CallOutcome
from .call_handle import CallHandle
from .caller import Caller
from .display import open_map_progress
from .events import format_event
from .remote_options import RemoteOptions, helper_functions, remote_spec, validate_options

__all__ = [
    "RemoteOptions", "validate_options", "helper_functions", "remote_spec", "write_outcome", "map_failure_report",
    "RemoteFunction"
]

def write_outcome(outcome: CallOutcome, shown: set[str] | None = None) -> None:
    """Write into this cell what the backend said while the call waited for a worker, one note per retry it
    made, then what the worker printed. ``shown``: wait statuses already written by other calls of the same
    ``map`` (each is written once, not once per call)."""
    for waited in outcome.waits:
        if shown is not None and waited.status in shown:
            continue
        if shown is not None:
            shown.add(waited.status)
        sys.stderr.write(f"[vast_magic] {format_event(waited)}\n")
    for retry in outcome.retries:
        sys.stderr.write(f"[vast_magic] {format_event(retry)}\n")
    for stream, text in outcome.output:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
    if outcome.output:                 # a kernel's flush is a round trip to its IOPub thread: only when needed
        sys.stdout.flush()


_SHOWN_INDICES = 20


def map_failure_report(name: str, outcomes: list, with_traceback: bool) -> str | None:
    """What ``f.map`` says at the end when calls failed: which items (0-based indices, like the results list),
    and the first failure's remote traceback (``with_traceback``: when it is not raised, which shows it)."""
    failed = [i for i, outcome in enumerate(outcomes) if _error_of(outcome) is not None]
    if not failed:
        return None
    shown = ", ".join(map(str, failed[:_SHOWN_INDICES])) + (f" and {len(failed) - _SHOWN_INDICES} more"
                                                            if len(failed) > _SHOWN_INDICES else "")
    lines = [f"[vast_magic] {name}.map: {len(failed)} of {len(outcomes)} calls failed, items {shown}"]
    if with_traceback:
        first = _error_of(outcomes[failed[0]])
        lines.append(f"item {failed[0]} failed with:")
        traceback = getattr(first, "remote_traceback", "") or f"{type(first).__name__}: {first}"
        lines += [traceback.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _yields(fn: Callable) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def _error_of(outcome: Any) -> BaseException | None:
    return outcome if isinstance(outcome, BaseException) else outcome.error


def _plain_parameters(signature: inspect.Signature) -> tuple[str, ...] | None:
    """The parameter names when all are positional-or-keyword without defaults (binding is then a zip)."""
    params = signature.parameters.values()
    if all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params):
        return tuple(p.name for p in params)
    return None


class RemoteFunction:
    """A function registered on a Deployment; calling it runs it on a worker."""

    def __init__(self, caller: Caller, fn: Callable, options: RemoteOptions):
        functools.update_wrapper(self, fn)
        self.__vast_magic_wrapped__ = fn
        self.local = fn
        self._yields = _yields(fn)          # asked on every call: inspect's code-flag checks cost a µs each
        self.options = options
        self._caller = caller
        self._signature = inspect.signature(fn)
        self._plain = _plain_parameters(self._signature)

    def __repr__(self) -> str:
        return f"<remote function {self.__name__}{self._signature} on {self._caller.owner()}>"

    def _bind(self, args: tuple, kwargs: dict) -> inspect.BoundArguments:
        if not kwargs and self._plain is not None and len(args) == len(self._plain):
            # every parameter given by position, none with a default: what bind() would find, at a tenth
            return inspect.BoundArguments(self._signature, dict(zip(self._plain, args)))
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.__name__}{self._signature}: {exc}") from None
        bound.apply_defaults()
        return bound

    def _cost(self, bound: inspect.BoundArguments) -> float:
        calculator = self.options.workload_calculator
        if calculator is None:
            return 100.0
        try:
            value = calculator(*bound.args, **bound.kwargs) if self.options.workload_mode == "params" \
                else calculator(dict(bound.arguments))
            value = float(value)
        except Exception:
            return 100.0
        return value if math.isfinite(value) and value >= 0 else 100.0

    def _limits(self, bound: inspect.BoundArguments, timeout: float | None = None) -> dict:
        opts = self.options
        return dict(cost=self._cost(bound), timeout=timeout if timeout is not None else opts.timeout,
                    max_queue_time=opts.max_queue_time, retries=opts.retries)

    def _not_a_generator(self) -> None:
        if self._yields:
            raise TypeError(f"{self.__name__} yields items: consume it with `for x in {self.__name__}.stream(...)` "
                            f"(or `async for`), not a plain call.")

    def _outcome(self, bound: inspect.BoundArguments, timeout: float | None):
        """One call as the caller runs it (a coroutine for the loop that awaits it), with this function's limits."""
        self._not_a_generator()
        opts = self.options
        return self._caller.call(self.__name__, bound.args, bound.kwargs, cost=self._cost(bound),
                                 timeout=timeout if timeout is not None else opts.timeout,
                                 max_queue_time=opts.max_queue_time, retries=opts.retries)

    async def _call(self, bound: inspect.BoundArguments, timeout: float | None = None) -> Any:
        outcome = await self._outcome(bound, timeout)     # on this loop, or handed on by the caller
        write_outcome(outcome)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def __call__(self, *args: Any, **kwargs: Any):
        """``await f(x)``: binds now (TypeError at once), runs when awaited."""
        self._not_a_generator()
        return self._call(self._bind(args, kwargs))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Blocking call, usable from sync code and inside Jupyter cells."""
        bound = self._bind(args, kwargs)
        outcome = loop.run_sync(self._outcome(bound, None))
        write_outcome(outcome)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def spawn(self, *args: Any, **kwargs: Any) -> CallHandle:
        """Start a call and return its ``CallHandle`` at once: ``.result(timeout)``, ``await handle``,
        ``.done()``, ``.cancel()``; its ``.id`` finds it again with ``app.get_call(id)`` (on the local engine
        also from another process, while the engine keeps the result: an hour, the newest 1,000 calls)."""
        self._not_a_generator()
        bound = self._bind(args, kwargs)
        return loop.run_sync(self._caller.spawn(self.__name__, bound.args, bound.kwargs, show=write_outcome,
                                                **self._limits(bound)))

    def stream(self, *args: Any, **kwargs: Any) -> loop.LoopIterator:
        """The items of a remote generator (``def``/``async def`` that yields) as the worker makes them:
        ``async for x in f.stream(...)``, or ``for x in f.stream(...)`` in sync code. The worker runs at most
        a window (64 items) ahead of the consumer; an error raised mid-stream is raised here after the items
        sent before it; leaving the loop early stops the generator. On Vast the stock worker answers one
        body per request: the items are collected there and arrive together when the generator ends."""
        if not _yields(self.local):
            raise TypeError(f"{self.__name__} does not yield: call it with `await {self.__name__}(...)` or "
                            f"`{self.__name__}.call(...)`; .stream(...) is for generators.")
        bound = self._bind(args, kwargs)
        source = self._caller.stream(self.__name__, bound.args, bound.kwargs, **self._limits(bound))

        def shown(event: tuple[str, Any]) -> Any:
            kind, value = event
            if kind == "items":
                return loop.LoopIterator.many(value)
            write_outcome(value)
            if value.error is not None:
                raise value.error
            return loop.LoopIterator.SKIP

        return loop.LoopIterator(source, shown)

    def with_timeout(self, seconds: float) -> Callable[..., Any]:
        """``await f.with_timeout(5)(x)``: one call with its own timeout."""
        return lambda *args, **kwargs: self._call(self._bind(args, kwargs), timeout=seconds)

    async def _gather(self, calls: list[inspect.BoundArguments], counter: list[int],
                      finished: list[int] | None = None) -> list:
        """Run every call concurrently on the background loop; count finished (``counter[0]``) and failed
        (``counter[1]``) ones, and list the indices in the order they finished (``finished``, given for
        ``ordered=False``: then each item is a call of its own, so its finish is seen). In input order,
        backends that chunk (``Caller.call_many``) take them in few requests."""
        if finished is None:
            chunked = await self._caller.call_many(self.__name__, [(b.args, b.kwargs, self._cost(b)) for b in calls],
                                                   self.options, counter)
            if chunked is not None:
                return chunked

        async def one(index: int, bound: inspect.BoundArguments):
            failed = True
            try:
                outcome = await self._outcome(bound, None)
                failed = outcome.error is not None
                return outcome
            finally:
                counter[0] += 1
                counter[1] += failed
                if finished is not None:
                    finished.append(index)

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(calls)), return_exceptions=True)

    def _calls(self, iterables: tuple[Iterable, ...]) -> list[inspect.BoundArguments]:
        self._not_a_generator()
        return [self._bind(tuple(items), {}) for items in zip(*iterables)]

    def _starcalls(self, arguments: Iterable) -> list[inspect.BoundArguments]:
        self._not_a_generator()
        calls = []
        for index, items in enumerate(arguments):
            if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
                raise TypeError(f"{self.__name__}.starmap takes an iterable of argument tuples; item {index} is "
                                f"{type(items).__name__}, e.g. {self.__name__}.starmap([(1, 2), (3, 4)]).")
            calls.append(self._bind(tuple(items), {}))
        return calls

    async def map_async(self, *iterables: Iterable, return_exceptions: bool = False, ordered: bool = True) -> list:
        """Concurrent calls over zipped iterables, results in input order (``ordered=False``: in the order
        they finish)."""
        return await self._run_map_async(self._calls(iterables), return_exceptions, ordered)

    async def _run_map_async(self, calls: list, return_exceptions: bool, ordered: bool) -> list:
        counter, finished = [0, 0], (None if ordered else [])
        bar = open_map_progress(len(calls))
        task = asyncio.ensure_future(loop.run_on_loop(self._gather(calls, counter, finished)))
        while not task.done():
            await asyncio.wait([task], timeout=0.1)
            bar.update(counter[0], counter[1])
        bar.update(counter[0], counter[1])
        bar.close()
        return self._collect(task.result(), return_exceptions, finished)

    def map(self, *iterables: Iterable, return_exceptions: bool = False, ordered: bool = True) -> list:
        """Blocking ``map``: ``square.map([1, 2, 3]) -> [1, 4, 9]``, progress shown in the calling cell.
        ``ordered=False`` returns the results in the order they finished; a failed call never holds up
        the others (all run; the first error is raised at the end, or kept in place with
        ``return_exceptions=True``)."""
        return self._run_map(self._calls(iterables), return_exceptions, ordered)

    def starmap(self, arguments: Iterable, return_exceptions: bool = False, ordered: bool = True) -> list:
        """``f.starmap([(1, 2), (3, 4)])`` is ``[f(1, 2), f(3, 4)]``, run like ``map``."""
        return self._run_map(self._starcalls(arguments), return_exceptions, ordered)

    async def starmap_async(self, arguments: Iterable, return_exceptions: bool = False, ordered: bool = True) -> list:
        return await self._run_map_async(self._starcalls(arguments), return_exceptions, ordered)

    def _run_map(self, calls: list, return_exceptions: bool, ordered: bool) -> list:
        counter, finished = [0, 0], (None if ordered else [])
        bar = open_map_progress(len(calls))
        future = loop.submit(self._gather(calls, counter, finished))
        try:
            while not future.done():
                concurrent.futures.wait([future], timeout=0.1)
                bar.update(counter[0], counter[1])
            bar.update(counter[0], counter[1])
        except KeyboardInterrupt:
            future.cancel()
            raise
        finally:
            bar.close()
        return self._collect(future.result(), return_exceptions, finished)

    def map_as_completed(self, *iterables: Iterable, return_exceptions: bool = False) -> loop.LoopIterator:
        """``async for value in f.map_as_completed(xs)`` (or ``for`` in sync code): each result as soon as
        its call finishes, whatever the input order. A failed call does not hold up the others: with
        ``return_exceptions=True`` its error is yielded in its turn; otherwise the first error is raised
        once every other result was yielded. Leaving the loop early cancels the calls still running."""
        calls = self._calls(iterables)

        def shown(item: tuple[int, Any]) -> Any:
            outcome = item[1]
            if not isinstance(outcome, BaseException):
                write_outcome(outcome)
            error = _error_of(outcome)
            if error is None:
                return outcome.value
            return error if return_exceptions else loop.LoopIterator.SKIP

        return loop.LoopIterator(self._completed(calls, raise_first=not return_exceptions), shown)

    async def _completed(self, calls: list[inspect.BoundArguments],
                         raise_first: bool) -> AsyncIterator[tuple[int, Any]]:
        """(index, outcome or exception) of each call as it finishes, on the background loop; with
        ``raise_first`` the first failure is raised after the last item. Closing it cancels what still runs."""
        pending = {asyncio.ensure_future(self._outcome(bound, None)): i for i, bound in enumerate(calls)}
        first: BaseException | None = None
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=pending.__getitem__):
                    index = pending.pop(task)
                    outcome = task.exception() if task.exception() is not None else task.result()
                    first = first or _error_of(outcome)
                    yield index, outcome
        finally:
            for task in pending:
                task.cancel()
        if first is not None and raise_first:
            raise first

    def _collect(self, outcomes: list, return_exceptions: bool, finished: list[int] | None = None) -> list:
        """Write each call's output in order, say which items failed, then return values (errors in place
        with ``return_exceptions``) or raise the first error (its remote traceback shows). ``finished``:
        the order to return them in (default: input order)."""
        order = finished if finished is not None else range(len(outcomes))
        shown: set[str] = set()
        for index in order:
            if not isinstance(outcomes[index], BaseException):
                write_outcome(outcomes[index], shown)
        report = map_failure_report(self.__name__, outcomes, with_traceback=return_exceptions)
        if report:
            sys.stderr.write(report)
            sys.stderr.flush()
        errors = [_error_of(outcomes[index]) for index in order]
        first = next((error for error in errors if error is not None), None)
        if first is not None and not return_exceptions:
            raise first
        return [error if error is not None else outcomes[index].value for error, index in zip(errors, order)]
