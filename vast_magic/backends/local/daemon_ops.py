"""The engine's request protocol (client -> daemon), one function per op.

A request is ``{"op": str, "id": int, ...}``; the answer is
``{"id": id, "ok": True, "result": obj}`` or ``{"id": id, "ok": False,
"error": {"kind": "DeployError", "message": str}}``. ``apply`` also streams
``{"id": id, "event": (kind, fields)}`` before its answer. Subscribers get
``{"push": "routes", "name", "tag", "routes": [(worker, port, perf, version)]}``
whenever the ready workers of a deployment change. Every value is plain data (a spawned call's
request and answer stay pickled bytes: ``spawned.py``).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from ...errors import BackendError, ConfigError, DeployError, VastMagicError
from . import rollout, spawned
from .bundles import DISK_HINT, is_disk_error
from .channel import Channel
from . import logfiles
from .engine import Engine
from .engine_model import status_of

__all__ = [
    "handle", "op_apply", "op_route", "op_subscribe", "op_status", "op_list", "op_logs", "op_worker_log",
    "op_teardown", "op_heartbeat", "op_cancel_apply", "op_ping", "op_spawn", "op_call_result", "op_cancel_call", "OPS"
]


async def handle(engine: Engine, channel: Channel, req: dict) -> None:
    """Answer one request; failures become error answers, never a dropped connection."""
    engine.touch()
    op, rid = req.get("op"), req.get("id")
    handler = OPS.get(op)
    try:
        if handler is None:
            raise BackendError(f"the engine does not know the operation {op!r}; restart it with `vast-magic engine stop`.")
        answer = {"id": rid, "ok": True, "result": await handler(engine, channel, req)}
    except VastMagicError as exc:
        answer = {"id": rid, "ok": False, "error": {"kind": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:  # a bug in the engine: say so, keep serving
        answer = {"id": rid, "ok": False, "error": {"kind": "BackendError",
                                                     "message": f"engine error {type(exc).__name__}: {exc}"}}
    engine.touch()
    await asyncio.sleep(0)        # events queued by this request go out before its answer
    try:
        await channel.send(answer)
    except (ConnectionError, OSError):
        pass


async def op_apply(engine: Engine, channel: Channel, req: dict):
    rid = req.get("id")

    def emit(kind: str, fields: dict) -> None:
        engine.background(_send_quietly(channel, {"id": rid, "event": (kind, fields)}))

    key = (req.get("name"), req.get("tag"))
    engine.apply_tasks[key] = asyncio.current_task()
    try:
        return await rollout.apply(engine, req, emit)
    except (VastMagicError, asyncio.CancelledError):
        raise
    except OSError as exc:
        hint = f"; {DISK_HINT}" if is_disk_error(exc) else ""
        raise DeployError(f"deploying {req['name']}/{req['tag']} failed: {exc}{hint}; "
                          "the previous version keeps serving.") from exc


async def _send_quietly(channel: Channel, message: dict) -> None:
    try:
        await channel.send(message)
    except (ConnectionError, OSError):
        pass


def _deployment(engine: Engine, req: dict):
    dep = engine.deployments.get((req["name"], req["tag"]))
    if dep is None or not dep.committed:
        raise ConfigError(f"{req['name']}/{req['tag']} is not deployed on the local engine; run app.ensure_ready() first.")
    return dep


async def op_route(engine: Engine, channel: Channel, req: dict):
    """The ready workers; when there are none (of ``version``, when given), wait (counted as queued
    demand) up to ``wait`` s."""
    dep = _deployment(engine, req)
    deadline = time.monotonic() + float(req.get("wait") or 0.0)
    version = req.get("version")
    _check_version(engine, dep, version)
    return await spawned.wait_for_routes(engine, dep, deadline, float(req.get("cost") or 0.0), version)


def _check_version(engine: Engine, dep, version) -> None:
    """A call pinned to a version the deployment no longer runs nor rolls out is refused (ConfigError)."""
    if version and version != dep.rec.version and not dep.rollout and dep.key not in engine.applying:
        raise ConfigError(f"{dep.rec.name}/{dep.rec.tag} now runs another version ({dep.rec.version[:12]}) than "
                          f"this process deployed ({str(version)[:12]}): that deploy did not finish, or it was deployed "
                          "again from elsewhere. Run app.ensure_ready() here to deploy your version.")


async def op_spawn(engine: Engine, channel: Channel, req: dict):
    """Run a call for the client (its pickled request in ``request``) and keep the answer; returns its id."""
    dep = _deployment(engine, req)
    _check_version(engine, dep, req.get("version"))
    call = engine.spawned.add(dep.key, req)
    call.task = engine.background(spawned.run(engine, call))
    return call.id


async def op_call_result(engine: Engine, channel: Channel, req: dict):
    """A spawned call's state, and once done its answer; waits up to ``wait`` s for it to finish."""
    call = engine.spawned.get(req.get("call"))
    wait = float(req.get("wait") or 0.0)
    if wait > 0 and not call.settled.is_set():
        try:
            await asyncio.wait_for(call.settled.wait(), wait)
        except asyncio.TimeoutError:
            pass
    return call.answer()


async def op_cancel_call(engine: Engine, channel: Channel, req: dict):
    """Cancel a spawned call: ``never_ran``, ``requested`` (its answer says what happened) or ``finished``."""
    return await spawned.cancel(engine.spawned.get(req.get("call")))


async def op_subscribe(engine: Engine, channel: Channel, req: dict):
    engine.subscribers[(req["name"], req["tag"])].add(channel)
    dep = engine.deployments.get((req["name"], req["tag"]))
    return dep.routes() if dep is not None else []


async def op_status(engine: Engine, channel: Channel, req: dict):
    return status_of(engine.deployments.get((req["name"], req["tag"])), req["name"], req["tag"])


async def op_list(engine: Engine, channel: Channel, req: dict):
    return [status_of(dep, *key) for key, dep in sorted(engine.deployments.items())]


async def op_logs(engine: Engine, channel: Channel, req: dict):
    """The last lines of every worker of (name, tag), read from their log files across rotations (also for
    workers that stopped, and after a teardown, as long as their logs are kept)."""
    function, tail = req.get("function"), int(req.get("tail") or 200)
    lines = await asyncio.to_thread(logfiles.deployment_tail, engine.home, req["name"], req["tag"], tail, function)
    return [asdict(line) for line in lines]


async def op_worker_log(engine: Engine, channel: Channel, req: dict):
    """The last lines a worker wrote (its log file holds its output and forwarded log lines)."""
    worker_id = str(req["worker"])
    if "/" in worker_id or worker_id.startswith("."):
        raise ConfigError(f"invalid worker id {worker_id!r}")
    await asyncio.sleep(float(req.get("settle") or 0.0))     # let a dying worker's last words land
    _, worker = engine.find_worker(worker_id)
    if worker is not None:
        worker.drain_output()
    path = await asyncio.to_thread(logfiles.find_worker_log, engine.home, worker_id)
    lines = await asyncio.to_thread(logfiles.tail, path, int(req.get("tail") or 20)) if path else []
    return [line.text for line in lines]


async def op_teardown(engine: Engine, channel: Channel, req: dict):
    name, tag = req["name"], req.get("tag")
    targets = [dep for key, dep in list(engine.deployments.items()) if key[0] == name and (tag is None or key[1] == tag)]
    await asyncio.gather(*(engine.teardown(dep) for dep in targets))
    stored = [d for d in engine.store.deployments() if d.name == name and (tag is None or d.tag == tag)]
    for rec in stored:
        engine.store.delete_deployment(rec.name, rec.tag)
    return len(targets)


async def op_heartbeat(engine: Engine, channel: Channel, req: dict):
    dep = engine.deployments.get((req["name"], req["tag"]))
    if dep is None or not dep.committed:
        return False
    dep.rec.last_heartbeat = time.time()
    engine.store.set_heartbeat(req["name"], req["tag"], dep.rec.last_heartbeat)
    return True


async def op_cancel_apply(engine: Engine, channel: Channel, req: dict):
    """The client gave up waiting (Ctrl-C): stop that deploy; what already served keeps serving."""
    task = engine.apply_tasks.get((req["name"], req["tag"]))
    if task is None or task.done():
        return False
    task.cancel()
    await asyncio.wait([task], timeout=10)
    return True


async def op_ping(engine: Engine, channel: Channel, req: dict):
    return {"port": engine.port, "deployments": len(engine.deployments)}


OPS = {
    "apply": op_apply, "route": op_route, "subscribe": op_subscribe, "status": op_status, "list": op_list,
    "logs": op_logs, "worker_log": op_worker_log, "teardown": op_teardown, "heartbeat": op_heartbeat,
    "ping": op_ping, "cancel_apply": op_cancel_apply, "spawn": op_spawn, "call_result": op_call_result,
    "cancel_call": op_cancel_call,
}
