"""Mutual authentication that opens every engine and worker connection, in one round trip.

Both sides hold the engine token; neither sends it. The client sends a fresh
nonce; the server answers its own nonce and a proof ``HMAC-SHA256(token,
SERVER_LABEL | nonce_c | nonce_s | endpoint)``; the client checks that proof
and only then sends its own (``CLIENT_LABEL``, same transcript) followed at
once by its first request. The server checks the client's proof before it
reads, let alone unpickles, anything else. So:

- a listener that squats a dead worker's port learns a random nonce, nothing
  more: no token, no arguments, and nothing it answers is unpickled;
- the labels differ, so a proof cannot be reflected back to its author;
- ``endpoint`` is the server's own address (``host:port`` as the server sees
  its socket and as the client dialled it), so a relay on another port that
  forwards the handshake to a real worker fails the client's check.

After the handshake the connection is trusted for its lifetime: loopback TCP
cannot be injected into by another unprivileged user. The cost is the same one
round trip the old token hello had; the client's proof rides with its first
request. A server admits at most ``MAX_PRE_AUTH`` connections in their
handshake at once (a new one evicts the oldest) and gives each
``PRE_AUTH_TIMEOUT`` seconds, so idle connections cannot pile up.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os

from . import framing

__all__ = ['CLIENT_LABEL', 'CLIENT_TIMEOUT', 'HandshakeError', 'MAC_BYTES', 'MAX_HELLO_BYTES', 'MAX_PRE_AUTH', 'NONCE_BYTES', 'PREFIX', 'PRE_AUTH_TIMEOUT', 'PreAuthGate', 'SERVER_LABEL', 'client_hello', 'endpoint_of', 'proof', 'server_hello']

PREFIX = b"VMAG2 "
NONCE_BYTES = 32
MAC_BYTES = 32
SERVER_LABEL = b"vast-magic/2 server proof\x00"
CLIENT_LABEL = b"vast-magic/2 client proof\x00"
MAX_HELLO_BYTES = 256
PRE_AUTH_TIMEOUT = 3.0      # server: the whole handshake; a real client needs one round trip
CLIENT_TIMEOUT = 10.0       # client: waiting for the server's proof (a busy worker may answer late)
MAX_PRE_AUTH = 128          # connections a server keeps in their handshake at once


class HandshakeError(PermissionError):
    """The peer did not prove it holds the token; nothing secret was sent to it."""


def proof(token, label: bytes, nonce_c: bytes, nonce_s: bytes, endpoint: bytes) -> bytes:
    return hmac.new(_token_bytes(token), label + nonce_c + nonce_s + endpoint, hashlib.sha256).digest()


def endpoint_of(address) -> bytes:
    """``("127.0.0.1", 4242, ...)`` -> ``b"127.0.0.1:4242"`` (the server's listening address)."""
    if not isinstance(address, tuple) or len(address) < 2:
        raise HandshakeError(f"cannot authenticate a connection without a TCP address ({address!r})")
    return f"{address[0]}:{int(address[1])}".encode()


async def _read_hello(reader: asyncio.StreamReader, size: int, timeout: float) -> bytes:
    main, _ = await asyncio.wait_for(framing.read_frame(reader, max_bytes=MAX_HELLO_BYTES, max_buffers=0), timeout)
    if len(main) != len(PREFIX) + size or not main.startswith(PREFIX):
        raise HandshakeError(f"unexpected handshake message {main[:16]!r}... ({len(main)} bytes)")
    return main[len(PREFIX):]


async def client_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token,
                       timeout: float = CLIENT_TIMEOUT) -> None:
    """Make the server prove it holds the token, then prove it ourselves; raise HandshakeError otherwise.

    Returns as soon as our proof is written: the caller's first request follows
    it without waiting for another answer (one round trip per connection).
    """
    endpoint = endpoint_of(writer.get_extra_info("peername"))
    where = endpoint.decode()
    nonce_c = os.urandom(NONCE_BYTES)
    try:
        await framing.write_frame(writer, PREFIX + nonce_c)
        answer = await _read_hello(reader, NONCE_BYTES + MAC_BYTES, timeout)
    except HandshakeError as exc:
        raise HandshakeError(f"the server on {where} is not a vast_magic engine or worker of this home ({exc}); "
                             "nothing was sent to it") from None
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, framing.FrameError) as exc:
        raise HandshakeError(f"the server on {where} closed or stalled the handshake ({type(exc).__name__}); "
                             "nothing was sent to it") from None
    nonce_s, mac = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    if not hmac.compare_digest(mac, proof(token, SERVER_LABEL, nonce_c, nonce_s, endpoint)):
        raise HandshakeError(f"the server on {where} could not prove it holds this home's token (a stale "
                             "address now used by another process?); nothing was sent to it")
    await framing.write_frame(writer, PREFIX + proof(token, CLIENT_LABEL, nonce_c, nonce_s, endpoint))


async def server_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token,
                       timeout: float = PRE_AUTH_TIMEOUT) -> bool:
    """Prove we hold the token and check the client's proof; False (caller closes) on any failure or timeout."""
    _token_bytes(token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        endpoint = endpoint_of(writer.get_extra_info("sockname"))
        nonce_c = await _read_hello(reader, NONCE_BYTES, timeout)
        nonce_s = os.urandom(NONCE_BYTES)
        await framing.write_frame(writer, PREFIX + nonce_s + proof(token, SERVER_LABEL, nonce_c, nonce_s, endpoint))
        mac = await _read_hello(reader, MAC_BYTES, max(0.0, deadline - loop.time()))
    except (HandshakeError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, framing.FrameError):
        return False
    return hmac.compare_digest(mac, proof(token, CLIENT_LABEL, nonce_c, nonce_s, endpoint))


class PreAuthGate:
    """Bounds the connections in their handshake: at most ``limit``; a new one evicts the oldest.

    Evicting (rather than refusing newcomers) keeps a flood of idle sockets from
    locking real clients out: their handshake takes a millisecond, so they are
    almost never the oldest.
    """

    def __init__(self, token, limit: int = MAX_PRE_AUTH, timeout: float = PRE_AUTH_TIMEOUT):
        _token_bytes(token)
        self.token, self.limit, self.timeout = token, limit, timeout
        self._pending: dict[asyncio.StreamWriter, None] = {}      # insertion-ordered: oldest first
        self.evicted = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        while len(self._pending) >= self.limit:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest)
            self.evicted += 1
            oldest.close()                     # its handshake read ends with EOF: refused
        self._pending[writer] = None
        try:
            return await server_hello(reader, writer, self.token, self.timeout)
        finally:
            self._pending.pop(writer, None)


def _token_bytes(token) -> bytes:
    data = token.encode() if isinstance(token, str) else bytes(token)
    if not data:
        raise ValueError("an empty token authenticates nothing")
    return data
