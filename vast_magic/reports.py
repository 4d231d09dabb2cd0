"""The frozen value types the public API returns (a contract: see DESIGN.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WORKER_STATES", "Fingerprint", "WorkerInfo", "DeployReport", "Bundle", "DeploymentStatus", "LogLine"]

WORKER_STATES = ("starting", "installing", "contexts", "benchmarking", "ready", "failed", "stopped")


@dataclass(frozen=True)
class Fingerprint:
    """Four hex SHA-256 digests over a Manifest; equal fingerprints mean nothing to deploy."""

    code: str
    image: str
    autoscaling: str
    tag: str


@dataclass(frozen=True)
class WorkerInfo:
    """One worker; ``state`` is one of WORKER_STATES, ``detail`` the backend's own status text (Vast's)."""

    id: str
    state: str
    perf: float | None = None
    pid: int | None = None
    version: str | None = None
    error: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class DeployReport:
    tier: int
    reasons: tuple[str, ...]
    fingerprint: Fingerprint
    bundle_size: int
    files: int
    endpoint: str | None
    workers: tuple[WorkerInfo, ...]
    benchmark: float | None
    dry_run: bool
    backend_action: str | None = None


@dataclass(frozen=True)
class Bundle:
    path: str
    fingerprint: Fingerprint
    files: tuple[str, ...]


@dataclass(frozen=True)
class DeploymentStatus:
    """``services``: (role, URL) of what the backend talks to (Vast's webserver and autoscaler)."""

    name: str
    tag: str
    endpoint: str | None
    state: str
    workers: tuple[WorkerInfo, ...]
    not_applied_locally: tuple[str, ...] = field(default=())
    services: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class LogLine:
    time: float
    worker: str
    stream: str  # "stdout" | "stderr" | "system"
    text: str
    function: str | None = None
