"""The contract between ``Deployment`` and a backend (local engine or Vast).

A backend turns a ``DeployPlan`` into running workers (emitting events while it
works), routes calls to workers, and answers status/logs/teardown. Everything
here is data so both backends and the tests speak the same language.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import EventSink
from ..reports import DeploymentStatus, LogLine, WorkerInfo


@dataclass(frozen=True)
class DeployPlan:
    name: str
    tag: str
    tier: int                     # decided by decide_tier(previous, manifest)
    reasons: tuple[str, ...]
    manifest: Any                 # vast_magic.bundle.manifest.Manifest
    bundle_path: str              # the built tar.gz
    env: tuple[tuple[str, str], ...]       # plain env vars for workers (also in config.json)
    secrets: tuple[tuple[str, str], ...] = field(repr=False)  # revealed Secret values: never in a bundle, log or repr
    autoscaling: dict             # effective autoscaling settings (only the keys the user set for Vast)
    image: Any                    # vast_magic.image.ImageSpec
    ttl: float | None = None
    version_label: str | None = None
    wait: bool = True
    timeout: float = 600.0


@dataclass(frozen=True)
class ApplyResult:
    endpoint: str | None
    workers: tuple[WorkerInfo, ...]
    benchmark: float | None
    backend_action: str | None = None
    not_applied: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallSpec:
    """What a call needs besides its arguments."""

    name: str                     # deployment name
    tag: str
    function: str
    timeout: float
    max_queue_time: float
    retries: int = 0
    cost: float = 100.0           # workload of this call, from workload_calculator


@dataclass(frozen=True)
class CallOutcome:
    value: Any = None
    error: BaseException | None = None
    output: tuple[tuple[str, str], ...] = field(default=())   # (stream, text) printed on the worker


class Backend(Protocol):
    kind: str

    async def previous_manifest(self, name: str, tag: str) -> Any | None:
        """The Manifest last applied for (name, tag), read without starting anything."""

    async def apply(self, plan: DeployPlan, emit: EventSink) -> ApplyResult:
        """Make the workers run ``plan``; emit events; raise DeployError on failure."""

    async def call(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> CallOutcome:
        """Run one call on a worker; ``classes`` maps shipped classes for pickling by reference."""

    async def status(self, name: str, tag: str) -> DeploymentStatus: ...

    async def logs(self, name: str, tag: str, function: str | None, tail: int) -> list[LogLine]: ...

    async def teardown(self, name: str, tag: str | None) -> None:
        """Stop (name, tag), or every tag of name when tag is None. Idempotent."""
