"""Security of the local engine with real processes: loopback only, token first, private files.

- every listening socket of the daemon and its workers is bound to 127.0.0.1
  (read from /proc/net/tcp{,6} and the processes' socket inodes);
- a worker refuses a connection that does not complete the mutual handshake
  (the old token hello, no proof, a wrong proof, an oversized hello) before
  anything is unpickled: a pickle that would create a marker file never does,
  and the token never leaves the worker (the handshake table: runtime/test_handshake.py);
- the home is 0700; token, state, engine info, secret key and logs are 0600;
- bundle extraction refuses chained symlinks that leave it, in either order,
  and strips setuid bits (the per-member table lives in test_bundles.py).
"""
from __future__ import annotations

import io
import os
import pickle
import socket
import stat
import struct
import tarfile
import threading
from pathlib import Path

import pytest

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.base import CallSpec
from vast_magic.backends.local import launcher
from vast_magic.backends.local.bundles import extracted_bundle
from vast_magic.errors import BundleError
from vast_magic.runtime import handshake


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _listening(inodes: set[str]) -> list[tuple[str, int]]:
    """(address, port) of every LISTEN socket (state 0A) among ``inodes``, IPv4 and IPv6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                text = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                text = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.append((text, int(port, 16)))
    return found


def test_engine_and_workers_listen_on_loopback_only(harness):
    harness.apply(plan(make_bundle(harness.folder), autoscaling={"cold_workers": 2, "max_workers": 2}))
    engine = launcher.running_engine(harness.home)
    workers = [w for w in harness.workers() if w.state == "ready"]
    assert len(workers) == 2
    for pid, expected_port in [(engine["pid"], engine["port"]), *((w.pid, w.port) for w in workers)]:
        bound = _listening(_socket_inodes(pid))
        assert (("127.0.0.1", expected_port) in bound) and all(addr == "127.0.0.1" for addr, _ in bound), (pid, bound)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _frame(main: bytes) -> bytes:
    return struct.pack("!IQ", 0, len(main)) + main


def _frame_prefix(answer: bytes) -> bytes:
    """The server's handshake answer (prefix, nonce, proof) when that is all it sent, else b"" (no match)."""
    expected = struct.pack("!IQ", 0, len(handshake.PREFIX) + 64) + handshake.PREFIX
    return answer if len(answer) == len(expected) + 64 and answer.startswith(expected) else b"-"


def test_worker_refuses_strangers_before_unpickling(harness, tmp_path):
    harness.apply(plan(make_bundle(harness.folder)))
    (worker,) = harness.workers()
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"op": "call", "id": 1, "fn": "square", "args": (_Evil(marker),), "kwargs": {}})
    token = launcher.load_token(harness.home)
    nonce = _frame(handshake.PREFIX + os.urandom(32))
    hellos = {
        "no hello, a pickle": b"",
        "the old token hello, right token": _frame(b"VMAG1 " + token.encode()),
        "a nonce, then a pickle instead of a proof": nonce,
        "a nonce, then the token as the proof": nonce + _frame(handshake.PREFIX + token.encode()),
        "a nonce, then a random proof": nonce + _frame(handshake.PREFIX + os.urandom(32)),
        "oversized hello": _frame(handshake.PREFIX + b"a" * 5000),
    }
    for case, hello in hellos.items():
        with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as sock:
            try:
                sock.sendall(hello + _frame(payload))
            except (BrokenPipeError, ConnectionResetError):
                pass                                   # closed while we were still sending: refused
            sock.settimeout(5)
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer in (b"", *(_frame_prefix(answer),)), (case, answer)   # nothing, or just its proof
            assert token.encode() not in answer
    assert not marker.exists()
    assert harness.call("square", 6) == 36          # the worker still serves its real clients


class _Squatter(threading.Thread):
    """Another local user's listener on a dead worker's port: records what it gets, answers like the old
    protocol (``OK``) and with a forged proof, each followed by a pickle that would create ``marker``."""

    def __init__(self, port: int, marker: Path):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.evil = _frame(pickle.dumps({"id": 1, "ok": True, "value": _Evil(marker), "output": []}))
        self.received: list[bytes] = []
        self.done = threading.Event()

    def run(self):
        answers = [_frame(b"OK"), _frame(handshake.PREFIX + os.urandom(64))]
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(1.0)
                conn.sendall(answers[len(self.received) % 2] + self.evil)
                data = b""
                try:
                    while chunk := conn.recv(4096):
                        data += chunk
                except (socket.timeout, ConnectionResetError):
                    pass
                self.received.append(data)

    def stop(self):
        self.done.set()
        self.join(5)
        self.sock.close()


async def _call_through_stale_route(backend, pool, route, x):
    """Inject the stale route and call at once (no await in between: no route push can replace it first)."""
    pool.set_routes([(route.worker, route.port, route.perf, route.version)])
    spec = CallSpec(name="demo", tag="default", function="square", timeout=30.0, max_queue_time=30.0)
    return (await backend.call(spec, (x,), {}, {})).value


def test_an_impostor_on_a_dead_workers_port_gets_no_token_and_no_pickle(harness, tmp_path):
    """The issue's reproduction: deploy, call, `engine stop`, bind the dead worker's port, call again."""
    harness.apply(plan(make_bundle(harness.folder)))
    assert harness.call("square", 3) == 9
    pool = harness.backend.pools[("demo", "default")]
    (route,) = pool.routes.values()
    launcher.engine_stop(harness.home)
    harness.wait_for(lambda: not pool.routes, timeout=10, what="the routes to go with the engine link")
    marker = tmp_path / "pwned"
    squatter = _Squatter(route.port, marker)
    squatter.start()
    try:
        for x in (4, 5):               # as if the loss had not been noticed yet: the stale route is tried first
            assert harness.run(_call_through_stale_route(harness.backend, pool, route, x)) == x * x   # re-routed
    finally:
        squatter.stop()
    token = launcher.load_token(harness.home).encode()
    hello = struct.pack("!IQ", 0, len(handshake.PREFIX) + 32) + handshake.PREFIX
    assert len(squatter.received) == 2                      # one answer of each kind was tried on the client
    for data in squatter.received:                          # a random nonce, and not one byte more
        assert len(data) == len(hello) + 32 and data.startswith(hello) and token not in data
    assert not marker.exists()
    assert route.port not in {w.port for w in harness.workers()}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_home_and_private_files_are_owner_only(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    home = harness.home
    assert harness.call("shout", "hi") == "HI"
    assert _mode(home) == 0o700
    logs = list((home / "logs").glob("*/*/*.log*"))              # logs/<name>/<tag>/<worker>.log[.N]
    private = [home / "token", home / "engine.json", home / "engine.log", *home.glob("state.db*"), *logs]
    assert len(logs) >= 1
    wrong = {str(p.relative_to(home)): oct(_mode(p)) for p in private if _mode(p) != 0o600}
    assert not wrong, wrong
    log_folders = [*(home / "logs").glob("*"), *(home / "logs").glob("*/*")]
    folders = {str(p.relative_to(home)): oct(_mode(p)) for p in [*home.iterdir(), *log_folders]
               if p.is_dir() and _mode(p) != 0o700}
    assert not folders, folders


def _tar(path: Path, members: list[tuple[str, bytes, str, int]]) -> Path:
    """members: (name, data, symlink target or "", mode)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("order", ["x first", "s1 first"])
def test_chained_symlinks_cannot_escape_and_leave_nothing_behind(tmp_path, order):
    """Each link alone stays inside (x -> ., s1 -> x/..) but together they point outside: refused in either
    archive order, before anything is written (the member table is in test_bundles.py)."""
    home = tmp_path / "home"
    links = [("x", b"", ".", 0o777), ("s1", b"", "x/..", 0o777)]
    tar = _tar(tmp_path / "chain.tar.gz", (links if order == "x first" else links[::-1]) +
               [("s1/evil", b"pwned", "", 0o644)])
    with pytest.raises(BundleError, match="leads outside the bundle"):
        extracted_bundle(home, tar)
    assert not list(tmp_path.rglob("evil")) and list((home / "bundles").iterdir()) == []


def test_extracted_files_lose_setuid_and_group_write(tmp_path):
    root = extracted_bundle(tmp_path / "home", _tar(tmp_path / "b.tar.gz", [("tool", b"#!/bin/sh\n", "", 0o6777)]))
    assert _mode(root / "tool") & 0o7022 == 0
