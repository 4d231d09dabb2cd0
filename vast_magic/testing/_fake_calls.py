"""The fake Vast's workers: a call sent to ``WORKER`` or ``OLD_WORKER``, answered as the shim would.

The shim contract of the generated ``deployment.py``: ``auth_data`` and a
``payload`` dict, an answer ``{"result": {"ok": ...}}`` or ``{"result": {"err":
...}}`` in the official JSON wire. A name found in the fake's ``functions``
(``old_functions`` on ``OLD_WORKER``) runs that plain function here, its
sealed envelope opened here as the shim would; any other name goes to the
process serving the uploaded bundle, which this module starts, replaces when
the deployment moves on, and stops. Functions take the ``FakeVast`` as
``fake`` (its knobs and counters), as ``_box_autoscaler`` takes the box's plane.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import io
import os
from typing import Any

import httpx

from ..backends.vast import envelope
from ..runtime import sealed, streaming, wire
from ..runtime.executor import CallState
from ._box_rules import parse_env_string
from ._fake_model import OLD_WORKER, WORKER, FakeDeployment, Recorded
from ._fake_worker import BundleWorker, WorkerGone

__all__ = ["answer_call", "serves_bundle", "process", "stop_processes", "stop_all"]

AUTH_FIELDS = ("cost", "endpoint", "reqnum", "request_idx", "signature", "url")


async def answer_call(fake: Any, r: Recorded, url: str = WORKER) -> httpx.Response:
    """A request to the worker at ``url``: checked as the shim checks it, then run (the official wire)."""
    body = r.body if isinstance(r.body, dict) else None
    if body is None:
        return httpx.Response(422, json={"error": "invalid JSON"})
    auth = body.get("auth_data")
    if not isinstance(auth, dict) or any(k not in auth for k in AUTH_FIELDS):
        return httpx.Response(422, json={"auth_data": "field missing"})
    if not isinstance(body.get("payload"), dict):
        return httpx.Response(422, json={"payload": {"data": "payload must be a dictionary"}})
    name = r.path.removeprefix("/remote/")
    functions = fake.old_functions if url == OLD_WORKER else fake.functions
    kwargs = dict(body["payload"].get("kwargs") or {})
    d = _by_endpoint_name(fake, auth.get("endpoint"))
    if name not in fake.functions:
        return await _bundle_call(fake, d, url, name, kwargs)
    if envelope.PARAM in kwargs:
        try:
            return httpx.Response(200, json={"result": {"ok": await _run_enveloped(
                fake, d, url, name, kwargs[envelope.PARAM], functions)}})
        except sealed.Refused as exc:
            return httpx.Response(200, json={"result": {"err": _official_err(exc)}})
    try:
        return httpx.Response(200, json={"result": {"ok": await _maybe_await(functions[name](**kwargs))}})
    except Exception as exc:  # the official wire, with the args our shim puts in __dict__ (vast_entry)
        return httpx.Response(200, json={"result": {"err": _official_err(exc)}})


def _by_endpoint_name(fake: Any, endpoint: Any) -> FakeDeployment | None:
    return next((d for d in fake.deployments.values() if f"ep-{d.endpoint_id}" == endpoint and not d.deleted), None)


async def _run_enveloped(fake: Any, d: FakeDeployment | None, url: str, name: str, text: str,
                         functions: dict) -> str:
    """What the shim does: open the sealed envelope (Refused: nothing unpickled), check the version, run."""
    key = d.envelope_key() if d is not None else None
    opener = d.openers.setdefault(url, sealed.Opener(key or sealed.new_key(), url=url)) if d else None
    if opener is None:
        raise sealed.Refused("no deployment for this endpoint")
    header, payload = opener.open(text, name)
    version = d.version_at(url)
    if header.version is not None and version is not None and header.version != version:
        fake.stale_answers += 1
        return sealed.STALE + version
    request = envelope.decode(base64.b64encode(payload).decode("ascii"), fake.classes)
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
    return envelope.answer(message, {cls: name for name, cls in fake.classes.items()})


# -- workers that run the uploaded bundle ---------------------------------------------------------
def serves_bundle(fake: Any, d: FakeDeployment | None) -> bool:
    return fake.run_bundles and d is not None and bool(d.bundles)


async def process(fake: Any, d: FakeDeployment, url: str) -> BundleWorker:
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
    if not await asyncio.to_thread(worker.started, fake.start_timeout):
        raise TimeoutError(f"fake Vast: a worker did not start in {fake.start_timeout} s:\n{worker.logs()}")
    return worker


def stop_processes(d: FakeDeployment) -> None:
    for _, worker in d.processes.values():
        worker.stop()
    d.processes.clear()


def stop_all(deployments: dict) -> None:
    for d in deployments.values():
        stop_processes(d)


async def _bundle_call(fake: Any, d: FakeDeployment | None, url: str, name: str, kwargs: dict) -> httpx.Response:
    """A call served by a worker process: the shim in the shipped ``deployment.py`` answers it."""
    if not serves_bundle(fake, d):
        return httpx.Response(404, text="404: Not Found")
    worker = await process(fake, d, url)
    if worker.error:
        return httpx.Response(503, text=f"fake Vast: the worker failed to start: {worker.error}")
    try:
        answer = await worker.call(name, kwargs)
    except WorkerGone as exc:
        return httpx.Response(502, text=f"fake Vast: {exc}")
    if "status" in answer:
        return httpx.Response(answer["status"], text="404: Not Found")
    if isinstance(answer.get("ok"), str) and answer["ok"].startswith(sealed.STALE):
        fake.stale_answers += 1
    return httpx.Response(200, json={"result": answer})


def _official_err(exc: BaseException) -> dict:
    """An exception in the stock JSON wire: its ``__dict__`` travels (reference 3.3), and our shim puts the
    exception's args there (vast_entry), so the message reaches official clients too."""
    contents = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float))}
    contents["args"] = {"type": "tuple", "contents": [a if type(a) in (int, str, float) else repr(a) for a in exc.args]}
    return {"type": "obj", "class": type(exc).__qualname__,
            "module": {"type": "absolute", "path": type(exc).__module__.split(".")}, "contents": contents}


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
