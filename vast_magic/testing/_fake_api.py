"""The fake Vast's control plane: its webserver, presigned storage and autoscaler, as httpx answers.

Modelled on the reference (sections 1-4, 8); what each answer means is told
in ``fake.py``'s docstring. The PUT's action and what counts as an
image-level change are the box's rules (``_box_rules``), so the two fakes of
Vast cannot drift apart. Functions take the ``FakeVast`` as ``fake`` (its
knobs and deployments), as ``_box_autoscaler`` takes the box's plane.
"""
from __future__ import annotations

import base64
from typing import Any

import httpx

from . import _box_rules as rules
from ._fake_calls import process, serves_bundle, stop_processes
from ._fake_model import OLD_WORKER, PLACEHOLDER_PERF, STORAGE, WORKER, FakeDeployment, Recorded
from ._fake_worker import bundle_from_form, bundle_version

__all__ = ["web", "storage", "autoscaler", "endpoint_workers"]


def _user_ok(fake: Any, r: Recorded, query: bool = True) -> bool:
    bearer = r.headers.get("authorization") == f"Bearer {fake.api_key}"
    return bearer and (not query or r.query.get("api_key") == fake.api_key)


# -- webserver --------------------------------------------------------------------------------------------
def web(fake: Any, r: Recorded) -> httpx.Response:
    """The webserver's routes under /api/v0 (a heartbeat carries the key only as a bearer)."""
    heartbeat = r.path.endswith("/heartbeat/")
    if not _user_ok(fake, r, query=not heartbeat):
        return httpx.Response(401, json={"msg": "invalid api key"})
    parts = [p for p in r.path.split("/") if p][2:]   # after /api/v0
    if r.method == "PUT" and parts == ["deployments"]:
        return _put(fake, r.body)
    if r.method == "GET" and parts == ["deployments"]:
        return httpx.Response(200, json={"deployments": [_data(d) for d in fake.deployments.values()
                                                         if not d.deleted]})
    if r.method == "DELETE" and parts == ["deployments"]:
        return _delete_by_name(fake, r.body or {})
    if parts[:1] == ["deployment"] and len(parts) >= 2:
        return _deployment(fake, r, int(parts[1]), parts[2:])
    if r.method == "GET" and parts == ["workergroups"]:
        groups = [{"id": d.workergroup_id, "endpoint_id": d.endpoint_id} for d in fake.deployments.values()]
        return httpx.Response(200, json={"results": groups if fake.workergroups_visible else []})
    if r.method == "GET" and parts[:1] == ["endptjobs"]:
        return _endpoint(fake, int(parts[1]))
    if r.method == "POST" and parts == ["bundles"]:
        return httpx.Response(200, json={"offers": fake.offers})
    return httpx.Response(404, json={"msg": f"fake Vast: no route {r.method} {r.path}"})


def _put(fake: Any, body: dict) -> httpx.Response:
    missing = [k for k in ("name", "image", "file_hash", "file_size") if k not in (body or {})]
    if missing:
        return httpx.Response(422, json={"msg": f"missing fields: {', '.join(missing)}"})
    current = fake.live(body["name"], body.get("tag", "default"))
    if current is None:
        current, action = _create(fake, body), "created"
    else:
        action = rules.put_action(current.body, body)
        if rules.image_changed(current.body, body):
            current.polls, current.generation = 0, current.generation + 1   # Vast's own hard update
        current.body = dict(body)
    answer = {"success": True, "action": action, "deployment_id": current.id, "endpoint_id": current.endpoint_id}
    if fake.put_workergroup:
        answer["workergroup_id"] = current.workergroup_id
    if action in ("created", "soft_update"):
        answer |= {"upload_url": f"{STORAGE}/upload", "upload_fields": {"key": f"bundles/{current.id}.tar.gz",
                                                                        "policy": "p0l1cy", "x-amz-signature": "s1g"}}
        current.uploaded = False
        if action == "created":
            current.polls = 0
    return httpx.Response(200, json=answer)


def _create(fake: Any, body: dict) -> FakeDeployment:
    fake._next_id += 1
    d = FakeDeployment(fake._next_id, body["name"], body.get("tag", "default"), fake._next_id + 1000,
                       fake._next_id + 2000, dict(body))
    fake.deployments[d.id] = d
    return d


def _deployment(fake: Any, r: Recorded, deployment_id: int, rest: list[str]) -> httpx.Response:
    d = fake.deployments.get(deployment_id)
    if d is None or d.deleted:
        return httpx.Response(404, json={"msg": "deployment not found"})
    if r.method == "POST" and rest == ["heartbeat"]:
        d.heartbeats += 1
        return httpx.Response(200, json={"success": True})
    if r.method == "GET" and not rest:
        return httpx.Response(200, json={"deployment": _data(d)})
    if r.method == "DELETE" and not rest:
        d.deleted = True
        stop_processes(d)
        return httpx.Response(200, json={"success": True})
    return httpx.Response(404, json={"msg": "no such route"})


def _delete_by_name(fake: Any, body: dict) -> httpx.Response:
    hits = [d for d in fake.deployments.values() if d.name == body.get("name") and not d.deleted
            and ("tag" not in body or d.tag == body["tag"])]
    if not hits:
        return httpx.Response(404, json={"msg": "no deployment with that name"})
    for d in hits:
        d.deleted = True
        stop_processes(d)
    return httpx.Response(200, json={"success": True, "deleted": len(hits)})


def _data(d: FakeDeployment) -> dict:
    return {"id": d.id, "name": d.name, "tag": d.tag, "endpoint_id": d.endpoint_id, "endpoint_state": "active",
            "worker_count": 1, "file_hash": d.body.get("file_hash"), "ttl": d.body.get("ttl")}


def _endpoint(fake: Any, endpoint_id: int) -> httpx.Response:
    if not any(d.endpoint_id == endpoint_id and not d.deleted for d in fake.deployments.values()):
        return httpx.Response(404, json={"msg": "endpoint not found"})
    return httpx.Response(200, json={"result": {"id": endpoint_id, "endpoint_name": f"ep-{endpoint_id}",
                                                "api_key": fake.endpoint_key(endpoint_id), "user_id": 7}})


# -- storage and autoscaler -------------------------------------------------------------------------------
def storage(fake: Any, r: Recorded) -> httpx.Response:
    """A presigned POST: recorded, and the bundle it carries kept for the deployment whose key it names."""
    if "authorization" in r.headers:
        return httpx.Response(400, text="presigned POST must not carry Authorization")
    fake.uploads.append({"content_type": r.headers.get("content-type", ""), "raw": r.raw})
    for d in fake.deployments.values():
        if not d.uploaded and f"bundles/{d.id}.tar.gz".encode() in r.raw:
            d.uploaded = True
            form = bundle_from_form(r.headers.get("content-type", ""), r.raw)
            d.versions.append(bundle_version(form[1]) if form else None)
            if form is not None:
                d.bundles.append((form[1], str(d.body.get("env") or "")))
    return httpx.Response(204)


def autoscaler(fake: Any, r: Recorded) -> httpx.Response:
    """``/update_workers/`` (restarts the workers, maybe a rolling update) and ``/route/``."""
    body = r.body or {}
    if r.path == "/update_workers/":
        if body.get("api_key") != fake.api_key or not _user_ok(fake, r):
            return httpx.Response(401, text="bad key")
        fake.updates.append(body)
        for d in fake.deployments.values():
            if d.workergroup_id == body.get("workergroup_id"):
                d.polls, d.generation = 0, d.generation + 1     # its workers restart on the new version
                d.old_routes = fake.old_worker_routes
        return httpx.Response(200, json={"success": True, "workers_to_update": 1, "cancelled": False})
    if r.path == "/route/":
        return _route(fake, r, body)
    return httpx.Response(404, text="no such autoscaler route")


async def endpoint_workers(fake: Any, body: dict) -> httpx.Response:
    """``/get_endpoint_workers/``: a worker loading for ``ready_after`` polls, then ready once its process
    started (awaited: the poll that finds it ready waits for the start-up)."""
    d = next((d for d in fake.deployments.values() if d.endpoint_id == body.get("id") and not d.deleted), None)
    if body.get("api_key") != fake.api_key or d is None:
        return httpx.Response(200, json={"error_msg": "authenticate_endpoint_apikey_by_id failed"})
    d.polls += 1
    if fake.workers_shape in ("none", "error_msg"):
        return httpx.Response(200, json=[] if fake.workers_shape == "none" else
                              {"error_msg": f"no workers are running for endpoint {d.endpoint_id}"})
    error = fake.worker_error
    loaded = d.polls > fake.ready_after and error is None
    if loaded and serves_bundle(fake, d):                      # ready once its process has started
        error = (await process(fake, d, WORKER)).error
        loaded = error is None
    # the SDK's per-worker fields (reference 8.2); perf is the DLPerf placeholder until measured
    status = "error" if error else ((fake.worker_status or "idle") if loaded else "loading")
    worker = {"id": d.id * 10, "status": status,
              "cur_load": 0.0, "new_load": 0.0, "cur_load_rolling_avg": 0.0, "cur_perf": 0.0,
              "perf": fake.worker_perf if loaded else PLACEHOLDER_PERF,
              "measured_perf": fake.worker_perf if loaded else 0.0, "dlperf": PLACEHOLDER_PERF,
              "reliability": 0.992, "reqs_working": 0, "disk_usage": 0.0,
              "loaded_at": 1700000000.0 + d.generation if loaded else 0.0, "started_at": 1699999000.0,
              "gpu_name": "RTX 4090", "error_msg": error or ""}
    return httpx.Response(200, json=[worker] if fake.workers_shape == "list" else {"workers": [worker]})


def _route(fake: Any, r: Recorded, body: dict) -> httpx.Response:
    endpoint_id = int(str(body.get("endpoint", "ep-0")).removeprefix("ep-") or 0)
    key = fake.endpoint_key(endpoint_id)
    if body.get("api_key") != key or r.headers.get("authorization") != f"Bearer {key}":
        return httpx.Response(401, text="bad endpoint key")
    d = next((d for d in fake.deployments.values() if d.endpoint_id == endpoint_id and not d.deleted), None)
    if fake.route_waits > 0 or d is None:
        fake.route_waits -= 0 if d is None else 1
        return httpx.Response(200, json=_waiting(body, "endpoint stopped" if d is None else fake.route_status))
    url = WORKER
    d.routes += 1
    if d.old_routes > 0 and d.routes % 2:
        d.old_routes, url = d.old_routes - 1, OLD_WORKER
    return httpx.Response(200, json={"url": url, "request_idx": body.get("request_idx") or 42, "reqnum": 7,
                                     "cost": body.get("cost"), "endpoint": body.get("endpoint"),
                                     "signature": base64.b64encode(b"sig").decode()})


def _waiting(body: dict, status: str) -> dict:
    """A ``/route/`` answer while no worker is ready (reference 8.3): the fields of a routed answer with
    no ``url``, and ``status`` saying why."""
    return {"endpoint": body.get("endpoint"), "request_idx": 41, "cost": body.get("cost"), "reqnum": 0,
            "signature": "", "status": status}
