"""The fake Vast's data: its hosts, a recorded request, and one deployment as the fake keeps it.

Shared by the fake's control plane (``_fake_api``) and its workers
(``_fake_calls``); it holds state and small reads of it, no routing.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ..runtime import sealed

__all__ = ["WEB", "AUTOSCALER", "STORAGE", "WORKER", "OLD_WORKER", "PLACEHOLDER_PERF", "Recorded", "record",
           "FakeDeployment"]

WEB = "https://console.vast.ai"
AUTOSCALER = "https://run.vast.ai"
STORAGE = "https://s3.fake-vast.test"
WORKER = "https://worker-1.fake-vast.test:4000"
OLD_WORKER = "https://worker-0.fake-vast.test:4000"
PLACEHOLDER_PERF = 8.5       # what Vast reports as perf before a worker measured itself (a DLPerf score)


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    query: dict
    headers: dict
    body: Any
    raw: bytes


def record(request: httpx.Request) -> Recorded:
    """The request as tests read it back: its JSON body parsed (None when it has none), its query flat."""
    raw = request.read()
    try:
        body = json.loads(raw) if raw and "json" in request.headers.get("content-type", "") else None
    except ValueError:
        body = None
    split = urlsplit(str(request.url))
    return Recorded(request.method, str(request.url), split.path,
                    {k: v[0] for k, v in parse_qs(split.query).items()}, dict(request.headers), body, raw)


@dataclass
class FakeDeployment:
    id: int
    name: str
    tag: str
    endpoint_id: int
    workergroup_id: int
    body: dict
    uploaded: bool = False
    heartbeats: int = 0
    polls: int = 0
    generation: int = 0        # bumped by /update_workers/: a reloaded worker reports another loaded_at
    deleted: bool = False
    versions: list = field(default_factory=list)   # _VM_VERSION of each uploaded bundle, in order
    old_routes: int = 0        # /route/ answers still to send to OLD_WORKER (a rolling update in progress)
    routes: int = 0
    openers: dict = field(default_factory=dict)    # worker URL -> its sealed.Opener (each worker its own nonces)
    bundles: list = field(default_factory=list)    # (tarball, env string) of each upload, in order
    processes: dict = field(default_factory=dict)  # worker URL -> (what it runs, its BundleWorker)

    def envelope_key(self) -> bytes | None:
        """The key the deployment's ``env`` string gives its workers (None when it has none)."""
        for word in shlex.split(str(self.body.get("env") or "")):
            name, _, value = word.partition("=")
            if name == sealed.KEY_ENV:
                return bytes.fromhex(value)
        return None

    def version_at(self, url: str) -> str | None:
        """What the worker at ``url`` runs: the newest upload, or the one before on ``OLD_WORKER``."""
        index = -2 if url == OLD_WORKER else -1
        return self.versions[index] if len(self.versions) >= -index else None
