"""Watching an endpoint's workers come up (``POST {autoscaler}/get_endpoint_workers/``).

The official client never waits for workers; we poll and turn what Vast
reports into ``WorkerState`` / ``BenchmarkScored`` events. A worker is ready
when it reports a load time (``loadtime`` or ``loaded_at`` > 0) and no
``error_msg``; an ``error_msg`` means failed; its perf is the first positive of
``max_perf``, ``measured_perf``, ``perf``, ``cur_perf`` (reference 4.4).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from ...errors import DeployError
from ...events import BenchmarkScored, EventSink, WorkerState
from ...reports import WorkerInfo
from .api import VastAPI

__all__ = ["worker_info", "endpoint_workers", "ReadinessWatch"]

_FAILED_STATUSES = {"error", "errored", "failed"}
_STOPPED_STATUSES = {"stopped", "inactive", "offline", "destroyed", "exited"}
_PERF_FIELDS = ("max_perf", "measured_perf", "perf", "cur_perf")


def _number(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _optional(value: Any) -> float | None:
    """A number Vast may leave out (``cur_load``, ``reliability``): None when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def worker_info(raw: dict) -> WorkerInfo:
    """One worker as Vast reports it -> WorkerInfo."""
    error = str(raw.get("error_msg") or "").strip() or None
    status = str(raw.get("status") or "").strip().lower()
    loaded = _number(raw.get("loadtime")) > 0 or _number(raw.get("loaded_at")) > 0
    perf = next((_number(raw.get(f)) for f in _PERF_FIELDS if _number(raw.get(f)) > 0), None)
    if error or status in _FAILED_STATUSES:
        state = "failed"
    elif status in _STOPPED_STATUSES:
        state = "stopped"
    elif loaded:
        state = "ready"
    else:
        state = "starting"
    version = raw.get("version")
    return WorkerInfo(id=str(raw.get("id")), state=state, perf=perf, version=str(version) if version else None,
                      error=error or (f"Vast reports status {status!r}" if state == "failed" else None),
                      load=_optional(raw.get("cur_load")), reliability=_optional(raw.get("reliability")))


async def endpoint_workers(api: VastAPI, endpoint_id: int, emit: EventSink | None = None) -> tuple[WorkerInfo, ...]:
    what = "POST /get_endpoint_workers/"
    response = await api.request("POST", api.autoscaler("/get_endpoint_workers/"), what=what,
                                 json={"id": endpoint_id, "api_key": api.api_key}, emit=emit)
    data = api.json(response, what)
    if isinstance(data, dict):  # {"error_msg": ...}: the endpoint cannot be queried yet (SDK comment)
        return ()
    return tuple(worker_info(item) for item in data or () if isinstance(item, dict))


class ReadinessWatch:
    """Polls until one worker is ready; emits an event whenever a worker's reported state changes."""

    def __init__(self, api: VastAPI, endpoint_id: int, emit: EventSink, *, interval: float = 2.0,
                 sleep: Callable[[float], Any] | None = None):
        self.api, self.endpoint_id, self.emit = api, endpoint_id, emit
        self.interval = interval
        self.sleep = sleep or asyncio.sleep
        self.seen: dict[str, WorkerInfo] = {}

    def _report(self, workers: tuple[WorkerInfo, ...]) -> None:
        for info in workers:
            before = self.seen.get(info.id)
            if before == info:
                continue
            if info.perf is not None and (before is None or before.perf != info.perf):
                self.emit(BenchmarkScored(info.id, info.perf))
            self.emit(WorkerState(info.id, info.state, perf=info.perf, version=info.version, error=info.error,
                                  load=info.load, reliability=info.reliability))
            self.seen[info.id] = info

    async def wait(self, timeout: float) -> tuple[WorkerInfo, ...]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            workers = await endpoint_workers(self.api, self.endpoint_id, self.emit)
            self._report(workers)
            if any(w.state == "ready" for w in workers):
                return workers
            left = deadline - loop.time()
            if left <= 0:
                raise DeployError(self.timeout_message(timeout), report=tuple(self.seen.values()))
            await self.sleep(min(self.interval, left))

    def timeout_message(self, timeout: float) -> str:
        if not self.seen:
            seen = "Vast reported no workers yet (no machine matched the requirements, or none was started)"
        else:
            seen = "; ".join(f"worker {w.id}: {w.state}" + (f" ({w.error})" if w.error else "")
                             for w in self.seen.values())
        return (f"no worker of endpoint {self.endpoint_id} became ready within {timeout:g}s: {seen}. "
                "Check image.preview_offers(), the worker logs in the Vast console, or deploy with a longer timeout.")
