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
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import io
import json
import os
import shlex
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import httpx

from ..backends.vast import envelope
from ..runtime import sealed, streaming, wire
from ..runtime.executor import CallState
from ._box_rules import parse_env_string
from ._fake_worker import BundleWorker, WorkerGone, bundle_from_form, bundle_version

__all__ = ["FakeVast", "FakeDeployment", "Recorded", "WEB", "AUTOSCALER", "STORAGE", "WORKER", "OLD_WORKER"]

WEB = "https://console.vast.ai"
AUTOSCALER = "https://run.vast.ai"
STORAGE = "https://s3.fake-vast.test"
WORKER = "https://worker-1.fake-vast.test:4000"
OLD_WORKER = "https://worker-0.fake-vast.test:4000"
IMAGE_FIELDS = ("image", "env", "search_params", "storage", "docker_login_user", "docker_login_pass",
                "docker_login_repo")
SCALING_FIELDS = ("cold_workers", "max_workers", "min_load", "min_cold_load", "target_util", "cold_mult",
                  "max_queue_time", "target_queue_time", "inactivity_timeout", "autoscaler_instance", "ttl")
AUTH_FIELDS = ("cost", "endpoint", "reqnum", "request_idx", "signature", "url")
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


@dataclass
class FakeVast:
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
        weakref.finalize(self, _stop_all, self.deployments)

    # -- knobs ---------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def close(self) -> None:
        """Stop every worker process (by PID) and remove their folders."""
        _stop_all(self.deployments)

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
        recorded = self._record(request)
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
            return await self._worker(recorded, host)
        if host == AUTOSCALER and recorded.path == "/get_endpoint_workers/":
            return await self._workers(recorded.body or {})
        handler = {WEB: self._web, AUTOSCALER: self._autoscaler, STORAGE: self._storage}.get(host)
        if handler is None:
            return httpx.Response(502, text=f"fake Vast: unknown host {host}")
        return handler(recorded)

    def _record(self, request: httpx.Request) -> Recorded:
        raw = request.read()
        try:
            body = json.loads(raw) if raw and "json" in request.headers.get("content-type", "") else None
        except ValueError:
            body = None
        split = urlsplit(str(request.url))
        recorded = Recorded(request.method, str(request.url), split.path,
                            {k: v[0] for k, v in parse_qs(split.query).items()}, dict(request.headers), body, raw)
        self.requests.append(recorded)
        return recorded

    def _user_ok(self, r: Recorded, query: bool = True) -> bool:
        bearer = r.headers.get("authorization") == f"Bearer {self.api_key}"
        return bearer and (not query or r.query.get("api_key") == self.api_key)

    # -- webserver -----------------------------------------------------------------------------
    def _web(self, r: Recorded) -> httpx.Response:
        heartbeat = r.path.endswith("/heartbeat/")
        if not self._user_ok(r, query=not heartbeat):
            return httpx.Response(401, json={"msg": "invalid api key"})
        parts = [p for p in r.path.split("/") if p][2:]   # after /api/v0
        if r.method == "PUT" and parts == ["deployments"]:
            return self._put(r.body)
        if r.method == "GET" and parts == ["deployments"]:
            return httpx.Response(200, json={"deployments": [self._data(d) for d in self.deployments.values()
                                                             if not d.deleted]})
        if r.method == "DELETE" and parts == ["deployments"]:
            return self._delete_by_name(r.body or {})
        if parts[:1] == ["deployment"] and len(parts) >= 2:
            return self._deployment(r, int(parts[1]), parts[2:])
        if r.method == "GET" and parts == ["workergroups"]:
            groups = [{"id": d.workergroup_id, "endpoint_id": d.endpoint_id} for d in self.deployments.values()]
            return httpx.Response(200, json={"results": groups if self.workergroups_visible else []})
        if r.method == "GET" and parts[:1] == ["endptjobs"]:
            return self._endpoint(int(parts[1]))
        if r.method == "POST" and parts == ["bundles"]:
            return httpx.Response(200, json={"offers": self.offers})
        return httpx.Response(404, json={"msg": f"fake Vast: no route {r.method} {r.path}"})

    def _put(self, body: dict) -> httpx.Response:
        missing = [k for k in ("name", "image", "file_hash", "file_size") if k not in (body or {})]
        if missing:
            return httpx.Response(422, json={"msg": f"missing fields: {', '.join(missing)}"})
        current = self.live(body["name"], body.get("tag", "default"))
        if current is None:
            current, action = self._create(body), "created"
        else:
            action = self._action(current.body, body)
            if any(current.body.get(k) != body.get(k) for k in IMAGE_FIELDS):
                current.polls, current.generation = 0, current.generation + 1   # Vast's own hard update
            current.body = dict(body)
        answer = {"success": True, "action": action, "deployment_id": current.id, "endpoint_id": current.endpoint_id}
        if self.put_workergroup:
            answer["workergroup_id"] = current.workergroup_id
        if action in ("created", "soft_update"):
            answer |= {"upload_url": f"{STORAGE}/upload", "upload_fields": {"key": f"bundles/{current.id}.tar.gz",
                                                                            "policy": "p0l1cy", "x-amz-signature": "s1g"}}
            current.uploaded = False
            if action == "created":
                current.polls = 0
        return httpx.Response(200, json=answer)

    def _create(self, body: dict) -> FakeDeployment:
        self._next_id += 1
        d = FakeDeployment(self._next_id, body["name"], body.get("tag", "default"), self._next_id + 1000,
                           self._next_id + 2000, dict(body))
        self.deployments[d.id] = d
        return d

    @staticmethod
    def _action(old: dict, new: dict) -> str:
        if old.get("file_hash") != new.get("file_hash") or any(old.get(k) != new.get(k) for k in IMAGE_FIELDS):
            return "soft_update"
        if any(old.get(k) != new.get(k) for k in SCALING_FIELDS):
            return "autoscale_update"
        return "exists"

    def _deployment(self, r: Recorded, deployment_id: int, rest: list[str]) -> httpx.Response:
        d = self.deployments.get(deployment_id)
        if d is None or d.deleted:
            return httpx.Response(404, json={"msg": "deployment not found"})
        if r.method == "POST" and rest == ["heartbeat"]:
            d.heartbeats += 1
            return httpx.Response(200, json={"success": True})
        if r.method == "GET" and not rest:
            return httpx.Response(200, json={"deployment": self._data(d)})
        if r.method == "DELETE" and not rest:
            d.deleted = True
            self._stop_processes(d)
            return httpx.Response(200, json={"success": True})
        return httpx.Response(404, json={"msg": "no such route"})

    def _delete_by_name(self, body: dict) -> httpx.Response:
        hits = [d for d in self.deployments.values() if d.name == body.get("name") and not d.deleted
                and ("tag" not in body or d.tag == body["tag"])]
        if not hits:
            return httpx.Response(404, json={"msg": "no deployment with that name"})
        for d in hits:
            d.deleted = True
            self._stop_processes(d)
        return httpx.Response(200, json={"success": True, "deleted": len(hits)})

    def _data(self, d: FakeDeployment) -> dict:
        return {"id": d.id, "name": d.name, "tag": d.tag, "endpoint_id": d.endpoint_id, "endpoint_state": "active",
                "worker_count": 1, "file_hash": d.body.get("file_hash"), "ttl": d.body.get("ttl")}

    def _endpoint(self, endpoint_id: int) -> httpx.Response:
        if not any(d.endpoint_id == endpoint_id and not d.deleted for d in self.deployments.values()):
            return httpx.Response(404, json={"msg": "endpoint not found"})
        return httpx.Response(200, json={"result": {"id": endpoint_id, "endpoint_name": f"ep-{endpoint_id}",
                                                    "api_key": self.endpoint_key(endpoint_id), "user_id": 7}})

    # -- storage and autoscaler ----------------------------------------------------------------
    def _storage(self, r: Recorded) -> httpx.Response:
        if "authorization" in r.headers:
            return httpx.Response(400, text="presigned POST must not carry Authorization")
        self.uploads.append({"content_type": r.headers.get("content-type", ""), "raw": r.raw})
        for d in self.deployments.values():
            if not d.uploaded and f"bundles/{d.id}.tar.gz".encode() in r.raw:
                d.uploaded = True
                form = bundle_from_form(r.headers.get("content-type", ""), r.raw)
                d.versions.append(bundle_version(form[1]) if form else None)
                if form is not None:
                    d.bundles.append((form[1], str(d.body.get("env") or "")))
        return httpx.Response(204)

    def _autoscaler(self, r: Recorded) -> httpx.Response:
        body = r.body or {}
        if r.path == "/update_workers/":
            if body.get("api_key") != self.api_key or not self._user_ok(r):
                return httpx.Response(401, text="bad key")
            self.updates.append(body)
            for d in self.deployments.values():
                if d.workergroup_id == body.get("workergroup_id"):
                    d.polls, d.generation = 0, d.generation + 1     # its workers restart on the new version
                    d.old_routes = self.old_worker_routes
            return httpx.Response(200, json={"success": True, "workers_to_update": 1, "cancelled": False})
        if r.path == "/route/":
            return self._route(r, body)
        return httpx.Response(404, text="no such autoscaler route")

    async def _workers(self, body: dict) -> httpx.Response:
        d = next((d for d in self.deployments.values() if d.endpoint_id == body.get("id") and not d.deleted), None)
        if body.get("api_key") != self.api_key or d is None:
            return httpx.Response(200, json={"error_msg": "authenticate_endpoint_apikey_by_id failed"})
        d.polls += 1
        if self.workers_shape in ("none", "error_msg"):
            return httpx.Response(200, json=[] if self.workers_shape == "none" else
                                  {"error_msg": f"no workers are running for endpoint {d.endpoint_id}"})
        error = self.worker_error
        loaded = d.polls > self.ready_after and error is None
        if loaded and self._serves_bundle(d):                      # ready once its process has started
            error = (await self._process(d, WORKER)).error
            loaded = error is None
        # the SDK's per-worker fields (reference 8.2); perf is the DLPerf placeholder until measured
        status = "error" if error else ((self.worker_status or "idle") if loaded else "loading")
        worker = {"id": d.id * 10, "status": status,
                  "cur_load": 0.0, "new_load": 0.0, "cur_load_rolling_avg": 0.0, "cur_perf": 0.0,
                  "perf": self.worker_perf if loaded else PLACEHOLDER_PERF,
                  "measured_perf": self.worker_perf if loaded else 0.0, "dlperf": PLACEHOLDER_PERF,
                  "reliability": 0.992, "reqs_working": 0, "disk_usage": 0.0,
                  "loaded_at": 1700000000.0 + d.generation if loaded else 0.0, "started_at": 1699999000.0,
                  "gpu_name": "RTX 4090", "error_msg": error or ""}
        return httpx.Response(200, json=[worker] if self.workers_shape == "list" else {"workers": [worker]})

    def _route(self, r: Recorded, body: dict) -> httpx.Response:
        endpoint_id = int(str(body.get("endpoint", "ep-0")).removeprefix("ep-") or 0)
        key = self.endpoint_key(endpoint_id)
        if body.get("api_key") != key or r.headers.get("authorization") != f"Bearer {key}":
            return httpx.Response(401, text="bad endpoint key")
        d = next((d for d in self.deployments.values() if d.endpoint_id == endpoint_id and not d.deleted), None)
        if self.route_waits > 0 or d is None:
            self.route_waits -= 0 if d is None else 1
            return httpx.Response(200, json=self._waiting(body, "endpoint stopped" if d is None else self.route_status))
        url = WORKER
        d.routes += 1
        if d.old_routes > 0 and d.routes % 2:
            d.old_routes, url = d.old_routes - 1, OLD_WORKER
        return httpx.Response(200, json={"url": url, "request_idx": body.get("request_idx") or 42, "reqnum": 7,
                                         "cost": body.get("cost"), "endpoint": body.get("endpoint"),
                                         "signature": base64.b64encode(b"sig").decode()})

    @staticmethod
    def _waiting(body: dict, status: str) -> dict:
        """A ``/route/`` answer while no worker is ready (reference 8.3): the fields of a routed answer with
        no ``url``, and ``status`` saying why."""
        return {"endpoint": body.get("endpoint"), "request_idx": 41, "cost": body.get("cost"), "reqnum": 0,
                "signature": "", "status": status}

    # -- the worker (the shim contract of the generated deployment.py) -------------------------
    async def _worker(self, r: Recorded, url: str = WORKER) -> httpx.Response:
        body = r.body if isinstance(r.body, dict) else None
        if body is None:
            return httpx.Response(422, json={"error": "invalid JSON"})
        auth = body.get("auth_data")
        if not isinstance(auth, dict) or any(k not in auth for k in AUTH_FIELDS):
            return httpx.Response(422, json={"auth_data": "field missing"})
        if not isinstance(body.get("payload"), dict):
            return httpx.Response(422, json={"payload": {"data": "payload must be a dictionary"}})
        name = r.path.removeprefix("/remote/")
        functions = self.old_functions if url == OLD_WORKER else self.functions
        kwargs = dict(body["payload"].get("kwargs") or {})
        d = self._by_endpoint_name(auth.get("endpoint"))
        if name not in self.functions:
            return await self._bundle_call(d, url, name, kwargs)
        if envelope.PARAM in kwargs:
            try:
                return httpx.Response(200, json={"result": {"ok": await self._run_enveloped(
                    d, url, name, kwargs[envelope.PARAM], functions)}})
            except sealed.Refused as exc:
                return httpx.Response(200, json={"result": {"err": _official_err(exc)}})
        try:
            return httpx.Response(200, json={"result": {"ok": await _maybe_await(functions[name](**kwargs))}})
        except Exception as exc:  # the official wire, with the args our shim puts in __dict__ (vast_entry)
            return httpx.Response(200, json={"result": {"err": _official_err(exc)}})

    def _by_endpoint_name(self, endpoint: Any) -> FakeDeployment | None:
        return next((d for d in self.deployments.values() if f"ep-{d.endpoint_id}" == endpoint and not d.deleted), None)

    async def _run_enveloped(self, d: FakeDeployment | None, url: str, name: str, text: str,
                             functions: dict) -> str:
        """What the shim does: open the sealed envelope (Refused: nothing unpickled), check the version, run."""
        key = d.envelope_key() if d is not None else None
        opener = d.openers.setdefault(url, sealed.Opener(key or sealed.new_key(), url=url)) if d else None
        if opener is None:
            raise sealed.Refused("no deployment for this endpoint")
        header, payload = opener.open(text, name)
        version = d.version_at(url)
        if header.version is not None and version is not None and header.version != version:
            self.stale_answers += 1
            return sealed.STALE + version
        request = envelope.decode(base64.b64encode(payload).decode("ascii"), self.classes)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                function = functions[name]
                if request.get("collect"):        # a generator: its items in one answer, as the shim does
                    value = await streaming.collect(function, request["args"], request["kwargs"], CallState())
                else:
                    value = await _maybe_await(function(*request["args"], **request["kwargs"]))
            message = {"ok": True, "value": value}
        except Exception as exc:
            message = {"ok": False, "error": wire.error_envelope(exc)}
        message["output"] = [(s, t) for s, t in (("stdout", out.getvalue()), ("stderr", err.getvalue())) if t]
        return envelope.answer(message, {cls: name for name, cls in self.classes.items()})


    # -- workers that run the uploaded bundle ---------------------------------------------------
    def _serves_bundle(self, d: FakeDeployment | None) -> bool:
        return self.run_bundles and d is not None and bool(d.bundles)

    async def _process(self, d: FakeDeployment, url: str) -> BundleWorker:
        """The process behind ``url`` once its start-up ended: the newest bundle (with the deployment's env
        now and its restarts), or on ``OLD_WORKER`` the one before. A process on anything else is replaced."""
        if url == OLD_WORKER and len(d.bundles) > 1:
            (tarball, env), runs = d.bundles[-2], ("old", len(d.bundles) - 2)
        else:
            url, (tarball, env) = WORKER, d.bundles[-1]
            env = str(d.body.get("env") or env)
            runs = ("new", len(d.bundles) - 1, d.generation, env)
        current = d.processes.get(url)
        if current is None or current[0] != runs:
            if current is not None:
                current[1].stop()
            variables, _ = parse_env_string(env)
            host, port = url.removeprefix("https://").rsplit(":", 1)
            platform = {"WORKER_PORT": "3000", "VAST_TCP_PORT_3000": port, "PUBLIC_IPADDR": host, "USE_SSL": "true"}
            d.processes[url] = current = (runs, BundleWorker(tarball, {**os.environ, **variables, **platform}))
        worker = current[1]
        if not await asyncio.to_thread(worker.started, self.start_timeout):
            raise TimeoutError(f"fake Vast: a worker did not start in {self.start_timeout} s:\n{worker.logs()}")
        return worker

    @staticmethod
    def _stop_processes(d: FakeDeployment) -> None:
        for _, worker in d.processes.values():
            worker.stop()
        d.processes.clear()

    async def _bundle_call(self, d: FakeDeployment | None, url: str, name: str, kwargs: dict) -> httpx.Response:
        """A call served by a worker process: the shim in the shipped ``deployment.py`` answers it."""
        if not self._serves_bundle(d):
            return httpx.Response(404, text="404: Not Found")
        worker = await self._process(d, url)
        if worker.error:
            return httpx.Response(503, text=f"fake Vast: the worker failed to start: {worker.error}")
        try:
            answer = await worker.call(name, kwargs)
        except WorkerGone as exc:
            return httpx.Response(502, text=f"fake Vast: {exc}")
        if "status" in answer:
            return httpx.Response(answer["status"], text="404: Not Found")
        if isinstance(answer.get("ok"), str) and answer["ok"].startswith(sealed.STALE):
            self.stale_answers += 1
        return httpx.Response(200, json={"result": answer})


def _stop_all(deployments: dict) -> None:
    for d in deployments.values():
        FakeVast._stop_processes(d)


def _official_err(exc: BaseException) -> dict:
    """An exception in the stock JSON wire: its ``__dict__`` travels (reference 3.3), and our shim puts the
    exception's args there (vast_entry), so the message reaches official clients too."""
    contents = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float))}
    contents["args"] = {"type": "tuple", "contents": [a if type(a) in (int, str, float) else repr(a) for a in exc.args]}
    return {"type": "obj", "class": type(exc).__qualname__,
            "module": {"type": "absolute", "path": type(exc).__module__.split(".")}, "contents": contents}


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
