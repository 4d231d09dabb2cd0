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
    id: str
    state: str
    perf: float | None = None
    pid: int | None = None
    version: str | None = None
    error: str | None = None


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
    name: str
    tag: str
    endpoint: str | None
    state: str
    workers: tuple[WorkerInfo, ...]
    not_applied_locally: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class LogLine:
    time: float
    worker: str
    stream: str  # "stdout" | "stderr" | "system"
    text: str
    function: str | None = None
