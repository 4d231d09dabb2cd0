"""Watching an endpoint's workers come up (``POST {autoscaler}/get_endpoint_workers/``, reference 8.2).

The official client never waits for workers; we poll and turn what Vast
reports into ``WorkerState`` / ``BenchmarkScored`` events. The answer is a
bare list (what the SDK requires) or ``{"workers": [...]}`` (the API spec);
``{"error_msg": ...}`` means the endpoint cannot be queried yet (no workers):
the watch shows Vast's words as a line of the progress and quotes them if it
times out (an HTTP 400 with ``error_msg`` is an error at once, quoting it).
A worker is ready when ``status.lower() == "idle"`` and ``measured_perf > 0``;
before that ``perf`` is a placeholder (a DLPerf score) and is never shown as a
benchmark. ``stopped``, ``destroying`` and ``unavail`` are terminal; ``error``
(or an ``error_msg``) is a failed worker. Vast's own status text is kept as
the worker's ``detail``. Polls are at most every ``MIN_POLL_INTERVAL`` s
(the API is rate limited) unless the autoscaler is on loopback (a testing
knob, ``vast_poll_interval``).

After a soft update the workers that were there before still report ready
while they are being replaced; ``ReadinessWatch(previous=...)`` waits for a
worker that is new, that loaded again (another ``loaded_at`` or
``started_at``), or that was seen starting since the update.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import ConfigError, DeployError
from ...events import BenchmarkScored, EventSink, WorkerState
from ...reports import LogLine, WorkerInfo
from ...settings import is_loopback_url
from .api import VastAPI

__all__ = ["MIN_POLL_INTERVAL", "TERMINAL_STATUSES", "Reported", "check_poll_interval", "worker_info",
           "parse_workers", "endpoint_workers", "ReadinessWatch", "generations"]

MIN_POLL_INTERVAL = 5.0
TERMINAL_STATUSES = frozenset({"stopped", "destroying", "unavail"})
_FAILED_STATUSES = frozenset({"error", "errored", "failed"})


def check_poll_interval(interval: float, autoscaler_url: str) -> float:
    """The readiness poll interval; below 5 s only against a loopback autoscaler (the box)."""
    if interval < MIN_POLL_INTERVAL and not is_loopback_url(autoscaler_url):
        raise ConfigError(f"vast_poll_interval={interval:g} is below {MIN_POLL_INTERVAL:g}s: Vast rate-limits "
                          f"get_endpoint_workers, so shorter intervals are only for a loopback autoscaler (the "
                          f"testing box); unset VAST_MAGIC_VAST_POLL_INTERVAL.")
    return interval


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


@dataclass(frozen=True)
class Reported:
    """One worker as reported, with what tells a reloaded worker apart from the one before."""

    info: WorkerInfo
    generation: tuple[float, float]       # (loaded_at, started_at): changes when the worker loads again


def worker_info(raw: dict) -> WorkerInfo:
    """One worker as Vast reports it -> WorkerInfo (``detail``: Vast's own status text)."""
    status = str(raw.get("status") or "").strip()
    lowered = status.lower()
    error = str(raw.get("error_msg") or "").strip() or None
    measured = _number(raw.get("measured_perf"))
    if error or lowered in _FAILED_STATUSES:
        state = "failed"
    elif lowered in TERMINAL_STATUSES:
        state = "stopped"
    elif lowered == "idle" and measured > 0:
        state = "ready"
    else:
        state = "starting"
    return WorkerInfo(id=str(raw.get("id")), state=state, perf=measured if state == "ready" else None,
                      error=error or (f"Vast reports status {status!r}" if state == "failed" else None),
                      detail=status or None, load=_optional(raw.get("cur_load")),
                      reliability=_optional(raw.get("reliability")))


def parse_workers(data: Any) -> tuple[tuple[Reported, ...], str | None]:
    """Both answer shapes -> the workers, and Vast's ``error_msg`` when it answered one instead."""
    if isinstance(data, dict):
        if "workers" not in data:
            return (), str(data.get("error_msg") or data) or None
        data = data.get("workers")
    items = data if isinstance(data, list) else []
    return tuple(Reported(worker_info(item), (_number(item.get("loaded_at")), _number(item.get("started_at"))))
                 for item in items if isinstance(item, dict)), None


async def endpoint_workers(api: VastAPI, endpoint_id: int, emit: EventSink | None = None
                           ) -> tuple[tuple[Reported, ...], str | None]:
    what = "POST /get_endpoint_workers/"
    response = await api.request("POST", api.autoscaler("/get_endpoint_workers/"), what=what,
                                 json={"id": endpoint_id, "api_key": api.api_key}, emit=emit)
    return parse_workers(api.json(response, what))


class ReadinessWatch:
    """Polls until a worker is ready (a new one, after a soft update); an event per reported change."""

    def __init__(self, api: VastAPI, endpoint_id: int, emit: EventSink, *, interval: float = MIN_POLL_INTERVAL,
                 sleep: Callable[[float], Any] | None = None, previous: dict[str, tuple] | None = None,
                 last_poll: float | None = None):
        self.api, self.endpoint_id, self.emit = api, endpoint_id, emit
        self.interval = interval
        self.sleep = sleep or asyncio.sleep
        self.previous = previous          # worker id -> generation before the update; None: any worker will do
        self.restarted: set[str] = set()  # workers of before the update seen starting since
        self.seen: dict[str, WorkerInfo] = {}
        self.vast_said: str | None = None
        self.last_poll = last_poll        # loop time of a poll made just before the watch (the rate limit counts it)

    def _report(self, workers: tuple[WorkerInfo, ...]) -> None:
        for info in workers:
            before = self.seen.get(info.id)
            if before == info:
                continue
            if info.perf is not None and (before is None or before.perf != info.perf):
                self.emit(BenchmarkScored(info.id, info.perf))
            self.emit(WorkerState(info.id, info.state, perf=info.perf, version=info.version, error=info.error,
                                  detail=info.detail, load=info.load, reliability=info.reliability))
            self.seen[info.id] = info

    def _updated(self, worker: Reported) -> bool:
        if self.previous is None or worker.info.id not in self.previous:
            return True
        if worker.info.state == "starting":
            self.restarted.add(worker.info.id)
        return worker.info.id in self.restarted or worker.generation != self.previous[worker.info.id]

    async def wait(self, timeout: float) -> tuple[WorkerInfo, ...]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.last_poll is not None and self.last_poll + self.interval > loop.time():
            await self.sleep(min(self.last_poll + self.interval - loop.time(), max(0.0, deadline - loop.time())))
        while True:
            reported, said = await endpoint_workers(self.api, self.endpoint_id, self.emit)
            if said and said != self.vast_said:
                self.emit(LogLine(time.time(), "vast", "system", f"get_endpoint_workers answered: {said}"))
            self.vast_said = said
            workers = tuple(w.info for w in reported)
            self._report(workers)
            if any(w.info.state == "ready" and self._updated(w) for w in reported):
                return workers
            fresh = [w.info for w in reported if self._updated(w)]
            if fresh and all(w.state == "failed" for w in fresh):
                raise DeployError(self.failed_message(fresh), report=workers)
            left = deadline - loop.time()
            if left <= 0:
                raise DeployError(self.timeout_message(timeout), report=tuple(self.seen.values()))
            await self.sleep(min(self.interval, left))

    def failed_message(self, failed: list[WorkerInfo]) -> str:
        errors = "\n".join(f"worker {w.id}: {w.error}" for w in failed)
        return (f"every new worker of endpoint {self.endpoint_id} failed; fix the cause and deploy again (the "
                f"previous version, if any, keeps serving). What the workers said:\n{errors}")

    def timeout_message(self, timeout: float) -> str:
        if not self.seen:
            seen = "Vast reported no workers yet (no machine matched the requirements, or none was started)"
            seen += f"; it answered: {self.vast_said}" if self.vast_said else ""
        else:
            seen = "; ".join(f"worker {w.id}: {w.state}" + (f" ({w.detail})" if w.detail else "")
                             + (f" ({w.error})" if w.error else "") for w in self.seen.values())
        waiting = " for an updated worker" if self.previous else ""
        return (f"no worker of endpoint {self.endpoint_id} became ready{waiting} within {timeout:g}s: {seen}. "
                "Check image.preview_offers(), the worker logs in the Vast console, or deploy with a longer timeout.")


def generations(reported: tuple[Reported, ...]) -> dict[str, tuple]:
    """Worker id -> (loaded_at, started_at): what ``ReadinessWatch(previous=...)`` compares against."""
    return {w.info.id: w.generation for w in reported}
