"""Calls to what this process deployed: the one way from a ``RemoteFunction`` to a backend.

A ``RemoteFunction`` holds a ``Caller``, never the ``Deployment``. The deploy
pipeline records in it what each successful ``ensure_ready`` deployed
(``Deployed``); a call is checked against that record (deployed at all, and
this function part of it), then goes to that backend as a ``CallSpec``, and
its time and outcome count in that (name, tag)'s ``CallCounter`` (what status
shows of this process's calls, kept across redeploys). A call runs on the loop
that awaits it when the backend allows (``any_loop``), else on the background loop.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from . import loop
from .backends.base import CallOutcome, CallSpec
from .call_handle import CallHandle
from .call_stats import CallCounter
from .errors import ConfigError
from .reports import CallStats

__all__ = ["Deployed", "Caller"]

_SPECS_KEPT = 256              # distinct (function, limits) specs remembered; a workload calculator varies cost


def _on_its_loop(backend: Any, call):
    """The backend's call as an awaitable here: on the caller's own loop when the backend allows it
    (``any_loop``: the local backend keeps connections per loop, so no thread hop), else handed to
    the background loop, where that backend's connections live."""
    if getattr(backend, "any_loop", False) or loop.on_loop_thread():
        return call
    return loop.run_on_loop(call)


def _spec(deployed: "Deployed", function: str, cost: float, timeout: float, max_queue_time: float,
          retries: int) -> CallSpec:
    """The request for one call (plain, chunked, spawned or streamed), pinned to the deployed version."""
    return CallSpec(name=deployed.name, tag=deployed.tag, function=function, timeout=timeout,
                    max_queue_time=max_queue_time, retries=retries, cost=cost,
                    trusted_types=deployed.trusted_types, version=deployed.version)


@dataclass(frozen=True)
class Deployed:
    """What calls need after a successful ensure_ready in this process."""

    backend: Any
    name: str
    tag: str
    functions: frozenset
    class_refs: dict
    trusted_types: tuple[str, ...] = ()
    version: str | None = None        # the code fingerprint deployed: calls run only on workers of it


class Caller:
    """Turns (function name, arguments, cost, timeout and limits) into a ``CallOutcome`` on what was deployed."""

    def __init__(self, owner: Callable[[], str]):
        """``owner`` names the deployment in messages (its repr as it is now: name, tag, backend)."""
        self.owner = owner
        self._deployed: Deployed | None = None
        self._deploys_in_flight = 0          # ensure_ready runs of this deployment in this process, not yet done
        self._calls: dict[tuple[str, str], CallCounter] = {}   # kept across redeploys of a name and tag
        self._specs: dict[tuple, tuple[Deployed, CallSpec]] = {}   # (function, limits) -> the deploy's spec

    def record(self, deployed: Deployed) -> None:
        """What the last successful deploy made callable."""
        self._deployed = deployed
        self._calls.setdefault((deployed.name, deployed.tag), CallCounter())

    def deploy_started(self) -> None:
        """A deploy began here: until it ends, a call refused for carrying the version before it waits for it."""
        self._deploys_in_flight += 1

    def deploy_ended(self) -> None:
        self._deploys_in_flight -= 1

    def call_stats(self, name: str, tag: str) -> CallStats | None:
        """This process's recent calls to (name, tag); None before the first deploy of it here."""
        counter = self._calls.get((name, tag))
        return counter.summary() if counter is not None else None

    def forget(self, name: str, tag: str | None) -> None:
        """After a teardown of (name, tag) (every tag when None): calls to it must deploy again first."""
        deployed = self._deployed
        if deployed is not None and deployed.name == name and tag in (None, deployed.tag):
            self._deployed = None

    def class_refs(self) -> dict | None:
        """The shipped classes of what was deployed last in this process (None before a deploy)."""
        return self._deployed.class_refs if self._deployed is not None else None

    def _checked(self, function: str) -> Deployed:
        deployed = self._deployed
        if deployed is None:
            raise ConfigError(f"{function}() was called before {self.owner()} was deployed in this process; "
                              "run app.ensure_ready() (or %vast_deploy) first.")
        if function not in deployed.functions:
            raise ConfigError(f"{function} is not part of the deployed version; "
                              "run app.ensure_ready() again to deploy it.")
        return deployed

    async def spawn(self, function: str, args: tuple, kwargs: dict, *, cost: float, timeout: float,
                    max_queue_time: float, retries: int, show: Callable[[CallOutcome], None]) -> CallHandle:
        """Start the call where the backend keeps it (the local engine; this process on Vast); returns at once.
        Runs on the background loop (the handle's later result and cancel go there too)."""
        deployed = self._checked(function)
        spec = _spec(deployed, function, cost, timeout, max_queue_time, retries)
        call_id = await deployed.backend.spawn(spec, args, kwargs, deployed.class_refs)
        return CallHandle(call_id, function, deployed.backend, deployed.class_refs, show)

    def stream(self, function: str, args: tuple, kwargs: dict, *, cost: float, timeout: float,
               max_queue_time: float, retries: int) -> AsyncIterator[tuple]:
        """The backend's stream of a remote generator: ``("item", x)`` events, then ``("end", CallOutcome)``;
        checked against what was deployed now (and pinned to its version), iterated on the background loop."""
        deployed = self._checked(function)
        spec = _spec(deployed, function, cost, timeout, max_queue_time, retries)
        return deployed.backend.stream(spec, args, kwargs, deployed.class_refs)

    async def call_many(self, function: str, calls: list, options: Any, counter: list) -> list | None:
        """``f.map``'s calls, (args, kwargs, cost) each, in chunks when the backend can (``call_many``);
        None when it cannot or retries are asked for (then each call goes on its own). Each item counts
        as one call; ``counter`` gets [finished, failed] as chunks end."""
        deployed = self._checked(function)
        many = getattr(deployed.backend, "call_many", None)
        if many is None or options.retries:
            return None
        spec = _spec(deployed, function, 100.0, options.timeout, options.max_queue_time, 0)
        stats = self._calls[(deployed.name, deployed.tag)]
        started = time.perf_counter()

        def done(finished: int, failed: int) -> None:
            counter[0] += finished
            counter[1] += failed
            for index in range(finished):
                stats.record(started, index >= failed)

        return await _on_its_loop(deployed.backend, many(spec, calls, deployed.class_refs, done))

    async def call(self, function: str, args: tuple, kwargs: dict, *, cost: float, timeout: float,
                   max_queue_time: float, retries: int) -> CallOutcome:
        deployed = self._checked(function)
        started, ok = time.perf_counter(), False
        try:
            try:
                outcome = await self._send(deployed, function, args, kwargs, cost, timeout, max_queue_time, retries)
            except ConfigError:
                newer = await self._deployed_since(deployed, started + timeout)
                if newer is None:
                    raise
                deployed = newer     # this process's own deploy moved on while the call was on its way
                outcome = await self._send(deployed, function, args, kwargs, cost, timeout, max_queue_time, retries)
            ok = outcome.error is None
            return outcome
        finally:
            self._calls[(deployed.name, deployed.tag)].record(started, ok)

    def _send(self, deployed: Deployed, function: str, args: tuple, kwargs: dict, cost: float, timeout: float,
              max_queue_time: float, retries: int):
        key = (function, cost, timeout, max_queue_time, retries)
        known = self._specs.get(key)
        if known is not None and known[0] is deployed:
            spec = known[1]
        else:                                  # a spec is the same for every call with these limits: made once
            spec = _spec(deployed, function, cost, timeout, max_queue_time, retries)
            if len(self._specs) >= _SPECS_KEPT:
                self._specs.clear()
            self._specs[key] = (deployed, spec)
        return _on_its_loop(deployed.backend, deployed.backend.call(spec, args, kwargs, deployed.class_refs))

    async def _deployed_since(self, deployed: Deployed, deadline: float) -> Deployed | None:
        """After a call pinned to ``deployed`` was refused: the newer version this process's own deploy
        records, waiting (up to ``deadline``, perf_counter time) for a deploy still running here; None when
        nothing newer comes (then the refusal stands: another process deployed, or the deploy failed).

        A call that starts while this process's ensure_ready is finishing carries the version before it,
        which the engine may already have retired."""
        while self._deployed is deployed and self._deploys_in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        newer = self._deployed
        if newer is None or newer is deployed or newer.version == deployed.version:
            return None
        if (newer.name, newer.tag) != (deployed.name, deployed.tag):
            return None
        return newer
