"""The mutual handshake: each side proves it holds the token before the other sends anything or unpickles.

Tables of hostile peers on both sides, with real sockets on 127.0.0.1:
- hostile clients (old token hello, garbage, a pickle, no proof, a wrong,
  reflected or replayed proof) are refused and nothing after their hello is
  ever read or unpickled;
- hostile servers (a squatter answering the old ``OK``, a forged proof, another
  home's server, a relay to a real server on another port, silence, a hang-up)
  make ``client_hello`` raise ``HandshakeError``, and all they ever received is
  one random nonce: no token, no proof, no request;
- the client needs exactly one answer from the server (one round trip), and
  the pre-auth gate keeps at most its limit of connections in their handshake.
"""
from __future__ import annotations

import asyncio
import errno
import os
import pickle
import socket
import struct

import pytest

from vast_magic.runtime import framing, handshake, wire

TOKEN = "s3cret-token-for-handshake-tests"
P = handshake.PREFIX


def _frame(main: bytes) -> bytes:
    return struct.pack("!IQ", 0, len(main)) + main


def _read_frame(sock: socket.socket) -> bytes:
    head = _recv_exactly(sock, 12)
    count, size = struct.unpack("!IQ", head)
    assert count == 0
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _drain(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except (ConnectionResetError, socket.timeout):
        pass
    return b"".join(chunks)


class _Bomb:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise AssertionError("unpickled data from an unauthenticated peer")


BOMB = _frame(pickle.dumps({"op": "call", "args": (_Bomb(),)}))


def _good_proof(port: int, nonce_c: bytes, answer: bytes) -> bytes:
    nonce_s = answer[len(P):len(P) + 32]
    return handshake.proof(TOKEN, handshake.CLIENT_LABEL, nonce_c, nonce_s, f"127.0.0.1:{port}".encode())


# each case: (first bytes, second message from the server's answer, or None) -- the bomb always follows
_replayed: list[bytes] = []
HOSTILE_CLIENTS = {
    "old token hello": (_frame(b"VMAG1 " + TOKEN.encode()), None),
    "short nonce": (_frame(P + b"x" * 8), None),
    "a pickle instead of a hello": (BOMB, None),
    "http request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
    "hello with a buffer": (struct.pack("!IQ", 1, 38) + struct.pack("!Q", 3) + P + os.urandom(32) + b"abc", None),
    "nothing at all": (b"", None),
    "no proof (silence)": (_frame(P + os.urandom(32)), lambda port, nonce, answer: b""),
    "wrong proof": (_frame(P + os.urandom(32)), lambda port, nonce, answer: _frame(P + os.urandom(32))),
    "the server's own proof reflected": (_frame(P + os.urandom(32)), lambda port, nonce, answer: _frame(P + answer[len(P) + 32:])),
    "a proof replayed from an earlier connection": (_frame(P + os.urandom(32)), lambda port, nonce, answer: _replayed[0]),
    "the old token as the proof": (_frame(P + os.urandom(32)), lambda port, nonce, answer: _frame(P + TOKEN.encode())),
}


def _hostile_client(port: int, first: bytes, second) -> tuple[bytes, bytes]:
    """Play one hostile client; return (the server's handshake answer, anything it sent after)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first)
        answer = b""
        if second is not None:
            answer = _read_frame(sock)
            sock.sendall(second(port, first[12 + len(P):], answer))
        try:
            sock.sendall(BOMB)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if second is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:      # ENOTCONN: the server refused first and its close reset the connection
                if exc.errno != errno.ENOTCONN:
                    raise
        return answer, _drain(sock)


def _legit_client(port: int) -> bytes:
    """A correct client done by hand; returns its proof frame (for the replay case)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        nonce = os.urandom(32)
        sock.sendall(_frame(P + nonce))
        answer = _read_frame(sock)
        proof = _frame(P + _good_proof(port, nonce, answer))
        sock.sendall(proof + _frame(b"after the proof"))
        assert _drain(sock) == b"welcome"
        return proof


def test_hostile_clients_are_refused_and_nothing_after_their_hello_is_read():
    async def scenario():
        outcomes: list[bool] = []

        async def handler(reader, writer):
            ok = await handshake.server_hello(reader, writer, TOKEN, timeout=1.0)
            outcomes.append(ok)
            if ok:
                main, _ = await framing.read_frame(reader)
                assert main == b"after the proof"        # a legit client: would unpickle now
                writer.write(b"welcome")
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _replayed.append(await asyncio.to_thread(_legit_client, port))
        results = {}
        for case, (first, second) in HOSTILE_CLIENTS.items():
            results[case] = await asyncio.to_thread(_hostile_client, port, first, second)
        server.close()
        return outcomes, results

    outcomes, results = asyncio.run(scenario())
    assert outcomes == [True] + [False] * len(HOSTILE_CLIENTS)
    for case, (answer, after) in results.items():
        assert after == b"", case                               # closed without another word
        assert TOKEN.encode() not in answer and len(answer) in (0, len(P) + 64), case


async def _until(condition, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` (bounded: the machine may be busy; nothing here is a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


class _Impostor:
    """A listener that is not a real server: records every byte it gets and answers per ``behaviour``."""

    def __init__(self, behaviour: str):
        self.behaviour, self.received = behaviour, b""

    async def handle(self, reader, writer):
        if self.behaviour == "forged proof":
            first = await reader.read(12 + len(P) + 32)
            self.received += first
            writer.write(_frame(P + os.urandom(64)) + BOMB)
        elif self.behaviour == "old OK":
            writer.write(_frame(b"OK") + BOMB)
        elif self.behaviour == "hang up":
            writer.close()
            return
        # "silence": answer nothing
        try:
            while chunk := await reader.read(4096):
                self.received += chunk
        except ConnectionError:
            pass
        writer.close()


async def _relay(target_port: int, seen: list):
    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)

        async def pump(src, dst):
            while data := await src.read(4096):
                seen.append(data)
                dst.write(data)
            dst.close()
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)
    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("kind, message", [
    ("old OK", "not a vast_magic engine or worker"),
    ("forged proof", "could not prove it holds"),
    ("silence", "closed or stalled"),
    ("hang up", "closed or stalled"),
    ("another home's server", "could not prove it holds"),
    ("relay to a real server", "could not prove it holds"),
])
def test_a_client_sends_nothing_to_a_server_that_cannot_prove_the_token(kind, message):
    async def scenario():
        real_refused = []

        async def real(reader, writer):
            real_refused.append(not await handshake.server_hello(reader, writer, TOKEN, timeout=1.0))
            writer.close()

        relayed: list[bytes] = []
        impostor = _Impostor(kind)
        if kind == "another home's server":
            server = await asyncio.start_server(
                lambda r, w: handshake.server_hello(r, w, "another-home-token"), "127.0.0.1", 0)
        elif kind == "relay to a real server":
            real_server = await asyncio.start_server(real, "127.0.0.1", 0)
            server = await _relay(real_server.sockets[0].getsockname()[1], relayed)
        else:
            server = await asyncio.start_server(impostor.handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        with pytest.raises(handshake.HandshakeError, match=message) as info:
            await handshake.client_hello(reader, writer, TOKEN, timeout=0.5)
        writer.close()
        await _until(lambda: real_refused or kind != "relay to a real server")
        server.close()
        return impostor.received, relayed, real_refused, info.value

    received, relayed, real_refused, error = asyncio.run(scenario())
    assert isinstance(error, PermissionError) and "nothing was sent" in str(error)
    hello_only = struct.pack("!IQ", 0, len(P) + 32) + P
    assert received == b"" or (len(received) == len(hello_only) + 32 and received.startswith(hello_only))
    if kind == "relay to a real server":
        client_bytes = relayed[0]
        assert len(client_bytes) == 12 + len(P) + 32          # only the client's nonce went through
        assert real_refused == [True]                          # and the real server never got a proof


def test_the_client_needs_one_answer_and_its_proof_rides_with_the_first_request():
    """One round trip: client_hello returns after reading exactly one frame; no 'OK' is awaited."""
    async def scenario():
        server_side: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            ok = await handshake.server_hello(reader, writer, TOKEN)
            server_side.set_result((ok, await framing.read_frame(reader)))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        await handshake.client_hello(reader, writer, TOKEN)
        assert reader._buffer == b""                             # nothing more was sent by the server
        main, buffers = wire.dumps({"op": "call", "id": 1})
        await framing.write_frame(writer, main, buffers)
        ok, (got, _) = await asyncio.wait_for(server_side, 5)
        writer.close()
        server.close()
        return ok, wire.loads(got)

    assert asyncio.run(scenario()) == (True, {"op": "call", "id": 1})


def test_proofs_are_compared_in_constant_time(monkeypatch):
    seen = []
    real = handshake.hmac.compare_digest
    monkeypatch.setattr(handshake.hmac, "compare_digest", lambda a, b: seen.append(len(a)) or real(a, b))

    async def scenario():
        server = await asyncio.start_server(lambda r, w: handshake.server_hello(r, w, TOKEN), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        await handshake.client_hello(reader, writer, TOKEN)
        await asyncio.sleep(0.1)
        writer.close()
        server.close()

    asyncio.run(scenario())
    assert seen == [32, 32]                                      # the server's proof, then the client's


def test_the_gate_keeps_at_most_its_limit_in_handshake_and_evicts_the_oldest():
    async def scenario():
        gate = handshake.PreAuthGate(TOKEN, limit=4, timeout=5.0)
        admitted = []

        async def handler(reader, writer):
            admitted.append(await gate.admit(reader, writer))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
        await _until(lambda: gate.evicted >= 6)
        peak, evicted = gate.pending, gate.evicted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await handshake.client_hello(reader, writer, TOKEN)      # a real client still gets through
        await asyncio.sleep(0.1)
        for _, w in idle:
            w.close()
        writer.close()
        await _until(lambda: len(admitted) == 11)
        server.close()
        return peak, evicted, admitted

    peak, evicted, admitted = asyncio.run(scenario())
    assert peak == 4 and evicted == 6
    assert admitted.count(True) == 1 and admitted.count(False) == 10


@pytest.mark.parametrize("token", ["", b""])
def test_an_empty_token_is_a_programming_error(token):
    with pytest.raises(ValueError, match="empty token"):
        handshake.PreAuthGate(token)

    async def scenario():
        with pytest.raises(ValueError, match="empty token"):
            await handshake.server_hello(asyncio.StreamReader(), None, token)
    asyncio.run(scenario())
