"""The box's autoscaler side: routing, worker reports, rolling updates, and the supervisor's tick.

Functions over a ``ControlPlane`` (called with its lock held by the HTTP layer
and the supervisor thread).
- ``/route/`` (reference 3.1, 8.3): a 200 without ``url`` (``status`` and
  ``request_idx``) while no worker is ready; then a ready worker's URL with a
  real signature from the box's signer.
- ``/worker_status/`` (4.4): a report with ``error_msg`` marks the worker
  ``error``; one with ``loadtime > 0`` marks it ``idle`` with its
  ``max_perf`` as measured perf; before that it is ``model_loading``.
- ``/get_endpoint_workers/`` (8.2): ``{"workers": [...]}`` (or the bare list
  the SDK expects, a knob); ``{"error_msg"}`` for a bad key or endpoint.
- ``/update_workers/`` (8.6): each worker on an older version gets a
  replacement on the current one; the old worker serves until the
  replacement is ready, then takes no more calls (``destroying``).
"""
from __future__ import annotations

import hmac
import signal
import time
from typing import Any

from . import _box_rules as rules
from . import _box_workers as procs
from ._box_model import Answer, BoxRequest, BoxWorker

__all__ = ["route", "endpoint_workers", "worker_status", "delete_requests", "update_workers", "pubkey", "tick",
           "stop_all"]

_RETIRE_LIMIT = 60.0      # seconds an old worker may finish its requests after its replacement is ready
_FORGET_AFTER = 60.0      # stopped workers stay listed this long


def route(plane: Any, request: BoxRequest) -> Answer:
    body = request.json if isinstance(request.json, dict) else {}
    name = body.get("endpoint")
    deployment = next((d for d in plane.deployments.values() if d.endpoint_name == name), None)
    if deployment is None:
        return Answer(400, {"error_msg": f"endpoint {name!r} not found"})
    if not (_same(body.get("api_key"), deployment.endpoint_key) and _same(request.bearer, deployment.endpoint_key)):
        return Answer(401, {"error_msg": "invalid endpoint api key"})
    request_idx = body.get("request_idx") or next(plane.numbers)
    base = {"endpoint": name, "request_idx": request_idx, "cost": body.get("cost")}
    if deployment.deleted:
        return Answer(200, base | {"status": rules.waiting_status((), deleted=True)})
    workers = plane.workers_of(deployment)
    ready = [w for w in workers if w.status == "idle" and w.process is not None and w.process.poll() is None]
    if not ready:
        if not workers and deployment.version.uploaded:     # cold_workers=0: the first request recruits
            plane.recruit(deployment)
        return Answer(200, base | {"status": rules.waiting_status(w.status for w in plane.workers_of(deployment))})
    ready.sort(key=lambda w: w.id)
    worker = ready[next(plane.turns) % len(ready)]          # round robin over the ready workers
    return Answer(200, base | {"url": worker.url, "signature": plane.signer.sign(worker.url),
                               "reqnum": next(plane.numbers)})


def _same(offered: Any, expected: str) -> bool:
    return isinstance(offered, str) and hmac.compare_digest(offered.encode(), expected.encode())


def endpoint_workers(plane: Any, request: BoxRequest) -> Answer:
    body = request.json if isinstance(request.json, dict) else {}
    deployment = next((d for d in plane.deployments.values() if d.endpoint_id == body.get("id") and not d.deleted),
                      None)
    if not plane.is_user(request) or deployment is None:
        return Answer(200, {"error_msg": "authenticate_endpoint_apikey_by_id failed"})
    now = plane.clock()
    rows = [rules.worker_row(w, now) for w in plane.workers_of(deployment, include_stopped=True)
            if w.stopped_at is None or w.status != "stopped" or now - w.stopped_at < _FORGET_AFTER]
    return Answer(200, rows if plane.workers_shape == "list" else {"workers": rows})


def _reporter(plane: Any, body: Any, id_field: str) -> BoxWorker | None:
    if not isinstance(body, dict):
        return None
    try:
        worker = plane.workers.get(int(body.get(id_field)))
    except (TypeError, ValueError):
        return None
    return worker if worker is not None and _same(body.get("mtoken"), worker.mtoken) else None


def worker_status(plane: Any, request: BoxRequest) -> Answer:
    worker = _reporter(plane, request.json, "id")
    if worker is None:
        return Answer(401, {"error_msg": "unknown worker or bad mtoken"})
    report = request.json
    worker.report, worker.reported_at = report, plane.clock()
    if report.get("url") != worker.url:
        plane.note(f"worker {worker.id} reports url {report.get('url')!r}, expected {worker.url!r}")
    if worker.status in rules.TERMINAL:
        return Answer(200, {})
    if str(report.get("error_msg") or "").strip():
        if worker.status != "error":
            plane.note(f"worker {worker.id}: error: {report['error_msg']}")
        worker.status, worker.error = "error", str(report["error_msg"])
    elif float(report.get("loadtime") or 0) > 0:
        if worker.status != "idle":
            worker.status, worker.loaded_at = "idle", plane.clock()
            worker.measured_perf = float(report.get("max_perf") or 0.0)
            plane.note(f"worker {worker.id}: ready, measured perf {worker.measured_perf:g}")
            _take_over(plane, worker)
    else:
        worker.status = "model_loading"
    return Answer(200, {})


def _take_over(plane: Any, worker: BoxWorker) -> None:
    """A replacement is ready: the worker it replaces takes no more calls from now on."""
    old = plane.workers.get(worker.replaces) if worker.replaces else None
    if old is not None and old.status not in rules.TERMINAL:
        plane.retire(old)
        plane.note(f"worker {old.id}: replaced by worker {worker.id}; finishing its requests")


def delete_requests(plane: Any, request: BoxRequest) -> Answer:
    worker = _reporter(plane, request.json, "worker_id")
    if worker is None:
        return Answer(401, {"error_msg": "unknown worker or bad mtoken"})
    return Answer(200, {})


def update_workers(plane: Any, request: BoxRequest) -> Answer:
    body = request.json if isinstance(request.json, dict) else {}
    if not plane.is_user(request):
        return Answer(401, {"success": False, "error_msg": "invalid api key"})
    deployment = next((d for d in plane.deployments.values()
                       if d.workergroup_id == body.get("workergroup_id") and not d.deleted), None)
    if deployment is None:
        return Answer(404, {"success": False, "error_msg": "workergroup not found"})
    workers = plane.workers_of(deployment)
    if body.get("cancel_update"):
        pending = [w for w in workers if w.replaces is not None and w.status != "idle"]
        for worker in pending:
            plane.stop_worker(worker)
        return Answer(200, {"success": True, "workers_to_update": 0, "cancelled": True, "error_msg": None})
    stale = plane.replace_stale(deployment)
    if not workers:
        plane.scale(deployment)
    plane.note(f"update_workers {deployment.name}: {stale} worker(s) to v{deployment.current}")
    return Answer(200, {"success": True, "workers_to_update": stale, "cancelled": False, "error_msg": None})


def pubkey(plane: Any) -> Answer:
    return Answer(200, plane.signer.pubkey, "text/plain")


# -- the supervisor --------------------------------------------------------------------------------
def tick(plane: Any) -> None:
    """Notice exits, stop retired workers once idle, escalate to SIGKILL, expire ttls."""
    now = plane.clock()
    for worker in list(plane.workers.values()):
        process = worker.process
        if process is not None and process.poll() is not None and worker.status != "stopped":
            if worker.retiring_since is None and worker.status != "error":
                tail = _log_tail(worker)
                worker.error = f"the worker exited with code {process.returncode}: {tail}"
                plane.note(f"worker {worker.id}: exited ({process.returncode})")
            worker.status = "stopped" if worker.retiring_since is not None else "error"
            worker.stopped_at = worker.stopped_at or now
        elif worker.retiring_since is not None and worker.kill_at is None and _done(worker, now):
            plane.stop_worker(worker)
        elif worker.kill_at is not None and now >= worker.kill_at and process is not None:
            procs.signal_group(process, signal.SIGKILL)
        if process is None and worker.retiring_since is not None:
            worker.status, worker.stopped_at = "stopped", worker.stopped_at or now
    for deployment in plane.deployments.values():
        ttl = deployment.body.get("ttl")
        if not deployment.deleted and isinstance(ttl, (int, float)) and ttl > 0 and now - deployment.last_heartbeat > ttl:
            plane.delete_deployment(deployment, f"no heartbeat for {ttl:g}s (ttl)")


def _done(worker: BoxWorker, now: float) -> bool:
    report = worker.report or {}
    idle_since_retired = worker.reported_at > worker.retiring_since and not report.get("num_requests_working")
    return idle_since_retired or now - worker.retiring_since > _RETIRE_LIMIT or worker.status == "error"


def _log_tail(worker: BoxWorker, limit: int = 1500) -> str:
    try:
        text = (worker.folder / "worker.log").read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-limit:]


def stop_all(plane: Any, wait: float = 10.0) -> None:
    """SIGINT every worker's group, wait, SIGKILL what is left, reap: nothing outlives the box."""
    running = [w for w in plane.workers.values() if w.process is not None and w.process.poll() is None]
    for worker in running:
        procs.signal_group(worker.process)
    deadline = time.monotonic() + wait
    for worker in running:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except Exception:
            procs.signal_group(worker.process, signal.SIGKILL)
            worker.process.wait()
        worker.status, worker.stopped_at = "stopped", worker.stopped_at or plane.clock()
