"""Calling a function on a Vast worker: endpoint lookup, ``/route/``, the worker POST (reference 3.1-3.2).

1. ``GET /api/v0/endptjobs/{endpoint_id}/`` gives the endpoint name and its own
   api key (cached per endpoint).
2. ``POST {autoscaler}/route/`` with the endpoint key until the answer carries
   a ``url``; bounded by the call's deadline (the official client waits forever).
   While it waits, Vast's ``status`` text goes into the outcome (``Waited``)
   and the timeout error quotes the last one.
   Our ``cost`` is the call's workload (the official client always sends 100).
3. ``POST <url>/remote/<function>?api_key=<endpoint key>`` with
   ``{"auth_data": <the whole /route/ answer>, "session_id": null, "payload": {"kwargs": {...}}}``.

Each attempt seals the call anew (``runtime/sealed.py``: a fresh nonce and
timestamp, the routed worker's URL and the manifest version the call expects).
During a rolling update (reference 8.6) a worker still on another version
answers a stale-version marker without running anything; the call then routes
again, up to ``STALE_RETRIES`` times.

Retries follow the backends' one ``RetryPolicy`` and are bounded: 429 and
refused connections (the call never started) get ``STARTUP_RETRIES`` extra
attempts plus the function's ``retries``; 5xx and lost connections (the call
may have run) only the function's ``retries``; stale versions their own
budget; all of them stop at the call's deadline. Each retry is a ``Retry``
event in the outcome, which the caller writes into its cell.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from ... import settings
from ...errors import (BackendError, CallTimeoutError, ConfigError, OverloadedError, VastAPIError, VastNotFoundError,
                       VastRejectedError, WorkerLostError, make_remote_error)
from ...events import Retry, Waited
from ..base import CallOutcome, CallSpec, unpicklable_arguments
from ..retry import Retryable
from . import envelope, trusted
from .api import VastAPI

__all__ = ["ROUTE_TIMEOUT", "STARTUP_RETRIES", "STALE_RETRIES", "Endpoint", "Router", "waiting_status",
           "route_timeout_message", "call", "decode_response", "check_size"]

logger = logging.getLogger("vast_magic.vast")
ROUTE_TIMEOUT = 10.0
STARTUP_RETRIES = 3
#: re-routes of a call that reached a worker still on another version (each one a Retry event)
STALE_RETRIES = 30
#: what the sealed text adds to the payload's base64 (prefix, header with the URL, signature), rounded up
_SEAL_OVERHEAD = 2048


@dataclass(frozen=True)
class Endpoint:
    id: int
    name: str
    key: str


class _CallFailure(Retryable):
    """A failed worker POST that may be retried; ``may_have_run`` picks the budget it draws on."""

    def __init__(self, error: BackendError, reason: str, may_have_run: bool):
        super().__init__(error, reason)
        self.may_have_run = may_have_run


class _Stale(Retryable):
    """The worker runs another version than the call expects: route again (a budget of its own)."""


class Router:
    def __init__(self, api: VastAPI):
        self.api = api
        self.retry = api.retry
        self._endpoints: dict[int, Endpoint] = {}

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

    async def route(self, endpoint: Endpoint, cost: float, deadline: float, function: str,
                    waits: list[Waited] | None = None) -> dict:
        """Post ``/route/`` until a worker is assigned (an answer with ``url``) or the deadline passes.

        A 200 answer without ``url`` means "waiting" (reference 8.3): its ``request_idx`` is sent back,
        and each new ``status`` text is appended to ``waits`` (the call's display) and quoted by the
        timeout error.
        """
        loop = asyncio.get_running_loop()
        started, request_idx, polls, last = loop.time(), 0, 0, None
        while True:
            body = {"endpoint": endpoint.name, "api_key": endpoint.key, "cost": cost,
                    "request_idx": request_idx, "replay_timeout": 60.0}
            left = deadline - loop.time()
            if left <= 0:
                raise CallTimeoutError(route_timeout_message(endpoint.name, function, loop.time() - started, last))
            response = await self.api.request("POST", self.api.autoscaler("/route/"), what="POST /route/", json=body,
                                              key=endpoint.key, timeout=min(ROUTE_TIMEOUT, left), attempts=1)
            answer = self.api.json(response, "POST /route/")
            if isinstance(answer, dict) and answer.get("url"):
                return answer
            if isinstance(answer, dict) and answer.get("request_idx") is not None:
                request_idx = answer["request_idx"]
            polls += 1
            status = waiting_status(answer)
            if status is not None and status != last:
                last = status
                logger.info("%s waits for a Vast worker of %s: %s", function, endpoint.name, status)
                if waits is not None:
                    waits.append(Waited(function, status, polls, loop.time() - started))
            await self.retry.sleep(min(self.wait_delay(polls), max(0.0, deadline - loop.time())))

    def wait_delay(self, polls: int) -> float:
        """The official client's wait between ``/route/`` polls, with the policy's (injectable) randomness."""
        return self.retry.poll_delay(polls)

    async def post(self, endpoint: Endpoint, route: dict, function: str, payload: dict, timeout: float) -> httpx.Response:
        url = f"{str(route['url']).rstrip('/')}/remote/{function}"
        body = {"auth_data": route, "session_id": None, "payload": payload}
        return await self.api.client().post(url, params={"api_key": endpoint.key}, json=body,
                                             headers=self.api.headers(endpoint.key), timeout=timeout)


def waiting_status(answer: Any) -> str | None:
    """The ``status`` text of a ``/route/`` answer without ``url`` (None when it gives none)."""
    status = answer.get("status") if isinstance(answer, dict) else None
    text = str(status).strip() if status is not None else ""
    return text[:300] or None


def route_timeout_message(endpoint: str, function: str, waited: float, status: str | None) -> str:
    said = f"Vast's last /route/ answer said: {status!r}" if status else "Vast's /route/ answers gave no status"
    return (f"no Vast worker of endpoint {endpoint!r} became ready for {function} before its timeout (waited "
            f"{waited:.1f}s); {said}. Check app.status(), or raise timeout= on @app.remote.")


async def call(router: Router, endpoint_id: int, spec: CallSpec, args: tuple, kwargs: dict,
               classes: dict | None, key: bytes, may_send: Callable[[], bool] | None = None,
               collect: bool = False) -> CallOutcome:
    """One call with routing and bounded retries; see the module docstring. ``may_send`` is asked just
    before each worker POST (from then on the call may run, whatever happens here): False means the call
    was cancelled, and nothing is sent. ``collect``: a stream's items gathered by the worker (sealed)."""
    deadline = asyncio.get_running_loop().time() + spec.timeout
    try:
        message = envelope.request_payload(args, kwargs, classes, collect)
    except Exception as exc:
        raise unpicklable_arguments(spec.function, exc) from exc
    check_size(spec.function, len(message), settings.resolve("vast_max_request_bytes"))
    digest = hashlib.sha256(message).hexdigest()
    resolve = {name: cls for cls, name in (classes or {}).items()}
    endpoint = await router.endpoint(endpoint_id)
    budget = {False: STARTUP_RETRIES + spec.retries, True: spec.retries, "stale": STALE_RETRIES}
    attempts_shown = 1 + budget[False] + budget[True]      # the attempts shown: stale re-routes add one each
    retries: list[Retry] = []
    waits: list[Waited] = []

    def allow(failure: Retryable) -> bool:
        nonlocal attempts_shown
        kind = "stale" if isinstance(failure, _Stale) else isinstance(failure, _CallFailure) and failure.may_have_run
        budget[kind] -= 1
        attempts_shown += kind == "stale" and budget[kind] >= 0
        return budget[kind] >= 0

    async def attempt() -> CallOutcome:
        route = await router.route(endpoint, spec.cost, deadline, spec.function, waits)
        if may_send is not None and not may_send():
            raise asyncio.CancelledError
        payload = {"kwargs": envelope.call_kwargs(key, message, function=spec.function, version=spec.version,
                                                  url=str(route.get("url") or ""), digest=digest)}
        return decode_response(router.api, await _post(router, endpoint, route, spec, payload, deadline), spec, resolve)

    outcome = await router.retry.run(attempt, what=spec.function, emit=retries.append,
                                     attempts=lambda: attempts_shown, allow=allow, deadline=deadline)
    return dataclasses.replace(outcome, retries=tuple(retries), waits=tuple(waits)) if retries or waits else outcome


async def _post(router: Router, endpoint: Endpoint, route: dict, spec: CallSpec, payload: dict,
                deadline: float) -> httpx.Response:
    """The worker POST; a failure worth retrying is a ``_CallFailure``, a timeout or refusal is final."""
    try:
        response = await router.post(endpoint, route, spec.function, payload,
                                     max(0.01, deadline - asyncio.get_running_loop().time()))
    except httpx.TimeoutException:
        raise CallTimeoutError(f"{spec.function} did not finish within its timeout of {spec.timeout:g}s on Vast; "
                               "pass a larger timeout= to @app.remote.") from None
    except httpx.ConnectError as exc:
        raise _CallFailure(WorkerLostError(_connect_problem(exc)), type(exc).__name__, may_have_run=False) from None
    except httpx.TransportError as exc:
        raise _CallFailure(WorkerLostError(
            f"the connection to the Vast worker running {spec.function} was lost ({type(exc).__name__}); set "
            "retries=N on @app.remote to retry such calls."), type(exc).__name__, may_have_run=True) from None
    if response.status_code != 200:
        raise _refusal(router.api, response, spec)
    return response


def check_size(function: str, payload_bytes: int, limit: int) -> None:
    """Refuse before sending a call the workers would refuse (they check the same limit)."""
    sealed_bytes = 4 * ((payload_bytes + 2) // 3) + _SEAL_OVERHEAD
    if sealed_bytes > limit:
        raise ConfigError(f"the arguments of {function} take {sealed_bytes} bytes once sealed, over the "
                          f"{limit} bytes a Vast worker accepts (setting vast_max_request_bytes); nothing was sent. "
                          "Pass less data per call, or raise the setting and run app.ensure_ready() again.")


def _connect_problem(exc: Exception) -> str:
    return (f"could not connect to the Vast worker ({type(exc).__name__}); it may have been stopped. "
            "Retry, or check app.status().")


def _refusal(api: VastAPI, response: httpx.Response, spec: CallSpec) -> Exception:
    """The error for a worker's non-200 answer: a ``_CallFailure`` when a retry may help."""
    status = response.status_code
    what = f"POST /remote/{spec.function}"
    if status == 429:
        return _CallFailure(OverloadedError(f"{spec.function}: the Vast worker's queue is longer than its "
                                            "max_queue_time (HTTP 429); retry later or raise max_workers."),
                            "HTTP 429", may_have_run=False)
    if status >= 500 or status == 408:
        return _CallFailure(api.error(response, what, 1), f"HTTP {status}", may_have_run=True)
    if status == 404:
        return VastNotFoundError(f"{what}: the worker has no function {spec.function!r} (HTTP 404); it runs another "
                                 "version: run app.ensure_ready() again.", status)
    if status == 413:
        return VastRejectedError(f"{what}: the call is larger than the Vast worker accepts (HTTP 413); pass less "
                                 "data per call, or raise vast_max_request_bytes and run app.ensure_ready() again.",
                                 status)
    if status == 410:
        return VastRejectedError(f"{what}: the worker rejected the session (HTTP 410).", status)
    return api.error(response, what, 1)


def decode_response(api: VastAPI, response: httpx.Response, spec: CallSpec, resolve: dict) -> CallOutcome:
    """``{"result": {"ok": <our envelope text>}}`` -> CallOutcome; official ``{"err": ...}`` too."""
    what = f"POST /remote/{spec.function}"
    body = api.json(response, what)
    result = body.get("result") if isinstance(body, dict) else None
    if isinstance(result, dict) and "ok" in result:
        other = envelope.stale_version(result["ok"])
        if other is not None:
            raise _Stale(CallTimeoutError(
                f"{spec.function}: every Vast worker reached before its timeout of {spec.timeout:g}s still ran "
                f"version {other[:12] or '(none)'}, not {str(spec.version)[:12]}, which ensure_ready() deployed; the "
                "rolling update has not finished. Retry later, raise timeout=, or check app.status()."),
                f"worker runs version {other[:12] or '(none)'}, expected {str(spec.version)[:12]}")
        try:
            message = envelope.decode(result["ok"], resolve, trusted.TypePolicy(spec.trusted_types))
            return envelope.outcome_from_message(message)
        except (envelope.EnvelopeError, AttributeError) as exc:
            raise BackendError(f"{what}: the worker's answer is not a vast_magic envelope ({exc}); is the "
                               "deployment running a bundle built by vast_magic? Deploy again.") from None
    if isinstance(result, dict) and "err" in result:
        return CallOutcome(error=_official_error(result["err"]))
    raise BackendError(f"{what}: unexpected answer from the worker: {api.scrub(response.text[:300])!r}.")


def _official_error(wire_error: Any) -> BaseException:
    """An exception in the official JSON wire (reference 3.3), its message read from ``args``.

    The stock encoder sends only ``__dict__``; our shim puts the exception's args
    there (``bundle.vast_entry``), other workers send none and the message is empty.
    """
    if isinstance(wire_error, dict) and wire_error.get("type") == "obj":
        module = ".".join((wire_error.get("module") or {}).get("path") or []) or "builtins"
        message = _official_message(wire_error.get("contents"))
        return make_remote_error(f"{module}.{wire_error.get('class')}", message, import_modules=False)
    return make_remote_error("builtins.Exception", str(wire_error), import_modules=False)


def _official_message(contents: Any) -> str:
    """``str(exc)`` of an exception whose ``__dict__`` the stock encoder sent: from its ``args`` tuple, if any."""
    args = contents.get("args") if isinstance(contents, dict) else None
    items = args.get("contents") if isinstance(args, dict) and args.get("type") in ("tuple", "list") else None
    if not isinstance(items, list):
        return ""
    items = [item if isinstance(item, (str, int, float)) or item is None
             else f"<{item.get('type') if isinstance(item, dict) else type(item).__name__}>" for item in items]
    return str(items[0]) if len(items) == 1 else str(tuple(items)) if items else ""
