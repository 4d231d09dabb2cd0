"""The engine's live model of a deployment and its workers (the store keeps the durable copy).

Plain records with the few answers derived from them (routes, load, status);
what changes them is ``engine.Engine``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from subprocess import Popen
from typing import Any

from ...reports import WorkerInfo
from . import logfiles
from .channel import Channel
from .failures import FailedWorker, as_info, failures_to_keep
from .policy import AutoscalingParams, PolicyState
from .store import DeploymentRecord, WorkerRecord
from .templates import ForkedProcess

__all__ = ["LOAD_STALE", "LAST_WORDS", "Version", "Worker", "Deployment", "status_of"]

LOAD_STALE = 3.0             # a load report older than this counts as idle
LAST_WORDS = 1.0             # s a dead worker's open link gets to deliver what it sent before its exit
_DRAIN_READS = 64            # chunks read before a state change is handled, so the lines that explain it come first


@dataclass(frozen=True)
class Version:
    """What new workers of a deployment run."""

    version: str
    bundle_dir: str
    python: str
    env: tuple = ()
    secrets: tuple = ()


@dataclass(eq=False)
class Worker:
    rec: WorkerRecord
    popen: Popen | ForkedProcess | None
    role: str                                  # candidate | serving | draining
    start: str = "fresh"                       # forked (from its version's template) | fresh
    start_note: str | None = None              # why it was not forked
    template_key: tuple | None = None          # (name, tag, Version): the template it was or would be forked from
    wanted_at: float = 0.0                     # time.monotonic() when the engine decided to start it
    channel: Channel | None = None
    load: float = 0.0
    load_at: float = 0.0
    settled: asyncio.Event = field(default_factory=asyncio.Event)   # ready, failed or gone
    log: logfiles.WorkerLog | None = None      # its rotated log (the engine is the only writer)
    pipes: tuple = ()                          # OutputPipe of its stdout and stderr
    exit_seen: float | None = None             # time.monotonic() when the engine first found its process gone

    def has_unread_last_words(self, now: float) -> bool:
        """Its process is gone but its engine link is still open: what it said just before exiting (a failed
        start's traceback) may still be unread. Then it is not reaped yet, for at most ``LAST_WORDS`` s after
        its exit was first seen, or the reaper's guess ("exited with code 1") would stand in for its words."""
        if self.channel is None or self.channel.closed:
            return False
        if self.exit_seen is None:
            self.exit_seen = now
        return now - self.exit_seen < LAST_WORDS

    def drain_output(self, reads: int = _DRAIN_READS) -> None:
        for pipe in self.pipes:
            pipe.drain(reads)

    def info(self) -> WorkerInfo:
        r = self.rec
        return WorkerInfo(r.id, r.state, r.perf, r.pid, r.version, r.error, load=self.current_load(), start=self.start)

    def current_load(self) -> float | None:
        """Workload in flight on a ready worker (0 once its last report is stale); None while not ready."""
        if self.rec.state != "ready":
            return None
        return self.load if time.monotonic() - self.load_at < LOAD_STALE else 0.0


@dataclass(eq=False)
class Deployment:
    rec: DeploymentRecord
    params: AutoscalingParams
    committed: bool
    workers: dict[str, Worker] = field(default_factory=dict)
    policy: PolicyState = field(default_factory=PolicyState)
    watchers: set = field(default_factory=set)     # callables receiving (kind, fields) events
    waiting: int = 0
    waiting_workload: float = 0.0
    routes_changed: asyncio.Event = field(default_factory=asyncio.Event)
    rollout: bool = False
    failures: int = 0
    next_spawn: float = 0.0
    last_error: str | None = None
    failed: tuple[FailedWorker, ...] = ()      # shown by status for a while (failures.failures_to_keep)
    scaling: asyncio.Lock = field(default_factory=asyncio.Lock)   # one autoscale step at a time
    scale_step: asyncio.Task | None = None     # the reconciler's autoscale step, run beside its heartbeat
    scaling_said: str | None = None            # the last failure scaling logged (a repeat is not logged again)

    @property
    def key(self) -> tuple[str, str]:
        return self.rec.name, self.rec.tag

    def version(self) -> Version:
        r = self.rec
        return Version(r.version, r.bundle_dir, r.python, tuple(map(tuple, r.env)), tuple(map(tuple, r.secrets)))

    def routes(self) -> list[tuple[str, int, float, str]]:
        return [(w.rec.id, w.rec.port, w.rec.perf or 0.0, w.rec.version) for w in self.workers.values()
                if w.role == "serving" and w.rec.state == "ready" and w.rec.port]

    def notify(self, kind: str, **fields: Any) -> None:
        for watcher in list(self.watchers):
            watcher(kind, fields)



def status_of(dep: Deployment | None, name: str, tag: str) -> dict:
    """A DeploymentStatus as a plain dict (sent to the client)."""
    if dep is None:
        return {"name": name, "tag": tag, "endpoint": None, "state": "stopped", "workers": [], "not_applied_locally": []}
    now = time.time()
    infos = [asdict(w.info()) for w in dep.workers.values() if w.role != "draining"]
    infos += [asdict(as_info(failure, now)) for failure in failures_to_keep(dep.failed, now)]
    if any(w.role == "serving" and w.rec.state == "ready" for w in dep.workers.values()):
        state = "ready"
    elif dep.last_error and not dep.rollout:
        state = "failed"
    else:
        state = "deploying"
    return {"name": name, "tag": tag, "endpoint": dep.rec.endpoint, "state": state, "workers": infos,
            "not_applied_locally": list(dep.rec.not_applied)}
