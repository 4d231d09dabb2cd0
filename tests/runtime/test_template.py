"""The template process on its own: its control protocol, and a forked worker's life against a fake engine.

``python -m vast_magic.runtime.template FD`` in a hand-built bundle: it says
ready once imported, forks a worker per request (the worker takes its launch
message from its own stdin, reaches ready on the fake engine, and starts its
stdout with what the import printed), reports the worker's exit status,
refuses a request without descriptors, and ends when its socket closes.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.worker_harness import TOKEN, FakeEngine, remote_spec, write_bundle

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="templates fork on Linux only")

APP = '''
print("imported once, in the template")

async def square(x):
    return x * x
'''


def _start_template(bundle: Path) -> tuple[subprocess.Popen, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        proc = subprocess.Popen([sys.executable, "-m", "vast_magic.runtime.template", str(theirs.fileno())],
                                cwd=bundle, pass_fds=(theirs.fileno(),), start_new_session=True,
                                stdin=subprocess.DEVNULL)
    ours.settimeout(30)
    return proc, ours


def _receive(sock: socket.socket) -> dict:
    return json.loads(sock.recv(65536))


def test_a_template_forks_workers_reports_their_exit_and_ends_with_its_socket(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", APP, remotes=[remote_spec("square")])
    workdir = Path(shutil.copytree(bundle, tmp_path / "worker"))
    proc, control = _start_template(bundle)
    try:
        assert _receive(control) == {"ready": True}
        socket.send_fds(control, [json.dumps({"fork": 1, "workdir": str(workdir)}).encode()], [])
        assert _receive(control) == {"refused": None, "error": "bad request: a fork request carries 3 descriptors, got 0"}

        async def scenario() -> tuple[dict, bytes, dict]:
            engine = await FakeEngine().start()
            stdin_r, stdin_w = os.pipe()
            out_r, out_w = os.pipe()
            socket.send_fds(control, [json.dumps({"fork": 2, "workdir": str(workdir)}).encode()],
                            [stdin_r, out_w, os.dup(2)])
            for fd in (stdin_r, out_w):
                os.close(fd)
            forked = await asyncio.to_thread(_receive, control)
            launch = {"engine": f"127.0.0.1:{engine.port}", "token": TOKEN, "worker_id": "w1", "fixed_perf": 1.0}
            with open(stdin_w, "wb") as stdin:
                stdin.write(json.dumps(launch).encode())
            ready = await engine.wait_state("ready")
            await engine.send({"op": "stop", "grace": 0.1})
            exited = await asyncio.to_thread(_receive, control)
            with open(out_r, "rb") as out:
                printed = out.read()                 # every write end is closed once the worker is gone
            await engine.close()
            return forked, printed, {"ready": ready, "exited": exited}

        forked, printed, seen = asyncio.run(scenario())
        assert forked["forked"] == 2 and forked["pid"] != proc.pid
        assert seen["ready"]["port"] and seen["exited"] == {"exited": forked["pid"], "code": 0}
        assert printed.startswith(b"imported once, in the template\n")
        control.close()
        assert proc.wait(10) == 0                    # end of file on its socket: the template ends
    finally:
        control.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_template_whose_import_starts_a_thread_says_so_and_exits(tmp_path):
    app = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n" + APP
    bundle = write_bundle(tmp_path / "bundle", app, remotes=[remote_spec("square")])
    proc, control = _start_template(bundle)
    try:
        message = _receive(control)
        assert message["failed"].startswith("importing the bundle started 1 thread(s)")
        assert proc.wait(10) == 0
    finally:
        control.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
