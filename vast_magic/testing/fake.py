"""Test your code against a fake Vast.ai, offline: ``FakeVast().transport()`` is an ``httpx.MockTransport``.

``FakeVast`` answers like Vast's webserver, autoscaler, presigned storage and
workers, so ``backend="vast"`` runs end to end with no network and no key of
yours: pass its transport to the Deployment (transports are passed in, never
patched). Its workers run the bundle the client uploaded, each in a process, as
a Vast worker does (``_fake_serve.py``: the shipped ``deployment.py`` and
runtime, nothing of the test's own objects); use it as a context manager, or
call ``close()``, to stop those processes::

    from vast_magic import Deployment
    from vast_magic.testing import FakeVast

    with FakeVast(api_key="test-key", ready_after=0) as fake:
        app = Deployment(name="demo", backend="vast", api_key="test-key", transport=fake.transport())

        @app.remote(benchmark_dataset=[{"x": 2}])
        async def square(x):
            return x * x

        app.ensure_ready()                   # PUT, upload, readiness polls: all answered by the fake
        assert square.call(3) == 9           # run by the uploaded bundle, in the fake's worker process
        assert fake.sent("PUT", "/api/v0/deployments/")[0].body["name"] == "demo"

Modelled on the reference (sections 1-4): deployments keyed by (name, tag)
answer ``created`` / ``exists`` / ``autoscale_update`` / ``soft_update`` from
what changed (an image-level change answers ``soft_update`` and restarts the
workers on the PUT itself: Vast's hard update, reference 8.1); endpoints
carry their own key; workers come up after a scripted number of
``get_endpoint_workers`` polls; ``/route/`` makes callers wait a scripted
number of times (8.3: 200 without ``url``, with ``status``; "endpoint
stopped" once the deployment is deleted). A worker process gets the env
string's variables and the platform's (its URL), so its shim opens our signed
envelopes itself; one that fails to start reports ``Lifecycle startup failed:
...`` as ``error_msg``. A rolling update is modelled by ``old_worker_routes``:
after each ``/update_workers/``, that many ``/route/`` answers (every other
one) send the caller to ``OLD_WORKER``, a process on the previous bundle.
``functions`` (and ``old_functions`` on ``OLD_WORKER``) script answers a real
worker never gives (hostile pickles, say): a name found there runs that plain
function behind the shim contract instead (our envelope opened here, or plain
JSON); ``run_bundles=False`` leaves only those. Knobs: ``fail(method, path,
*outcomes)`` queues statuses or exceptions for matching requests;
``workergroups_visible``, ``put_workergroup``, ``ready_after``,
``worker_error``, ``worker_status``, ``route_waits``, ``route_status``,
``workers_shape``, ``old_worker_routes``. Every request is recorded.

Here: ``FakeVast`` (its knobs, what it recorded, and dispatch by host). Its
data is in ``_fake_model``, the webserver, storage and autoscaler in
``_fake_api``, the workers in ``_fake_calls`` (with the processes of
``_fake_worker``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import httpx

from . import _fake_api as api
from ._fake_calls import answer_call, stop_all
from ._fake_model import AUTOSCALER, OLD_WORKER, STORAGE, WEB, WORKER, FakeDeployment, Recorded, record

__all__ = ["FakeVast", "FakeDeployment", "Recorded", "WEB", "AUTOSCALER", "STORAGE", "WORKER", "OLD_WORKER"]


@dataclass
class FakeVast:
    """Vast's API, autoscaler, storage and workers behind one ``httpx.MockTransport`` (see the module)."""

    api_key: str = "user-key-0123456789"
    functions: dict[str, Callable] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)   # the worker's shipped classes, by name
    ready_after: int = 1            # get_endpoint_workers polls that show a starting worker first
    worker_error: str | None = None
    worker_perf: float = 1234.5
    workers_shape: str = "list"     # get_endpoint_workers: "list" (the SDK's) or "dict" ({"workers": [...]}, the spec);
                                    # "none" ([]) or "error_msg" (what Vast says before any worker exists): none ever comes
    worker_status: str | None = None   # what a loaded worker reports instead of "idle" (e.g. "stopped", "unavail")
    run_bundles: bool = True        # workers serve the uploaded bundle (False: only ``functions`` answer)
    start_timeout: float = 120.0    # how long a worker may take to start (generous: loaded CI machines)
    old_worker_routes: int = 0      # per /update_workers/: /route/ answers (every other one) to the old worker
    old_functions: dict[str, Callable] = field(default_factory=dict)   # what OLD_WORKER runs for plain calls
    stale_answers: int = 0          # enveloped calls an old worker answered "stale version" (nothing ran)
    route_waits: int = 0
    route_status: str = "waiting for workers: 1 loading"   # the /route/ status while callers wait
    workergroups_visible: bool = True
    put_workergroup: bool = True
    offers: list = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    deployments: dict[int, FakeDeployment] = field(default_factory=dict)
    uploads: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    _failures: list[tuple[str, str, list]] = field(default_factory=list)
    _next_id: int = 100

    def __post_init__(self) -> None:
        # a fake nobody closed still stops its worker processes when it is collected, or at exit
        weakref.finalize(self, stop_all, self.deployments)

    # -- knobs ---------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def close(self) -> None:
        """Stop every worker process (by PID) and remove their folders."""
        stop_all(self.deployments)

    def __enter__(self) -> "FakeVast":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fail(self, method: str, path: str, *outcomes: int | Exception) -> None:
        """The next matching requests get these statuses (or raise these exceptions), in order."""
        self._failures.append((method.upper(), path, list(outcomes)))

    def endpoint_key(self, endpoint_id: int) -> str:
        return f"endpoint-key-{endpoint_id}"

    def sent(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)]

    def live(self, name: str, tag: str) -> FakeDeployment | None:
        return next((d for d in self.deployments.values() if (d.name, d.tag) == (name, tag) and not d.deleted), None)

    # -- dispatch ------------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Record the request, answer an injected failure if one matches, else route it by host."""
        recorded = record(request)
        self.requests.append(recorded)
        for index, (method, path, outcomes) in enumerate(self._failures):
            if method == recorded.method and path in recorded.path and outcomes:
                outcome = outcomes.pop(0)
                if not outcomes:
                    self._failures.pop(index)
                if isinstance(outcome, Exception):
                    raise outcome
                return httpx.Response(outcome, json={"error": f"injected HTTP {outcome}", "msg": "injected"})
        host = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if host in (WORKER, OLD_WORKER):
            return await answer_call(self, recorded, host)
        if host == AUTOSCALER and recorded.path == "/get_endpoint_workers/":
            return await api.endpoint_workers(self, recorded.body or {})
        handler = {WEB: api.web, AUTOSCALER: api.autoscaler, STORAGE: api.storage}.get(host)
        if handler is None:
            return httpx.Response(502, text=f"fake Vast: unknown host {host}")
        return handler(self, recorded)
