"""Executing a deploy plan in the daemon: tiers 0-4 with the previous version kept serving.

Tiers 0 and 1 touch no process (1 only changes the autoscaling the
reconciler applies). Tiers 2, 3 and 4 (and any first deploy) start
*candidate* workers of the new version next to the old ones. Only when the
first candidate is ready is the new version committed to the store; then each
candidate that becomes ready takes one old worker's slot (the old one is
drained: unrouted, in-flight calls finish, then stopped). If a candidate
fails before any is ready, all candidates are stopped and the old workers
were never touched: the caller gets a DeployError with the worker's traceback.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Callable

from ...errors import DeployError
from .bundles import extracted_bundle
from .engine import Engine
from .engine_model import Deployment, Version, Worker
from .policy import effective_params
from .store import DeploymentRecord
from .venvs import ensure_venv

__all__ = ["Emit", "prepare_version", "record_for", "apply"]

Emit = Callable[[str, dict], None]


async def prepare_version(engine: Engine, req: dict, emit: Emit) -> Version:
    """Extract the bundle and, when it has pip requirements, build (or reuse) the venv."""
    bundle_dir = await asyncio.to_thread(extracted_bundle, engine.home, req["bundle_path"])
    config = json.loads((bundle_dir / "config.json").read_text()) if (bundle_dir / "config.json").is_file() else {}
    requirements = [str(r) for r in config.get("pip_installs") or []]
    python = req["python"]
    if requirements:
        emit("LogLine", {"time": time.time(), "worker": "engine", "stream": "system",
                         "text": f"installing pip requirements: {' '.join(requirements)}", "function": None})
        python = await asyncio.to_thread(ensure_venv, engine.home, requirements, req["python"], req["python_version"],
                                         req["site_packages"], req["pip_args"])
    return Version(req["version"], str(bundle_dir), python, tuple(map(tuple, req["env"])),
                   tuple(map(tuple, req["secrets"])))


def record_for(req: dict, version: Version, created: float) -> DeploymentRecord:
    name, tag = req["name"], req["tag"]
    return DeploymentRecord(
        name=name, tag=tag, endpoint=f"local://{name}/{tag}", version=version.version, manifest=req["manifest"],
        bundle_path=req["bundle_path"], bundle_dir=version.bundle_dir, autoscaling=dict(req["autoscaling"]),
        env=[list(p) for p in version.env], secrets=[list(p) for p in version.secrets], python=version.python,
        site_packages=list(req["site_packages"]), not_applied=list(req["not_applied"]), ttl=req.get("ttl"),
        last_heartbeat=time.time(), state="ready", created=created)


async def apply(engine: Engine, req: dict, emit: Emit) -> dict:
    """Run one apply request to the end (or to acceptance when ``wait`` is false)."""
    key = (req["name"], req["tag"])
    params = effective_params(req["autoscaling"])          # ConfigError before anything changes
    print(f"apply {key[0]}/{key[1]} tier {req['tier']}: {'; '.join(req.get('reasons') or ()) or 'no changes'}",
          flush=True)
    dep = engine.deployments.get(key)
    if key in engine.applying or (dep is not None and dep.rollout):
        raise DeployError(f"{key[0]}/{key[1]} is already being deployed; wait for that deploy to finish, then retry.")
    if dep is not None and dep.committed and req["tier"] <= 1:
        return await _update_in_place(engine, dep, req, emit)
    engine.applying.add(key)
    work = _roll_out(engine, dep, req, emit, params.cold_workers, params.max_workers)
    if not req.get("wait", True):
        engine.background(_unattended(work, key))
        return {"endpoint": f"local://{key[0]}/{key[1]}", "workers": [], "benchmark": None, "accepted": True}
    return await work


async def _unattended(work, key: tuple[str, str]) -> None:
    """A ``wait=False`` deploy: nobody awaits it, so its failure goes to engine.log (and status)."""
    try:
        await work
    except Exception as exc:
        print(f"deploy of {key[0]}/{key[1]} failed: {exc}", flush=True)


async def _update_in_place(engine: Engine, dep: Deployment, req: dict, emit: Emit) -> dict:
    """Tiers 0 and 1: same processes; new autoscaling/ttl/manifest recorded."""
    rec = dep.rec
    rec.autoscaling, rec.manifest, rec.ttl = dict(req["autoscaling"]), req["manifest"], req.get("ttl")
    rec.not_applied, rec.last_heartbeat = list(req["not_applied"]), time.time()
    engine.commit(dep, rec)
    if dep.params.cold_workers > sum(1 for w in dep.workers.values() if w.role == "serving"):
        await engine.scale_now(dep)             # more cold workers: started now, not at the reconciler's next look
    if req.get("wait", True):
        await _wait_ready(dep, lambda w: True, max(1, dep.params.cold_workers), req["timeout"], emit)
    return _result(dep, None)


async def _roll_out(engine: Engine, dep: Deployment | None, req: dict, emit: Emit, cold: int, cap: int) -> dict:
    created = dep.rec.created if dep is not None else time.time()
    if dep is not None:
        dep.rollout = True
    candidates: list[Worker] = []
    committed = False
    try:
        version = await prepare_version(engine, req, emit)
        if dep is None:
            dep = engine.new_deployment(record_for(req, version, created), committed=False)
            dep.rollout = True
        dep.watchers.add(emit)
        old = [w for w in dep.workers.values() if w.role == "serving"]
        count = min(cap, max(1, cold, len(old)))
        for _ in range(count):
            candidates.append(await engine.start_worker(dep, version, "candidate"))
        await _first_ready(engine, dep, candidates, req["timeout"])
        engine.commit(dep, record_for(req, version, created))
        committed = True
        task = engine.background(_promote(engine, dep, candidates, old))
        need = min(count, max(1, cold))
        await _wait_ready(dep, lambda w: w.rec.version == version.version and w.role == "serving", need,
                          req["timeout"], emit, task)
        return _result(dep, version.version)
    except BaseException as exc:
        if dep is not None:
            dep.rollout = False
            dep.last_error = dep.last_error or str(exc)
            if isinstance(exc, asyncio.CancelledError) and not committed:
                # an interrupted deploy (Ctrl-C in the notebook): the new version never served, so it goes
                dep.last_error = "the deploy was interrupted; the previous version keeps serving"
                await asyncio.shield(_abort(engine, dep, candidates))
        raise
    finally:
        engine.applying.discard((req["name"], req["tag"]))
        if dep is not None:
            dep.watchers.discard(emit)


async def _first_ready(engine: Engine, dep: Deployment, candidates: list[Worker], timeout: float) -> Worker:
    """The first candidate to become ready; any failure before that aborts the whole version."""
    deadline = time.monotonic() + timeout
    pending = set(candidates)
    while pending:
        left = deadline - time.monotonic()
        waits = {asyncio.ensure_future(w.settled.wait()): w for w in pending}
        done, rest = await asyncio.wait(waits, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
        for fut in rest:
            fut.cancel()
        if not done:
            await _abort(engine, dep, candidates)
            raise DeployError(f"no worker of {dep.rec.name}/{dep.rec.tag} was ready within {timeout:.0f}s; "
                              "raise timeout= or check the logs (app.logs()). The previous version keeps serving.")
        for fut in done:
            worker = waits[fut]
            pending.discard(worker)
            if worker.rec.state == "ready":
                return worker
            await _abort(engine, dep, candidates)
            raise DeployError(f"worker {worker.rec.id} of {dep.rec.name}/{dep.rec.tag} failed while starting; "
                              f"the previous version keeps serving. Worker traceback:\n{worker.rec.error or '(none)'}")
    raise DeployError("no candidate worker was started")  # pragma: no cover - count >= 1


async def _abort(engine: Engine, dep: Deployment, candidates: list[Worker]) -> None:
    await asyncio.gather(*(engine.stop_worker(w, grace=1.0) for w in candidates))
    for worker in candidates:
        if worker.rec.id in dep.workers:
            engine.forget_worker(dep, worker, "failed" if worker.rec.state == "failed" else "stopped", worker.rec.error)


async def _promote(engine: Engine, dep: Deployment, candidates: list[Worker], old: list[Worker]) -> None:
    """Each ready candidate takes one old slot; when all have settled, the rest of the old go."""
    try:
        pending = list(candidates)
        while pending:
            for worker in [w for w in pending if w.settled.is_set()]:
                pending.remove(worker)
                if worker.rec.state == "ready" and worker.rec.id in dep.workers:
                    worker.role = "serving"
                    await engine.publish_routes(dep)
                    if old:
                        await engine.drain(dep, old.pop(0))
                elif worker.rec.id in dep.workers:
                    worker.role = "serving"   # failed late: the reconciler replaces it
            if pending:
                await asyncio.wait([asyncio.ensure_future(w.settled.wait()) for w in pending],
                                   return_when=asyncio.FIRST_COMPLETED)
        for worker in old:
            if worker.rec.id in dep.workers:
                await engine.drain(dep, worker)
    finally:
        dep.rollout = False


async def _wait_ready(dep: Deployment, match: Callable[[Worker], bool], need: int, timeout: float, emit: Emit,
                      task: asyncio.Task | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = [w for w in dep.workers.values() if match(w) and w.rec.state == "ready" and w.role == "serving"]
        if len(ready) >= need or (task is not None and task.done() and ready):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"only {len(ready)} of {need} workers of {dep.rec.name}/{dep.rec.tag} were ready "
                              f"within {timeout:.0f}s; see app.logs() for what the others are doing.")
        try:                                  # a worker that turns ready publishes routes: no 50 ms poll to wait out
            await asyncio.wait_for(dep.routes_changed.wait(), 0.05)
        except asyncio.TimeoutError:
            pass


def _result(dep: Deployment, version: str | None) -> dict:
    workers = [w for w in dep.workers.values() if w.role == "serving" and (version is None or w.rec.version == version)]
    perfs = [w.rec.perf for w in workers if w.rec.perf is not None]
    return {"endpoint": dep.rec.endpoint, "workers": [asdict(w.info()) for w in workers],
            "benchmark": max(perfs) if perfs else None}
