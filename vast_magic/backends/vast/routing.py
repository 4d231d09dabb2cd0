"""Calling a function on a Vast worker: endpoint lookup, ``/route/``, the worker POST (reference 3.1-3.2).

1. ``GET /api/v0/endptjobs/{endpoint_id}/`` gives the endpoint name and its own
   api key (cached per endpoint).
2. ``POST {autoscaler}/route/`` with the endpoint key until the answer carries
   a ``url``; bounded by the call's deadline (the official client waits forever).
   Our ``cost`` is the call's workload (the official client always sends 100).
3. ``POST <url>/remote/<function>?api_key=<endpoint key>`` with
   ``{"auth_data": <the whole /route/ answer>, "session_id": null, "payload": {"kwargs": {...}}}``.

Retries are bounded: 429 and refused connections (the call never started) get
``STARTUP_RETRIES`` extra attempts plus the function's ``retries``; 5xx and lost
connections (the call may have run) only the function's ``retries``; all of
them stop at the call's deadline.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from ...errors import (BackendError, CallTimeoutError, OverloadedError, WorkerLostError, make_remote_error)
from ..base import CallOutcome, CallSpec, unpicklable_arguments
from . import envelope
from .api import VastAPI
from .errors import VastAPIError, VastNotFoundError, VastRejectedError

logger = logging.getLogger("vast_magic.vast")
ROUTE_TIMEOUT = 10.0
STARTUP_RETRIES = 3
MAX_DELAY = 5.0


def backoff(attempt: int, jitter: float) -> float:
    """``2 ** attempt + jitter`` seconds, at most ``MAX_DELAY``, for any number of attempts.

    The exponent is capped first: ``2 ** 1024`` is an int no float can hold (OverflowError
    once a worker had been awaited for 1024 polls), and past 2 ** 3 the cap decides anyway.
    """
    return min(2 ** min(max(attempt, 0), 8) + jitter, MAX_DELAY)


@dataclass(frozen=True)
class Endpoint:
    id: int
    name: str
    key: str


class Router:
    def __init__(self, api: VastAPI, *, sleep: Callable[[float], Any] | None = None,
                 jitter: Callable[[], float] = random.random):
        self.api = api
        self.sleep = sleep or api.sleep
        self.jitter = jitter
        self._endpoints: dict[int, Endpoint] = {}
        self.route_polls = 0

    async def endpoint(self, endpoint_id: int) -> Endpoint:
        cached = self._endpoints.get(endpoint_id)
        if cached is not None:
            return cached
        what = f"GET /api/v0/endptjobs/{endpoint_id}/"
        response = await self.api.request("GET", self.api.web(f"/api/v0/endptjobs/{endpoint_id}/"), what=what)
        result = (self.api.json(response, what) or {}).get("result") or {}
        name, key = result.get("endpoint_name"), result.get("api_key")
        if not name or not key:
            raise VastAPIError(f"{what}: the answer has no endpoint name or key; the endpoint may still be "
                               "starting: retry in a minute, or deploy again.")
        self.api.add_secret(key)
        self._endpoints[endpoint_id] = Endpoint(endpoint_id, str(name), str(key))
        return self._endpoints[endpoint_id]

    def forget(self, endpoint_id: int) -> None:
        self._endpoints.pop(endpoint_id, None)

    async def route(self, endpoint: Endpoint, cost: float, deadline: float, function: str) -> dict:
        """Post ``/route/`` until a worker is assigned (an answer with ``url``) or the deadline passes."""
        loop = asyncio.get_running_loop()
        request_idx, polls = 0, 0
        while True:
            body = {"endpoint": endpoint.name, "api_key": endpoint.key, "cost": cost,
                    "request_idx": request_idx, "replay_timeout": 60.0}
            left = deadline - loop.time()
            if left <= 0:
                raise CallTimeoutError(f"no Vast worker of endpoint {endpoint.name!r} became ready for {function} "
                                       "before its timeout; check app.status() or raise timeout= on @app.remote.")
            response = await self.api.request("POST", self.api.autoscaler("/route/"), what="POST /route/", json=body,
                                              key=endpoint.key, timeout=min(ROUTE_TIMEOUT, left), attempts=1)
            answer = self.api.json(response, "POST /route/")
            self.route_polls += 1
            if isinstance(answer, dict) and answer.get("url"):
                return answer
            if isinstance(answer, dict) and answer.get("request_idx") is not None:
                request_idx = answer["request_idx"]
            polls += 1
            if polls == 1:
                logger.info("waiting for a Vast worker of %s to be assigned to %s", endpoint.name, function)
            await self.sleep(min(self.wait_delay(polls), max(0.0, deadline - loop.time())))

    def wait_delay(self, polls: int) -> float:
        if polls <= 1:
            return 1.0
        return random.uniform(0.1, backoff(polls, self.jitter()))

    async def post(self, endpoint: Endpoint, route: dict, function: str, payload: dict, timeout: float) -> httpx.Response:
        url = f"{str(route['url']).rstrip('/')}/remote/{function}"
        body = {"auth_data": route, "session_id": None, "payload": payload}
        return await self.api.client().post(url, params={"api_key": endpoint.key}, json=body,
                                             headers=self.api.headers(endpoint.key), timeout=timeout)


async def call(router: Router, endpoint_id: int, spec: CallSpec, args: tuple, kwargs: dict,
               classes: dict | None) -> CallOutcome:
    """One call with routing and bounded retries; see the module docstring."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.timeout
    try:
        payload = {"kwargs": envelope.call_kwargs(args, kwargs, classes)}
    except Exception as exc:
        raise unpicklable_arguments(spec.function, exc) from exc
    resolve = {name: cls for cls, name in (classes or {}).items()}
    endpoint = await router.endpoint(endpoint_id)
    startup_left, after_start_left = STARTUP_RETRIES + spec.retries, spec.retries
    failures = 0
    while True:
        route = await router.route(endpoint, spec.cost, deadline, spec.function)
        try:
            response = await router.post(endpoint, route, spec.function, payload, max(0.01, deadline - loop.time()))
        except httpx.TimeoutException:
            raise CallTimeoutError(f"{spec.function} did not finish within its timeout of {spec.timeout:g}s on Vast; "
                                   "pass a larger timeout= to @app.remote.") from None
        except httpx.ConnectError as exc:
            retryable, startup_left, problem = startup_left > 0, startup_left - 1, _connect_problem(exc)
            error: BackendError = WorkerLostError(problem)
        except httpx.TransportError as exc:
            retryable, after_start_left = after_start_left > 0, after_start_left - 1
            error = WorkerLostError(f"the connection to the Vast worker running {spec.function} was lost "
                                    f"({type(exc).__name__}); set retries=N on @app.remote to retry such calls.")
        else:
            if response.status_code == 200:
                return decode_response(router.api, response, spec, resolve)
            retryable, error, startup_left, after_start_left = _classify(
                router.api, response, spec, startup_left, after_start_left)
        failures += 1
        delay = backoff(failures - 1, router.jitter())
        if not retryable or loop.time() + delay >= deadline:
            raise error
        logger.warning("%s: retry %d in %.1fs (%s)", spec.function, failures, delay, router.api.scrub(str(error)))
        await router.sleep(delay)


def _connect_problem(exc: Exception) -> str:
    return (f"could not connect to the Vast worker ({type(exc).__name__}); it may have been stopped. "
            "Retry, or check app.status().")


def _classify(api: VastAPI, response: httpx.Response, spec: CallSpec, startup_left: int,
              after_start_left: int) -> tuple[bool, BackendError, int, int]:
    status = response.status_code
    what = f"POST /remote/{spec.function}"
    if status == 429:
        error: BackendError = OverloadedError(f"{spec.function}: the Vast worker's queue is longer than its "
                                              "max_queue_time (HTTP 429); retry later or raise max_workers.")
        return startup_left > 0, error, startup_left - 1, after_start_left
    if status >= 500 or status == 408:
        error = api.error(response, what, 1)
        return after_start_left > 0, error, startup_left, after_start_left - 1
    if status == 404:
        error = VastNotFoundError(f"{what}: the worker has no function {spec.function!r} (HTTP 404); it runs another "
                                  "version: run app.ensure_ready() again.", status)
    elif status == 410:
        error = VastRejectedError(f"{what}: the worker rejected the session (HTTP 410).", status)
    else:
        error = api.error(response, what, 1)
    return False, error, startup_left, after_start_left


def decode_response(api: VastAPI, response: httpx.Response, spec: CallSpec, resolve: dict) -> CallOutcome:
    """``{"result": {"ok": <our envelope text>}}`` -> CallOutcome; official ``{"err": ...}`` too."""
    what = f"POST /remote/{spec.function}"
    body = api.json(response, what)
    result = body.get("result") if isinstance(body, dict) else None
    if isinstance(result, dict) and "ok" in result:
        try:
            return envelope.outcome_from_message(envelope.decode(result["ok"], resolve))
        except (envelope.EnvelopeError, AttributeError) as exc:
            raise BackendError(f"{what}: the worker's answer is not a vast_magic envelope ({exc}); is the "
                               "deployment running a bundle built by vast_magic? Deploy again.") from None
    if isinstance(result, dict) and "err" in result:
        return CallOutcome(error=_official_error(result["err"]))
    raise BackendError(f"{what}: unexpected answer from the worker: {api.scrub(response.text[:300])!r}.")


def _official_error(wire_error: Any) -> BaseException:
    """An exception in the official JSON wire (its message is lost there; reference 3.3)."""
    if isinstance(wire_error, dict) and wire_error.get("type") == "obj":
        module = ".".join((wire_error.get("module") or {}).get("path") or []) or "builtins"
        message = str((wire_error.get("contents") or {}).get("message") or "")
        return make_remote_error(f"{module}.{wire_error.get('class')}", message)
    return make_remote_error("builtins.Exception", str(wire_error))
