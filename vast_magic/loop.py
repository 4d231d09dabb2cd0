"""The one private background event loop.

Jupyter already runs an asyncio loop in the kernel thread, so library code can
never call ``asyncio.run`` there, and we do not patch loops (nest-asyncio is
archived). Instead every sync entry point hands its coroutine to a single loop
running in a daemon thread and waits for it. Network state (connections to the
engine and to workers) lives on that loop, so it is shared by sync and async
callers alike.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import sys
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Iterator, TypeVar

__all__ = ["get_loop", "on_loop_thread", "submit", "run_sync", "run_on_loop", "LoopIterator", "Started", "start"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _run_forever(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def get_loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use (and again after a fork)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_run_forever, args=(loop, started), name="vast-magic-loop", daemon=True)
            thread.start()
            started.wait()
            _loop, _thread = loop, thread
        return _loop


async def _cancel_everything() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=1.0) if tasks else None


@atexit.register
def _shutdown() -> None:
    """Cancel background tasks at interpreter exit so connections close instead of being destroyed."""
    loop = _loop
    if loop is None or _thread is None or not _thread.is_alive() or loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(_cancel_everything(), loop).result(2.0)
    except Exception:
        pass
    loop.call_soon_threadsafe(loop.stop)


def on_loop_thread() -> bool:
    """True when the caller is running on the background loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop; returns a thread-safe future."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and block until it finishes.

    Works whether or not the calling thread has a running loop (a Jupyter cell,
    a script, a thread). On KeyboardInterrupt the coroutine is cancelled and the
    interrupt propagates, so Ctrl-C in a notebook stops waiting cleanly. A
    timeout cancels it too and raises ``concurrent.futures.TimeoutError``.
    """
    if on_loop_thread():
        coro.close()
        raise RuntimeError(
            "run_sync() was called on vast_magic's own event loop thread, which would deadlock; "
            "use the async API (await ...) from code running on that loop."
        )
    handoff = _Handoff(coro, get_loop())
    try:
        finished = handoff.finished.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
    except KeyboardInterrupt:
        handoff.cancel()
        raise
    if not finished:
        handoff.cancel()
        raise concurrent.futures.TimeoutError()
    return handoff.outcome()


class _Handoff:
    """One coroutine run on the background loop for a thread that blocks until it ends.

    What ``asyncio.run_coroutine_threadsafe`` does, with less on the way: the task
    is made in the loop's wake-up callback (from Python 3.12 it starts right there),
    and its end releases a plain lock the caller waits on, with no concurrent
    future or condition in between. A blocking call spends most of its overhead here.
    """

    __slots__ = ("loop", "task", "finished")

    def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop):
        self.loop, self.task = loop, None
        self.finished = threading.Lock()
        self.finished.acquire()
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        if sys.version_info >= (3, 12):
            self.task = asyncio.Task(coro, loop=self.loop, eager_start=True)
        else:
            self.task = self.loop.create_task(coro)
        if self.task.done():
            self.finished.release()
        else:
            self.task.add_done_callback(lambda _: self.finished.release())

    def cancel(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:                 # the loop is closed (interpreter exit): nothing runs any more
            pass

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def outcome(self) -> Any:
        """The finished task's result (its exception raised); a cancelled one raises
        ``concurrent.futures.CancelledError``, as a future of ``run_coroutine_threadsafe`` did."""
        if self.task.cancelled():
            raise concurrent.futures.CancelledError()
        return self.task.result()


async def run_on_loop(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on the background loop from any other running loop.

    Async entry points (``await f(x)`` in a Jupyter cell) use this so that the
    connections they touch always belong to the background loop.
    """
    if on_loop_thread():
        return await awaitable
    future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), get_loop())
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


class LoopIterator:
    """An async iterator that lives on the background loop, consumed with ``async for`` from any loop or with
    ``for`` from sync code (a Jupyter cell, a script, a thread).

    Each step runs on the background loop, so the connections the source touches stay there. ``convert``
    turns what the source yields into what the consumer sees (e.g. writes the worker's output, raises a
    remote error). Leaving the loop early (``break``, an exception, Ctrl-C) closes the source there, so
    whatever it holds (a call on a worker) is released.
    """

    #: what ``convert`` returns for an item the consumer should not see
    SKIP: Any = type("Skip", (), {"__repr__": lambda self: "<skip>"})()

    @staticmethod
    def many(items: "list[Any]") -> "_Many":
        """What ``convert`` returns for several items at once: the consumer sees each, with no hop between."""
        return _Many(items)

    def __init__(self, source: "AsyncIterator[Any]", convert: "Callable[[Any], Any]" = lambda item: item):
        self._source = source
        self._convert = convert
        self._used = False

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("this iterator was already consumed; call the method again for a new one.")
        self._used = True

    def __aiter__(self) -> "AsyncIterator[Any]":
        self._claim()
        return self._async_steps()

    async def _async_steps(self) -> "AsyncIterator[Any]":
        try:
            while True:
                more, item = await run_on_loop(_step(self._source))
                if not more:
                    return
                for one in self._expanded(item):
                    yield one
        finally:
            await run_on_loop(_close(self._source))

    def _expanded(self, item: Any) -> "tuple | list":
        """What the consumer sees of one step: its converted item, the items of a ``many``, or nothing."""
        item = self._convert(item)
        if isinstance(item, _Many):
            return item
        return () if item is self.SKIP else (item,)

    def __iter__(self) -> "Iterator[Any]":
        self._claim()
        return self._sync_steps()

    def _sync_steps(self) -> "Iterator[Any]":
        try:
            while True:
                more, item = run_sync(_step(self._source))
                if not more:
                    return
                for one in self._expanded(item):
                    yield one
        finally:
            if not on_loop_thread():
                run_sync(_close(self._source), timeout=30)


class _Many(list):
    """Items the consumer sees one by one (``LoopIterator.many``)."""


async def _step(source: "AsyncIterator[Any]") -> tuple[bool, Any]:
    """One item as (True, item), or (False, None) at the end: StopAsyncIteration never crosses a future."""
    try:
        return True, await source.__anext__()
    except StopAsyncIteration:
        return False, None


async def _close(source: "AsyncIterator[Any]") -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
class Started:
    """A coroutine running on the background loop that another loop awaits and any thread can stop.

    ``run_on_loop`` cancels its coroutine only when the awaiting loop next runs; a caller that
    holds that loop's thread (a magic stopping a watch task) needs the coroutine stopped and
    finished before it goes on, e.g. before the engine will take another deploy of that name.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any]):
        self.outcome: concurrent.futures.Future = concurrent.futures.Future()
        self.finished = threading.Event()
        self._task: concurrent.futures.Future = concurrent.futures.Future()
        loop = get_loop()
        loop.call_soon_threadsafe(self._start, loop, coro)

    def _start(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        task = loop.create_task(coro)
        task.add_done_callback(self._done)
        self._task.set_result(task)

    def _done(self, task: asyncio.Task) -> None:
        if not self.outcome.done():          # the awaiting side may have given up (cancelled) already
            if task.cancelled():
                self.outcome.cancel()
            elif task.exception() is not None:
                self.outcome.set_exception(task.exception())
            else:
                self.outcome.set_result(task.result())
        self.finished.set()

    def _cancel_task(self) -> None:
        if self._task.done():              # it is: _start was queued first on the same loop
            self._task.result().cancel()

    async def wait(self) -> Any:
        """The coroutine's result, awaited from another loop; cancelling this wait cancels the coroutine."""
        try:
            return await asyncio.wrap_future(self.outcome)
        except asyncio.CancelledError:
            self.cancel(wait=0)
            raise

    def cancel(self, wait: float = 30.0) -> bool:
        """Cancel the coroutine and block up to ``wait`` seconds until it has ended; True if it has."""
        get_loop().call_soon_threadsafe(self._cancel_task)
        return self.finished.wait(wait) if wait > 0 else self.finished.is_set()


def start(coro: Coroutine[Any, Any, Any]) -> Started:
    """Start ``coro`` on the background loop without waiting for it (see ``Started``)."""
    return Started(coro)
