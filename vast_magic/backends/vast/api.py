"""The async httpx client for the Vast API: plumbing, bounded retries and error mapping.

Request plumbing follows the official SDK (reference 1.2 "Request plumbing"):
``Authorization: Bearer <key>``, ``User-Agent: vastai-sdk/1.9.1`` and the key
again as the ``api_key`` query parameter, a JSON body except for GET, and a
timeout on every attempt. Unlike the SDK, retries are bounded (408, 429, 5xx
and transport errors; the backends' one ``RetryPolicy``, ``min(2**n + jitter,
5)`` s apart) and each one is a visible ``Retry`` event. Final failures become
``errors.Vast*Error`` with a message that says what to do, scrubbed of every
key this client knows.

The ``httpx`` logger prints request URLs (which carry ``api_key=``) at INFO;
a filter installed here masks those values.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from ...errors import (VastAPIError, VastAuthError, VastNotFoundError, VastRateLimitedError, VastRejectedError,
                       VastUnavailableError)
from ...events import EventSink
from ..retry import Retryable, RetryPolicy

__all__ = ["SDK_VERSION", "USER_AGENT", "DEFAULT_WEBSERVER", "DEFAULT_AUTOSCALER", "RETRY_STATUSES", "VastAPI"]

SDK_VERSION = "1.9.1"
USER_AGENT = f"vastai-sdk/{SDK_VERSION}"
DEFAULT_WEBSERVER = "https://console.vast.ai"
DEFAULT_AUTOSCALER = "https://run.vast.ai"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']+")


class _RedactKeys(logging.Filter):
    """Masks ``api_key=...`` in httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message:
            record.msg, record.args = _KEY_IN_URL.sub(r"\1***", message), ()
        return True


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactKeys) for f in logger.filters):
            logger.addFilter(_RedactKeys())


_install_log_filter()


class _RetryableAnswer(Exception):
    """A 408/429/5xx answer, kept so the last one can be returned or turned into its error."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class VastAPI:
    """One authenticated client for the Vast webserver and autoscaler (one httpx client per event loop)."""

    def __init__(self, api_key: str, *, webserver_url: str = DEFAULT_WEBSERVER, autoscaler_url: str = DEFAULT_AUTOSCALER,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0,
                 sleep: Callable[[float], Awaitable[Any]] | None = None, jitter: Callable[[], float] = random.random):
        self._key = api_key
        self._secrets: set[str] = {api_key}
        self.webserver_url = webserver_url.rstrip("/")
        self.autoscaler_url = autoscaler_url.rstrip("/")
        self.transport = transport
        self.timeout = timeout
        self.sleep = sleep or asyncio.sleep
        self.retry = RetryPolicy(jitter=jitter, sleep=self.sleep)
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}

    def __repr__(self) -> str:
        return f"VastAPI(webserver_url={self.webserver_url!r}, autoscaler_url={self.autoscaler_url!r}, api_key='***')"

    @property
    def api_key(self) -> str:
        """The user's key, for request bodies that carry it (update_workers, get_endpoint_workers)."""
        return self._key

    def add_secret(self, value: str | None) -> None:
        """Another value to keep out of messages (an endpoint's own key)."""
        if value:
            self._secrets.add(value)

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return _KEY_IN_URL.sub(r"\1***", text)

    def web(self, path: str) -> str:
        return f"{self.webserver_url}{path}"

    def autoscaler(self, path: str) -> str:
        return f"{self.autoscaler_url}{path}"

    def client(self) -> httpx.AsyncClient:
        """The httpx client of the running loop (connection pools belong to one loop)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop or entry[1].is_closed:
            self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
            client = httpx.AsyncClient(transport=self.transport, timeout=self.timeout, follow_redirects=False)
            self._clients[id(loop)] = (loop, client)
            return client
        return entry[1]

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    def headers(self, key: str | None = None, *, bearer: bool = True) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if bearer:
            headers["Authorization"] = f"Bearer {key or self._key}"
        return headers

    async def request(self, method: str, url: str, *, what: str, json: Any = None, key: str | None = None,
                      query_key: bool = True, bearer: bool = True, timeout: float | None = None,
                      attempts: int | None = None, emit: EventSink | None = None) -> httpx.Response:
        """Send with retries; return the 2xx response or raise the mapped ``VastAPIError``."""
        params = {"api_key": key or self._key} if query_key else None
        send = lambda: self.client().request(  # noqa: E731
            method, url, params=params, headers=self.headers(key, bearer=bearer), json=json,
            timeout=timeout or self.timeout)
        return await self.with_retries(send, what=what, attempts=attempts, emit=emit)

    async def with_retries(self, send: Callable[[], Awaitable[httpx.Response]], *, what: str,
                           attempts: int | None = None, emit: EventSink | None = None,
                           raise_for_status: bool = True) -> httpx.Response:
        """Retry 408/429/5xx and transport errors; with ``raise_for_status=False`` return the last answer."""
        total = attempts or self.retry.attempts

        async def attempt() -> httpx.Response:
            try:
                response = await send()
            except httpx.TransportError as exc:
                reason = self.scrub(_transport_reason(exc))
                host = urlsplit(str(exc.request.url)).netloc if _has_request(exc) else "Vast"
                raise Retryable(VastUnavailableError(self.scrub(
                    f"{what}: could not reach {host} ({reason}) after {total} attempts; "
                    "check your network connection and retry.")), reason) from None
            if response.status_code in RETRY_STATUSES:
                raise Retryable(_RetryableAnswer(response), f"HTTP {response.status_code}")
            return response

        try:
            response = await self.retry.run(attempt, what=what, emit=emit, attempts=total)
        except _RetryableAnswer as last:
            if not raise_for_status:
                return last.response
            raise self.error(last.response, what, total) from None
        return self.check(response, what) if raise_for_status else response

    def check(self, response: httpx.Response, what: str) -> httpx.Response:
        if 200 <= response.status_code < 300:
            return response
        raise self.error(response, what, 1)

    def error(self, response: httpx.Response, what: str, attempts: int) -> VastAPIError:
        """The error for a final non-2xx answer, with advice and without secrets."""
        status = response.status_code
        detail = self.scrub(_short_text(response))
        detail = f": {detail}" if detail else ""
        if status in (401, 403):
            return VastAuthError(f"{what}: API key rejected (HTTP {status}){detail}; set VAST_API_KEY or pass "
                                 "api_key= to Deployment(...) with a valid Vast.ai key.", status)
        if status == 404:
            return VastNotFoundError(f"{what}: not found on Vast (HTTP 404){detail}. It may have been deleted; "
                                     "run app.ensure_ready() to deploy again.", status)
        if status == 429:
            return VastRateLimitedError(f"{what}: Vast is rate limiting requests (HTTP 429, {attempts} attempts); "
                                        "wait a minute and retry.", status)
        if status >= 500 or status == 408:
            return VastUnavailableError(f"{what}: Vast answered HTTP {status}{detail} after {attempts} attempts; "
                                        "the service is having trouble, retry in a few minutes.", status)
        return VastRejectedError(f"{what}: Vast rejected the request (HTTP {status}){detail}. Fix the setting "
                                 "named there (image, autoscaling, requirements) and deploy again.", status)

    def json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise VastAPIError(f"{what}: Vast answered HTTP {response.status_code} with a body that is not JSON: "
                               f"{self.scrub(_short_text(response))!r}; retry, or report it if it persists.",
                               response.status_code) from None


def _short_text(response: httpx.Response, limit: int = 300) -> str:
    try:
        text = response.text.strip()
    except Exception:
        return ""
    return text if len(text) <= limit else text[:limit] + "..."


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request
    except RuntimeError:
        return False
    return True


def _transport_reason(exc: httpx.TransportError) -> str:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    text = str(exc).strip()
    return f"{kind}: {text}" if text and kind != text else kind
