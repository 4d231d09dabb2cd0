"""Heartbeats for deployments with a ``ttl`` (reference 1.2 step 7), done robustly.

One task per deployment on the background loop: ``POST
/api/v0/deployment/{id}/heartbeat/`` (Bearer key, no body, no ``api_key``
query) at once and then every ``min(ttl / 2, 60)`` seconds. Unlike the
official daemon thread, each beat has a timeout, errors never end the task
(the next beat comes sooner instead), a 404 ends it (the deployment is gone),
re-deploying replaces the task instead of adding one, and teardown or
interpreter exit stops it.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import weakref

from .api import VastAPI
from .errors import VastNotFoundError

logger = logging.getLogger("vast_magic.vast")
BEAT_TIMEOUT = 10.0
RETRY_AFTER_FAILURE = 10.0


def interval_for(ttl: float) -> float:
    return max(0.05, min(ttl / 2, 60.0))


class Heartbeats:
    def __init__(self, api: VastAPI):
        self.api = api
        self.tasks: dict[int, asyncio.Task] = {}
        self.beats: dict[int, int] = {}
        self.last_error: dict[int, str] = {}
        atexit.register(_stop_at_exit, weakref.ref(self))

    def start(self, deployment_id: int, ttl: float) -> None:
        """(Re)start beating for ``deployment_id``; call on the loop that should own the task."""
        self.stop(deployment_id)
        self.tasks[deployment_id] = asyncio.get_running_loop().create_task(
            self._run(deployment_id, interval_for(ttl)), name=f"vast-heartbeat-{deployment_id}")

    def stop(self, deployment_id: int) -> None:
        task = self.tasks.pop(deployment_id, None)
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)

    def stop_all(self) -> None:
        for deployment_id in list(self.tasks):
            self.stop(deployment_id)

    def running(self, deployment_id: int) -> bool:
        task = self.tasks.get(deployment_id)
        return task is not None and not task.done()

    async def beat(self, deployment_id: int) -> None:
        await self.api.request("POST", self.api.web(f"/api/v0/deployment/{deployment_id}/heartbeat/"),
                               what=f"heartbeat of deployment {deployment_id}", query_key=False,
                               timeout=BEAT_TIMEOUT, attempts=1)

    async def _run(self, deployment_id: int, interval: float) -> None:
        while True:
            try:
                await self.beat(deployment_id)
            except VastNotFoundError:
                logger.warning("deployment %s no longer exists on Vast; heartbeats stopped.", deployment_id)
                return
            except Exception as exc:              # never the end of the loop: a missed beat is retried
                self.last_error[deployment_id] = str(exc)
                logger.warning("heartbeat failed, retrying: %s", exc)
                await asyncio.sleep(min(interval, RETRY_AFTER_FAILURE))
                continue
            self.beats[deployment_id] = self.beats.get(deployment_id, 0) + 1
            self.last_error.pop(deployment_id, None)
            await asyncio.sleep(interval)


def _stop_at_exit(ref: "weakref.ref[Heartbeats]") -> None:
    heartbeats = ref()
    if heartbeats is not None:
        try:
            heartbeats.stop_all()
        except RuntimeError:  # the loop is already closed
            pass
