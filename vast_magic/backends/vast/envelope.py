"""Our ``__vast_magic__`` envelope inside the official JSON wire (reference 3.1-3.3).

The official worker passes every ``payload.kwargs`` value through its JSON wire
format, which keeps a ``str`` as it is. So a call sends one extra keyword,
``__vast_magic__``: a packed pickle-5 message (the runtime's ``wire.dumps``:
main pickle plus out-of-band buffers, laid out like a frame: ``"!IQ"`` =
(number of buffers, main length), one ``"!Q"`` per buffer, main, buffers),
sealed with the deployment's envelope key (``runtime/sealed.py``: HMAC-SHA256
over its digest, the function, the worker URL, the expected manifest version,
a timestamp and a nonce), which the shim checks before it unpickles anything.
The request message is ``{"args": tuple, "kwargs": dict}``; the generated shim
answers with base64 text of a packed message holding
``{"ok": True, "value": v, "output": [...]}`` or
``{"ok": False, "error": ErrorEnvelope, "output": [...]}`` (docs/internals.md).
Answers are decoded with the restricted unpickler of ``trusted.py``.
"""
from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Mapping

from ...runtime import sealed, wire
from ..base import CallOutcome, outcome_from_response
from . import trusted

__all__ = [
    "PARAM", "EnvelopeError", "pack", "unpack", "encode", "decode", "request_payload", "call_kwargs", "stale_version",
    "outcome_from_message", "answer"
]

PARAM = "__vast_magic__"
_HEADER = struct.Struct("!IQ")
_LENGTH = struct.Struct("!Q")


class EnvelopeError(ValueError):
    """The worker's answer is not one of our envelopes."""


def pack(main: bytes, buffers=()) -> bytes:
    parts = [_HEADER.pack(len(buffers), len(main))]
    parts += [_LENGTH.pack(memoryview(b).nbytes) for b in buffers]
    parts.append(bytes(main))
    parts += [bytes(memoryview(b).cast("B")) for b in buffers]
    return b"".join(parts)


def unpack(blob: bytes) -> tuple[bytes, list[memoryview]]:
    view = memoryview(blob)
    try:
        count, size = _HEADER.unpack_from(view, 0)
        offset = _HEADER.size
        lengths = [_LENGTH.unpack_from(view, offset + i * _LENGTH.size)[0] for i in range(count)]
    except struct.error as exc:
        raise EnvelopeError(f"truncated envelope header ({exc})") from None
    offset += count * _LENGTH.size
    if offset + size + sum(lengths) != len(view):
        raise EnvelopeError("envelope length does not match its header")
    main = bytes(view[offset:offset + size])
    offset += size
    buffers = []
    for length in lengths:
        buffers.append(view[offset:offset + length])
        offset += length
    return main, buffers


def encode(obj: Any, class_refs: Mapping[type, str] | None = None) -> str:
    main, buffers = wire.dumps(obj, class_refs)
    return base64.b64encode(pack(main, buffers)).decode("ascii")


def decode(text: str, resolve_class: Mapping[str, type] | None = None, policy: trusted.TypePolicy | None = None) -> Any:
    """Inverse of ``encode``. With ``policy`` (every answer from a Vast worker) only the types it allows
    are unpickled (``trusted.py``); without it, full pickle (the worker side, which trusts its caller)."""
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"not base64 ({exc})") from None
    main, buffers = unpack(blob)
    if policy is not None:
        return trusted.loads(main, buffers, resolve_class, policy)
    return wire.loads(main, buffers, resolve_class)


def request_payload(args: tuple, kwargs: dict, class_refs: Mapping[type, str] | None = None,
                    collect: bool = False) -> bytes:
    """The packed request message, pickled once per call (each attempt seals it anew). ``collect``: the
    function is a generator whose items the worker gathers into one answer (``runtime/streaming.py``);
    the flag travels inside the sealed payload like the arguments."""
    message = {"args": tuple(args), "kwargs": dict(kwargs)}
    if collect:
        message["collect"] = True
    main, buffers = wire.dumps(message, class_refs)
    return pack(main, buffers)


def call_kwargs(key: bytes, payload: bytes, *, function: str, version: str | None, url: str = "",
                digest: str | None = None) -> dict[str, str]:
    """The ``payload.kwargs`` of a worker call: only our envelope, sealed for this worker and moment."""
    return {PARAM: sealed.seal(key, payload, function=function, version=version, url=url, digest=digest)}


def stale_version(value: Any) -> str | None:
    """The worker's own version when its answer says it runs another version than the call expects."""
    if isinstance(value, str) and value.startswith(sealed.STALE):
        return value[len(sealed.STALE):]
    return None


def outcome_from_message(message: Any) -> CallOutcome:
    """A decoded answer message -> CallOutcome (a remote exception becomes our RemoteError subclass).

    The executor's own refusals are raised: overloaded -> OverloadedError, its
    per-call timeout -> CallTimeoutError. The error's type name never makes us
    import a module (a Vast worker is a third party).
    """
    if not isinstance(message, dict) or "ok" not in message:
        raise EnvelopeError(f"unexpected message of type {type(message).__name__}")
    return outcome_from_response(message, import_modules=False)


def answer(message: dict, class_refs: Mapping[type, str] | None = None) -> str:
    """Encode an answer message (what the worker-side shim returns; used by the fake Vast API too)."""
    return encode(message, class_refs)
