"""Calls to what this process deployed: the one way from a ``RemoteFunction`` to a backend.

A ``RemoteFunction`` holds a ``Caller``, never the ``Deployment``. The deploy
flow records in it what each successful ``ensure_ready`` deployed
(``Deployed``); a call is checked against that record (deployed at all, and
this function part of it), then goes to that backend as a ``CallSpec``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .backends.base import CallOutcome, CallSpec
from .errors import ConfigError

__all__ = ["Deployed", "Caller"]


@dataclass(frozen=True)
class Deployed:
    """What calls need after a successful ensure_ready in this process."""

    backend: Any
    name: str
    tag: str
    functions: frozenset
    class_refs: dict
    trusted_types: tuple[str, ...] = ()


class Caller:
    """Turns (function name, arguments, cost, timeout and limits) into a ``CallOutcome`` on what was deployed."""

    def __init__(self, owner: Callable[[], str]):
        """``owner`` names the deployment in messages (its repr as it is now: name, tag, backend)."""
        self.owner = owner
        self._deployed: Deployed | None = None

    def record(self, deployed: Deployed) -> None:
        """What the last successful deploy made callable."""
        self._deployed = deployed

    def forget(self, name: str, tag: str | None) -> None:
        """After a teardown of (name, tag) (every tag when None): calls to it must deploy again first."""
        deployed = self._deployed
        if deployed is not None and deployed.name == name and tag in (None, deployed.tag):
            self._deployed = None

    async def call(self, function: str, args: tuple, kwargs: dict, *, cost: float, timeout: float,
                   max_queue_time: float, retries: int) -> CallOutcome:
        deployed = self._deployed
        if deployed is None:
            raise ConfigError(f"{function}() was called before {self.owner()} was deployed in this process; "
                              "run app.ensure_ready() (or %vast_deploy) first.")
        if function not in deployed.functions:
            raise ConfigError(f"{function} is not part of the deployed version; run app.ensure_ready() again to deploy it.")
        spec = CallSpec(name=deployed.name, tag=deployed.tag, function=function, timeout=timeout,
                        max_queue_time=max_queue_time, retries=retries, cost=cost,
                        trusted_types=deployed.trusted_types)
        return await deployed.backend.call(spec, args, kwargs, deployed.class_refs)
