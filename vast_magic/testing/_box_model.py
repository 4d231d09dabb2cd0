"""The box's records: deployments, their bundle versions, and the workers it recruited."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Answer", "BoxRequest", "Version", "BoxDeployment", "BoxWorker"]


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: a dict/list body is JSON, ``bytes`` go as they are, ``str`` as text."""

    status: int
    body: Any = None
    content_type: str | None = None


@dataclass(frozen=True)
class BoxRequest:
    """One request the box received (the box records every one, for tests to read)."""

    role: str                 # webserver | autoscaler | storage
    method: str
    path: str
    query: dict
    headers: dict             # lower-case names
    raw: bytes
    json: Any = None
    answer: Answer | None = None    # what the box answered (set when it is recorded)

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:] if value.startswith("Bearer ") else None


@dataclass
class Version:
    """One bundle the deployment was registered with; workers run exactly one version."""

    id: int
    file_hash: str
    file_size: int
    env: str
    blob_key: str
    upload_fields: dict
    uploaded: bool = False
    problem: str | None = None        # why the box will not run it (checked when the upload arrives)
    hard_update: bool = False         # an image-level change: workers are replaced without /update_workers/


@dataclass
class BoxDeployment:
    id: int
    name: str
    tag: str
    endpoint_id: int
    endpoint_name: str
    endpoint_key: str
    workergroup_id: int
    body: dict
    created_at: float
    last_heartbeat: float
    versions: dict[int, Version] = field(default_factory=dict)
    current: int = 0
    heartbeats: int = 0
    deleted: bool = False

    @property
    def version(self) -> Version:
        return self.versions[self.current]


@dataclass
class BoxWorker:
    id: int
    deployment_id: int
    version_id: int
    container_key: str
    mtoken: str
    port: int
    folder: Path
    started_at: float
    status: str = "creating"
    loaded_at: float = 0.0
    measured_perf: float = 0.0
    report: dict | None = None
    reported_at: float = 0.0
    error: str | None = None
    replaces: int | None = None       # the worker this one takes over from, once it is ready
    retiring_since: float | None = None
    stopped_at: float | None = None
    kill_at: float | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
