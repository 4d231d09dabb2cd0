"""One heartbeat scheduler for both backends' ``ttl`` deployments.

A deployment deployed with ``ttl`` stays alive only while its client says so:
the local engine stops it after ``ttl`` seconds without a heartbeat, and Vast
does the same on its side (reference 1.2 step 7). Each backend hands this
scheduler a ``beat(key)`` coroutine (one request) and the scheduler runs one
task per deployment on the background loop, the same way for both:

- a beat at once, then one every ``interval_for(ttl)``: ``ttl / 3`` (two beats
  may fail before the ttl runs out), at least 0.05 s, at most 30 s;
- a beat that raises never ends the task: the error is kept in ``last_error``
  and the next beat comes sooner (after at most 10 s);
- ``beat`` answering False means the deployment is gone: its task ends;
- starting a key again replaces its task; ``stop``, ``stop_all`` (teardown,
  ``close``) and interpreter exit end them.

Unlike the official SDK's daemon thread, every beat has a timeout (the
backend's request), errors are survived, and re-deploying never adds a task.
"""
from __future__ import annotations

import asyncio
import atexit
import weakref
from typing import Awaitable, Callable, Hashable

__all__ = ["HeartbeatScheduler", "interval_for", "RETRY_AFTER_FAILURE"]

RETRY_AFTER_FAILURE = 10.0


def interval_for(ttl: float) -> float:
    """Seconds between beats for a deployment with this ttl (the one rule of both backends)."""
    return max(0.05, min(ttl / 3, 30.0))


class HeartbeatScheduler:
    def __init__(self, beat: Callable[[Hashable], Awaitable[bool]]):
        self.beat = beat
        self.tasks: dict[Hashable, asyncio.Task] = {}
        self.beats: dict[Hashable, int] = {}
        self.last_error: dict[Hashable, str] = {}
        atexit.register(_stop_at_exit, weakref.ref(self))

    def start(self, key: Hashable, ttl: float) -> None:
        """(Re)start beating for ``key``; call on the loop that should own the task."""
        self.stop(key)
        self.tasks[key] = asyncio.get_running_loop().create_task(self._run(key, interval_for(ttl)),
                                                                 name=f"vast-magic-heartbeat-{key}")

    def stop(self, key: Hashable) -> None:
        """End ``key``'s task; safe from any thread."""
        task = self.tasks.pop(key, None)
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)

    def stop_all(self) -> None:
        for key in list(self.tasks):
            self.stop(key)

    def running(self, key: Hashable) -> bool:
        task = self.tasks.get(key)
        return task is not None and not task.done()

    async def _run(self, key: Hashable, interval: float) -> None:
        while True:
            try:
                alive = await self.beat(key)
            except Exception as exc:  # a background loop never dies: the next beat comes sooner
                self.last_error[key] = str(exc)
                await asyncio.sleep(min(interval, RETRY_AFTER_FAILURE))
                continue
            if not alive:
                return
            self.beats[key] = self.beats.get(key, 0) + 1
            self.last_error.pop(key, None)
            await asyncio.sleep(interval)


def _stop_at_exit(ref: "weakref.ref[HeartbeatScheduler]") -> None:
    scheduler = ref()
    if scheduler is not None:
        try:
            scheduler.stop_all()
        except RuntimeError:  # the loop is already closed
            pass
