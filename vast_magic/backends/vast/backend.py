"""``VastBackend``: the backend protocol (backends/base.py) on Vast.ai Serverless.

Deploying always sends the PUT; what follows depends on Vast's ``action``
(upload when the answer carries upload fields, ``/update_workers/`` only on
``soft_update``), and the report shows our predicted tier next to it. The
Manifest last applied is remembered under ``home/vast/<name>/<tag>.json``.
Everything runs on vast_magic's background loop; no key ever reaches a
message, a log line or a repr.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import random
import time
from typing import Any, AsyncIterator, Callable

import httpx

from ... import settings
from ...errors import BackendError, VastAPIError, VastNotFoundError, make_remote_error
from ...events import EventSink, Failed, TierDecided
from ...reports import DeploymentStatus, LogLine, WorkerInfo
from ..base import ApplyResult, CallOutcome, CallSpec, DeployPlan
from ..heartbeat import HeartbeatScheduler
from ..task_calls import TaskCalls
from . import deploy, readiness, routing, sealing, state
from .api import DEFAULT_AUTOSCALER, DEFAULT_WEBSERVER, VastAPI
from .keys import require_api_key

__all__ = [
    "AUTOSCALERS", "BEAT_TIMEOUT", "STREAM_NOTE", "ACTION_TIERS", "ACTIONS", "VAST_SIDE_REASONS", "autoscaler_for",
    "vast_side_change", "is_hard_update", "tier_note",
    "VastBackend", "endpoint_label", "deployment_state"
]

AUTOSCALERS = {"prod": DEFAULT_AUTOSCALER, "alpha": "https://run-alpha.vast.ai",
               "candidate": "https://run-candidate.vast.ai", "local": "http://localhost:8080"}
BEAT_TIMEOUT = 10.0
logger = logging.getLogger("vast_magic.vast")
#: written once per function and process when a stream runs on Vast
STREAM_NOTE = ("[vast_magic] {0}.stream on Vast: the stock worker answers one body per request, so the items "
               "were collected on the worker and arrive together when {0} ends (on the local engine they arrive "
               "as they are made).\n")
#: Vast's action -> the tier it corresponds to (DESIGN.md "Vast backend"); exactly the four values of
#: reference 8.1 ("One of: created, soft_update, autoscale_update, exists.")
ACTION_TIERS = {"exists": 0, "autoscale_update": 1, "soft_update": 2, "created": 4}
ACTIONS = tuple(ACTION_TIERS)
#: what each action means for the workers when we predicted an image-level change (tier 3)
_AFTER_IMAGE_CHANGE = {
    "soft_update": "Vast performs a hard update itself (it restarts the same workers on the new image), so "
                   "vast_magic sent no /update_workers/",
    "created": "a new endpoint starts",
    "autoscale_update": "Vast changes only the scaling; the workers keep their image",
    "exists": "Vast saw no change; the workers keep their image",
}


def autoscaler_for(instance: str | None, url: str | None) -> str:
    return url or AUTOSCALERS.get(instance or "prod", DEFAULT_AUTOSCALER)


#: the tier-3 reasons (bundle/tiers.py) whose change Vast itself sees in the deployment request; a plain
#: ``Image.env()`` value travels in the bundle's config.json instead, so Vast sees only a new bundle
VAST_SIDE_REASONS = ("image:", "storage:", "secret:", "search:", "ports changed", "docker login changed")
_BUNDLE_ENV_NOTE = ("env change: plain env values travel in the bundle's config.json, so Vast sees a new bundle "
                    "(a soft update) and vast_magic sent /update_workers/")


def vast_side_change(reasons: tuple[str, ...]) -> bool:
    """Whether a predicted tier 3 changes something in the deployment request (image, storage, secrets and
    ports in the env string, search filters, docker login), for which Vast does the hard update itself."""
    return any(reason.startswith(VAST_SIDE_REASONS) for reason in reasons)


def is_hard_update(predicted: int, action: str, vast_side: bool = True) -> bool:
    """An image-level change Vast sees (image, secrets, search filters: ``vast_side``) that it answered with
    an update: Vast replaces the workers' image itself (reference 8.1), so no ``/update_workers/`` follows.
    A tier 3 of plain env values only is a new bundle to Vast: a soft update like tier 2."""
    return predicted == 3 and action == "soft_update" and vast_side


def tier_note(predicted: int, action: str, vast_side: bool = True) -> str | None:
    """What to tell the user when Vast's action is not the tier we predicted (or the tier is 3)."""
    expected = ACTION_TIERS.get(action)
    if expected is None:
        return (f"Vast answered an unknown action {action!r} (expected one of {', '.join(ACTIONS)}); "
                "no /update_workers/ was sent")
    if predicted == 3 and not vast_side and action == "soft_update":
        return _BUNDLE_ENV_NOTE
    if predicted == 3:
        return f"image-level change: Vast answered {action!r}: {_AFTER_IMAGE_CHANGE[action]}"
    if expected != predicted:
        return f"Vast answered {action!r} (tier {expected}), predicted tier {predicted}"
    return None


class VastBackend:
    kind = "vast"

    def __init__(self, home: str | os.PathLike | None = None, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, webserver_url: str = DEFAULT_WEBSERVER,
                 autoscaler_url: str | None = None, autoscaler_instance: str = "prod",
                 poll_interval: float = readiness.MIN_POLL_INTERVAL, sleep: Any = None,
                 jitter: Callable[[], float] = random.random, **_: Any):
        self.home = str(home) if home is not None else str(settings.home())
        self.api = VastAPI(require_api_key(api_key), webserver_url=webserver_url,
                           autoscaler_url=autoscaler_for(autoscaler_instance, autoscaler_url),
                           transport=transport, sleep=sleep, jitter=jitter)
        self.router = routing.Router(self.api)
        self.heartbeats = HeartbeatScheduler(self._beat)
        self.poll_interval = readiness.check_poll_interval(poll_interval, self.api.autoscaler_url)
        self._logs: dict[tuple[str, str], collections.deque] = {}
        self.spawned = TaskCalls("Vast")
        self._stream_noted: set[str] = set()

    def __repr__(self) -> str:
        return (f"VastBackend(home={self.home!r}, webserver_url={self.api.webserver_url!r}, "
                f"autoscaler_url={self.api.autoscaler_url!r}, api_key='***')")

    @property
    def services(self) -> tuple[tuple[str, str], ...]:
        return (("webserver", self.api.webserver_url), ("autoscaler", self.api.autoscaler_url))

    # -- deploy ------------------------------------------------------------------------------
    async def previous_manifest_json(self, name: str, tag: str) -> str | None:
        record = await self._read(name, tag)
        return record.manifest_json if record is not None and record.manifest_json else None

    async def _read(self, name: str, tag: str) -> state.DeployRecord | None:
        """The record of (name, tag), read off the event loop."""
        return await asyncio.to_thread(state.read_record, self.home, name, tag)

    async def apply(self, plan: DeployPlan, emit: EventSink) -> ApplyResult:
        try:
            answer, outgoing, polled = await self._register(plan, emit)
            note = tier_note(plan.tier, answer.action, vast_side_change(plan.reasons))
            notes = (note,) if note else ()
            emit(TierDecided(plan.tier, plan.reasons + notes, answer.action))
            if plan.ttl:
                self.heartbeats.start(answer.deployment_id, plan.ttl)
            workers: tuple[WorkerInfo, ...] = ()
            if plan.wait and (plan.autoscaling or {}).get("cold_workers") == 0:
                emit(LogLine(time.time(), "vast", "system", "cold_workers=0: workers start on the first call, "
                                                            "so ensure_ready does not wait for one."))
            elif plan.wait:
                watch = readiness.ReadinessWatch(self.api, answer.endpoint_id, emit, interval=self.poll_interval,
                                                 sleep=self.api.sleep, previous=outgoing, last_poll=polled)
                workers = await watch.wait(plan.timeout)
        except BackendError as exc:
            emit(Failed(str(exc)))
            raise
        perfs = [w.perf for w in workers if w.state == "ready" and w.perf is not None]
        return ApplyResult(endpoint=endpoint_label(answer.endpoint_id), workers=workers,
                           benchmark=max(perfs) if perfs else None, backend_action=answer.action, notes=notes)

    async def _register(self, plan: DeployPlan, emit: EventSink) -> tuple[deploy.PutAnswer, dict | None, float | None]:
        """PUT, then upload and soft update as the answer asks; remember what was applied.

        The workers as they were before the update come back too, so the readiness watch waits for an
        updated one (None: any ready worker will do). For a soft update that is just before
        ``/update_workers/``; for a hard update (``is_hard_update``) Vast starts replacing the image on
        the PUT itself, so the workers are read before the PUT and no ``/update_workers/`` is sent.
        The loop time of that read comes back too: the watch's first poll keeps the rate limit's interval.
        """
        key = await asyncio.to_thread(sealing.ensure_key, self.home, plan.name, plan.tag)
        self.api.add_secret(key.hex())
        for value in [v for _, v in plan.secrets] + list(deploy.docker_login_fields(plan.image).values()):
            self.api.add_secret(value)   # so an error text that echoes the body cannot show them
        # the envelope key travels like the user's secrets: in the deployment's env, never in the bundle
        worker_env = sealing.worker_env(key, settings.resolve("vast_max_request_bytes"))
        env = deploy.compile_env(plan.image, tuple(plan.secrets) + worker_env, autoscaler_url=self.api.autoscaler_url,
                                 webserver_url=self.api.webserver_url)
        file_hash = await asyncio.to_thread(deploy.bundle_hash, plan.bundle_path)
        body = deploy.put_body(plan, file_hash=file_hash, file_size=os.path.getsize(plan.bundle_path), env=env)
        previous = await self._read(plan.name, plan.tag)
        before_put, polled = await self._workers_before(plan, previous, emit)
        answer = await deploy.register(self.api, body, emit)
        if answer.wants_upload:
            await deploy.upload(self.api, answer, plan.bundle_path, emit)
        outgoing, polled = await self._follow_action(plan, answer, previous, before_put, polled, emit)
        if previous is not None and previous.endpoint_id != answer.endpoint_id:
            self.router.forget(previous.endpoint_id)
        await asyncio.to_thread(state.write_record, self.home, state.DeployRecord(
            plan.name, plan.tag, answer.deployment_id, answer.endpoint_id, plan.manifest.to_json(),
            answer.action, plan.ttl))
        return answer, outgoing, polled

    async def _workers_before(self, plan: DeployPlan, previous: state.DeployRecord | None,
                              emit: EventSink) -> tuple[tuple | None, float | None]:
        """Before the PUT of a predicted tier 3 (Vast may start a hard update on it): the endpoint's workers
        and the loop time they were read; (None, None) otherwise or when they cannot be read."""
        if plan.tier != 3 or previous is None:
            return None, None
        try:
            reported, _ = await readiness.endpoint_workers(self.api, previous.endpoint_id, emit)
        except VastAPIError as exc:
            logger.info("could not read the workers of endpoint %s before the update: %s", previous.endpoint_id, exc)
            return None, None
        return reported, asyncio.get_running_loop().time()

    async def _follow_action(self, plan: DeployPlan, answer: deploy.PutAnswer, previous: state.DeployRecord | None,
                             before_put: tuple | None, polled: float | None,
                             emit: EventSink) -> tuple[dict | None, float | None]:
        """What follows Vast's action: nothing for Vast's own hard update, ``/update_workers/`` for a soft
        update. Returns the generations of the workers of before (None: any ready worker will do) and when
        the endpoint's workers were last read."""
        if is_hard_update(plan.tier, answer.action, vast_side_change(plan.reasons)):
            same = before_put is not None and previous is not None and previous.endpoint_id == answer.endpoint_id
            return (readiness.generations(before_put) if same else None), polled
        if answer.action != "soft_update":
            return None, polled
        before, _ = await readiness.endpoint_workers(self.api, answer.endpoint_id, emit)
        polled = asyncio.get_running_loop().time()
        updated = await deploy.soft_update(self.api, answer, emit) is not None
        return (readiness.generations(before) if updated else None), polled

    async def _beat(self, deployment_id: int) -> bool:
        """``POST /api/v0/deployment/{id}/heartbeat/``: Bearer key, no body, no ``api_key`` query; False once gone."""
        what = f"heartbeat of deployment {deployment_id}"
        try:
            await self.api.request("POST", self.api.web(f"/api/v0/deployment/{deployment_id}/heartbeat/"), what=what,
                                   query_key=False, timeout=BEAT_TIMEOUT, attempts=1)
        except VastNotFoundError:
            logger.warning("deployment %s no longer exists on Vast; heartbeats stopped.", deployment_id)
            return False
        except (VastAPIError, OSError) as exc:
            logger.warning("heartbeat failed, retrying: %s", exc)
            raise
        return True

    # -- calls -------------------------------------------------------------------------------
    async def call(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any,
                   may_send: Callable[[], bool] | None = None, collect: bool = False) -> CallOutcome:
        record = await self._record(spec.name, spec.tag)
        key = await asyncio.to_thread(sealing.read_key, self.home, spec.name, spec.tag)
        outcome = await routing.call(self.router, record.endpoint_id, spec, args, kwargs, classes or {}, key,
                                     may_send, collect)
        logs = self._logs.setdefault((spec.name, spec.tag), collections.deque(maxlen=2000))
        now = time.time()
        for stream, text in outcome.output:
            for line in text.splitlines():
                logs.append(LogLine(now, f"endpoint {record.endpoint_id}", stream, line, spec.function))
        return outcome

    async def stream(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> AsyncIterator[tuple]:
        """The fallback for remote generators: the stock Vast worker answers one JSON body per request, so
        the worker collects every item and they arrive together when the generator ends (an error raised
        mid-stream comes after them). A note says so in the output, once per function and process."""
        outcome = await self.call(spec, args, kwargs, classes, collect=True)
        note = () if spec.function in self._stream_noted else (("stderr", STREAM_NOTE.format(spec.function)),)
        self._stream_noted.add(spec.function)
        if outcome.error is not None:
            yield "end", dataclasses.replace(outcome, output=note + outcome.output)
            return
        collected = outcome.value if isinstance(outcome.value, dict) else {}
        yield "items", list(collected.get("items") or ())
        error = collected.get("error")
        failure = make_remote_error(str(error.get("type")), str(error.get("message") or ""),
                                    str(error.get("traceback") or ""), False) if error else None
        yield "end", CallOutcome(error=failure, output=note + outcome.output, retries=outcome.retries)

    # -- spawned calls: tasks of this process (backends/task_calls.py) ----------------------------------
    async def spawn(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> str:
        await self._record(spec.name, spec.tag)          # not deployed: say so now, not in result()
        return self.spawned.spawn(spec.function, lambda may_send: self.call(spec, args, kwargs, classes, may_send))

    async def call_result(self, call_id: str, wait: float, classes: Any) -> CallOutcome | None:
        return await self.spawned.result(call_id, wait)

    async def call_function(self, call_id: str) -> str:
        return self.spawned.get(call_id).function

    async def cancel_call(self, call_id: str) -> str:
        return self.spawned.cancel(call_id)

    async def _record(self, name: str, tag: str) -> state.DeployRecord:
        record = await self._read(name, tag)
        if record is None:
            raise BackendError(f"{name}/{tag} is not deployed on Vast from this machine; run app.ensure_ready() first.")
        return record

    # -- status, logs, teardown ----------------------------------------------------------------
    async def status(self, name: str, tag: str) -> DeploymentStatus:
        record = await self._read(name, tag)
        if record is None:
            return DeploymentStatus(name, tag, None, "stopped", (), services=self.services)
        try:
            what = f"GET /api/v0/deployment/{record.deployment_id}/"
            response = await self.api.request("GET", self.api.web(f"/api/v0/deployment/{record.deployment_id}/"),
                                              what=what)
        except VastNotFoundError:
            return DeploymentStatus(name, tag, None, "stopped", (), services=self.services)
        data = (self.api.json(response, what) or {}).get("deployment") or {}
        reported, _ = await readiness.endpoint_workers(self.api, record.endpoint_id)
        workers = tuple(w.info for w in reported)
        return DeploymentStatus(name, tag, endpoint_label(record.endpoint_id),
                                deployment_state(data, workers), workers, services=self.services)

    async def list_deployments(self) -> list[DeploymentStatus]:
        what = "GET /api/v0/deployments"
        response = await self.api.request("GET", self.api.web("/api/v0/deployments"), what=what)
        items = (self.api.json(response, what) or {}).get("deployments") or []
        return [DeploymentStatus(str(d.get("name")), str(d.get("tag") or "default"),
                                 endpoint_label(d.get("endpoint_id")), deployment_state(d, ()), ())
                for d in items if isinstance(d, dict)]

    async def known_deployments(self) -> list[tuple[str, str]]:
        """What this machine deployed on Vast and did not tear down (its records); never asks the API."""
        return [(r.name, r.tag) for r in await asyncio.to_thread(state.all_records, self.home)]

    async def logs(self, name: str, tag: str, function: str | None, tail: int) -> list[LogLine]:
        """Output of calls made from this process (Vast has no log API for deployments in the SDK)."""
        lines = [line for line in self._logs.get((name, tag), ()) if function is None or line.function == function]
        return lines[-tail:]

    async def teardown(self, name: str, tag: str | None) -> None:
        records = await asyncio.to_thread(state.records_for, self.home, name) if tag is None else \
            [r for r in [await self._read(name, tag)] if r is not None]
        for record in records:
            self.heartbeats.stop(record.deployment_id)
            await self._delete(f"/api/v0/deployment/{record.deployment_id}/", None)
            self.router.forget(record.endpoint_id)
            await asyncio.to_thread(state.delete_record, self.home, record.name, record.tag)
            await asyncio.to_thread(sealing.delete_key, self.home, record.name, record.tag)
            self._logs.pop((record.name, record.tag), None)
        if tag is None or not records:
            body = {"name": name} if tag is None else {"name": name, "tag": tag}
            await self._delete("/api/v0/deployments/", body)

    async def _delete(self, path: str, body: dict | None) -> None:
        try:
            await self.api.request("DELETE", self.api.web(path), what=f"DELETE {path}", json=body)
        except VastNotFoundError:
            pass  # already gone: teardown is idempotent

    def close(self) -> None:
        self.heartbeats.stop_all()


def endpoint_label(endpoint_id: Any) -> str | None:
    return f"vast endpoint {endpoint_id}" if endpoint_id is not None else None


def deployment_state(data: dict, workers: tuple[WorkerInfo, ...]) -> str:
    if any(w.state == "ready" for w in workers):
        return "ready"
    if workers:
        return "deploying"
    return str(data.get("endpoint_state") or "deploying")
