"""Security of the local engine with real processes: loopback only, token first, private files.

- every listening socket of the daemon and its workers is bound to 127.0.0.1
  (read from /proc/net/tcp{,6} and the processes' socket inodes);
- a worker refuses a connection without (or with a wrong, or an oversized)
  token before anything is unpickled: a pickle that would create a marker
  file never does;
- the hello is compared with ``hmac.compare_digest`` (constant time);
- the home is 0700; token, state, engine info, secret key and logs are 0600;
- bundle extraction survives chained symlinks and strips setuid bits (the
  per-member table lives in test_engine_bundles.py).
"""
from __future__ import annotations

import asyncio
import io
import os
import pickle
import socket
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from test_engine_helpers import harness, make_bundle, plan  # noqa: F401  (fixture)
from vast_magic.backends.local import daemon_control
from vast_magic.backends.local.bundles import extracted_bundle
from vast_magic.errors import BundleError
from vast_magic.runtime import framing


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
    engine = daemon_control.running_engine(harness.home)
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


def test_worker_refuses_strangers_before_unpickling(harness, tmp_path):
    harness.apply(plan(make_bundle(harness.folder)))
    (worker,) = harness.workers()
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"op": "call", "id": 1, "fn": "square", "args": (_Evil(marker),), "kwargs": {}})
    token = daemon_control.load_token(harness.home)
    hellos = {
        "no hello, a pickle": b"",
        "wrong token": _frame(b"VMAG1 " + b"0" * len(token)),
        "right token, wrong prefix": _frame(b"VMAG2 " + token.encode()),
        "token with a suffix": _frame(b"VMAG1 " + token.encode() + b"x"),
        "oversized hello": _frame(b"VMAG1 " + b"a" * 5000),
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
            assert answer == b"", (case, answer)     # closed without a word
    assert not marker.exists()
    assert harness.call("square", 6) == 36          # the worker still serves its real clients


def test_hello_is_compared_in_constant_time(monkeypatch):
    seen = []

    def recording(a, b):
        seen.append((bytes(a), bytes(b)))
        return _real(a, b)

    _real = framing.hmac.compare_digest
    monkeypatch.setattr(framing.hmac, "compare_digest", recording)

    async def attempt(sent: bytes) -> bool:
        reader = asyncio.StreamReader()
        reader.feed_data(_frame(sent))
        reader.feed_eof()

        class Sink:
            def is_closing(self): return False
            def writelines(self, data): pass
            def write(self, data): pass
            async def drain(self): pass
        return await framing.server_hello(reader, Sink(), "the-token")

    assert asyncio.run(attempt(b"VMAG1 the-token")) is True
    assert asyncio.run(attempt(b"VMAG1 the-tokem")) is False
    assert seen == [(b"VMAG1 the-token", b"VMAG1 the-token"), (b"VMAG1 the-tokem", b"VMAG1 the-token")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_home_and_private_files_are_owner_only(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    home = harness.home
    assert harness.call("shout", "hi") == "HI"
    assert _mode(home) == 0o700
    private = [home / "token", home / "engine.json", home / "engine.log", *home.glob("state.db*"),
               *(home / "logs").glob("*.log")]
    assert len(list((home / "logs").glob("*.log"))) >= 1
    wrong = {str(p.relative_to(home)): oct(_mode(p)) for p in private if _mode(p) != 0o600}
    assert not wrong, wrong
    folders = {str(p.relative_to(home)): oct(_mode(p)) for p in home.iterdir() if p.is_dir() and _mode(p) != 0o700}
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


def test_chained_symlinks_cannot_escape_and_leave_nothing_behind(tmp_path):
    """Each link alone stays inside (x -> ., s1 -> x/..) but together they point outside: refused, and the
    half-extracted staging folder is gone (complements the member table in test_engine_bundles.py)."""
    home = tmp_path / "home"
    tar = _tar(tmp_path / "chain.tar.gz", [("x", b"", ".", 0o777), ("s1", b"", "x/..", 0o777),
                                          ("s1/evil", b"pwned", "", 0o644)])
    with pytest.raises(BundleError, match="outside the destination"):
        extracted_bundle(home, tar)
    assert not list(tmp_path.rglob("evil")) and list((home / "bundles").iterdir()) == []


def test_extracted_files_lose_setuid_and_group_write(tmp_path):
    root = extracted_bundle(tmp_path / "home", _tar(tmp_path / "b.tar.gz", [("tool", b"#!/bin/sh\n", "", 0o6777)]))
    assert _mode(root / "tool") & 0o7022 == 0
