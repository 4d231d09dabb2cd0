"""Signed envelopes: what a Vast worker checks before it unpickles a single byte of a call.

The stock Vast worker signs only the worker URL, accepts a replayed
``auth_data`` with any payload and has no body limit (reference 8.7, weakness
15), and our envelope is a pickle. So every envelope is sealed by the client
with the deployment's envelope key (32 random bytes per deployment, delivered
to its workers as the secret ``VAST_MAGIC_ENVELOPE_KEY``) and opened by the
worker-side shim in this order, all before any unpickling:

1. size: the text is at most ``max_bytes`` (``VAST_MAGIC_MAX_REQUEST_BYTES``,
   default 64 MiB; the shim also caps the worker's HTTP body at that size);
2. form: ``vm2.<header>.<mac>.<payload>``, header as canonical JSON;
3. MAC: HMAC-SHA256 over the header, compared with ``hmac.compare_digest``;
4. header: payload digest (SHA-256), function name and worker URL match;
   the timestamp is within ``max_age`` seconds of the worker's clock;
5. nonce: never seen before on this worker (a heap of the nonces younger
   than ``max_age``, at most ``max_nonces``; when full, the oldest is dropped
   and every envelope no newer than it is refused from then on).

The header also carries the manifest version the caller expects; the shim
answers ``STALE`` plus its own version, without running anything, when it
differs (rolling updates, reference 8.6). This module is shipped in every
bundle (``vast_magic_runtime.sealed``) and used by the client as well.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "PREFIX", "STALE", "KEY_ENV", "MAX_BYTES_ENV", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_AGE", "DEFAULT_MAX_NONCES",
    "Refused", "Header", "new_key", "seal", "Opener", "worker_url", "max_bytes_from_env"
]

PREFIX = "vm2."
#: answer of a worker whose version is not the one the call expects; its own version follows
STALE = "vast_magic:stale-version:"
KEY_ENV = "VAST_MAGIC_ENVELOPE_KEY"
MAX_BYTES_ENV = "VAST_MAGIC_MAX_REQUEST_BYTES"
DEFAULT_MAX_BYTES = 64 * 2 ** 20
DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_NONCES = 100_000
_DOMAIN = b"vast_magic-envelope-2\n"
_HEADER_LIMIT = 4096


class Refused(PermissionError):
    """An envelope the worker will not open. ``message`` is in ``__dict__`` so the stock JSON wire keeps it."""

    def __init__(self, reason: str):
        self.message = f"vast_magic envelope refused: {reason}"
        super().__init__(self.message)


@dataclass(frozen=True)
class Header:
    digest: str          # SHA-256 of the payload bytes, hex
    function: str
    nonce: str
    time: float
    url: str             # the worker the client routed to ("" when it did not know)
    version: str | None  # manifest version the caller expects (None: any)

    def to_bytes(self) -> bytes:
        data = {"d": self.digest, "fn": self.function, "n": self.nonce, "t": self.time, "u": self.url,
                "v": self.version}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Header":
        data = json.loads(raw)
        header = cls(str(data["d"]), str(data["fn"]), str(data["n"]), float(data["t"]), str(data["u"]),
                     None if data["v"] is None else str(data["v"]))
        if not 16 <= len(header.nonce) <= 64:
            raise ValueError("nonce length")
        return header


def new_key() -> bytes:
    return secrets.token_bytes(32)


def _mac(key: bytes, header: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + header, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, payload: bytes, *, function: str, version: str | None, url: str = "",
         now: float | None = None, nonce: str | None = None, digest: str | None = None) -> str:
    """The envelope text for ``payload`` (pass ``digest`` when sealing the same payload again)."""
    header = Header(digest or hashlib.sha256(payload).hexdigest(), function, nonce or secrets.token_hex(16),
                    time.time() if now is None else now, url.rstrip("/"), version).to_bytes()
    return ".".join([PREFIX[:-1], _b64(header), _b64(_mac(key, header)), base64.b64encode(payload).decode("ascii")])


class Opener:
    """The worker side: checks (``check``), remembers nonces (``claim``); see the module docstring."""

    def __init__(self, key: bytes, *, url: str = "", max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age: float = DEFAULT_MAX_AGE, max_nonces: int = DEFAULT_MAX_NONCES,
                 clock: Callable[[], float] = time.time):
        self.key, self.url, self.max_bytes = key, url.rstrip("/"), max_bytes
        self.max_age, self.max_nonces, self.clock = max_age, max_nonces, clock
        self._heap: list[tuple[float, str]] = []
        self._seen: set[str] = set()
        self._floor = float("-inf")     # envelopes no newer than this are refused (nonces forgotten when full)

    def check(self, text: object, function: str) -> tuple[Header, bytes]:
        """Header and payload bytes of a valid, fresh envelope; ``Refused`` otherwise. Changes nothing and
        does not look at the nonce (``claim`` does)."""
        if not isinstance(text, str):
            raise Refused(f"expected text, got {type(text).__name__}")
        if len(text) > self.max_bytes:
            raise Refused(f"{len(text)} bytes is over this worker's limit of {self.max_bytes} ({MAX_BYTES_ENV})")
        parts = text.split(".")
        if len(parts) != 4 or parts[0] + "." != PREFIX or len(parts[1]) > _HEADER_LIMIT:
            raise Refused("not a signed vast_magic envelope (unsigned, or from an older vast_magic)")
        try:
            raw, mac = _unb64(parts[1]), _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise Refused("malformed header") from None
        if not hmac.compare_digest(mac, _mac(self.key, raw)):
            raise Refused(f"bad signature (wrong key, tampered header, or a worker without {KEY_ENV})")
        header = self._header(raw)
        try:
            payload = base64.b64decode(parts[3].encode("ascii"), validate=True)
        except (binascii.Error, ValueError):
            raise Refused("payload is not base64") from None
        if not hmac.compare_digest(hashlib.sha256(payload).hexdigest(), header.digest):
            raise Refused("payload does not match its signed digest (tampered)")
        if header.function != function:
            raise Refused(f"signed for function {header.function!r}, sent to {function!r}")
        if self.url and header.url and header.url != self.url:
            raise Refused(f"signed for worker {header.url}, not this one ({self.url})")
        age = self.clock() - header.time
        if abs(age) > self.max_age:
            raise Refused(f"timestamp is {age:+.0f}s from this worker's clock (limit {self.max_age:g}s); "
                          "check the client's clock")
        return header, payload

    @staticmethod
    def _header(raw: bytes) -> Header:
        try:
            return Header.from_bytes(raw)
        except (ValueError, KeyError, TypeError):
            raise Refused("malformed header") from None

    def seen(self, header: Header) -> bool:
        return header.time <= self._floor or header.nonce in self._seen

    def claim(self, header: Header) -> None:
        """Remember the nonce (``Refused`` if it was used); synchronous, so no two requests both pass."""
        if self.seen(header):
            raise Refused("replayed (this nonce was already used)")
        horizon = self.clock() - self.max_age
        while self._heap and (self._heap[0][0] < horizon or len(self._heap) >= self.max_nonces):
            old_time, old_nonce = heapq.heappop(self._heap)
            self._seen.discard(old_nonce)
            if old_time >= horizon:        # dropped while still fresh: refuse everything as old as it
                self._floor = max(self._floor, old_time)
        heapq.heappush(self._heap, (header.time, header.nonce))
        self._seen.add(header.nonce)

    def open(self, text: object, function: str) -> tuple[Header, bytes]:
        """``check`` then ``claim``: what a call does before unpickling the payload."""
        header, payload = self.check(text, function)
        self.claim(header)
        return header, payload


def worker_url(environ: dict | None = None) -> str:
    """The URL the stock worker reports (and the autoscaler routes to); "" when the variables are missing."""
    env = os.environ if environ is None else environ
    port = env.get("WORKER_PORT")
    public, ip = env.get(f"VAST_TCP_PORT_{port}") if port else None, env.get("PUBLIC_IPADDR")
    if not (public and ip):
        return ""
    return f"http{'s' if env.get('USE_SSL', 'false') == 'true' else ''}://{ip}:{public}"


def max_bytes_from_env(environ: dict | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        value = int(env.get(MAX_BYTES_ENV) or DEFAULT_MAX_BYTES)
    except ValueError:
        return DEFAULT_MAX_BYTES
    return value if value > 0 else DEFAULT_MAX_BYTES
