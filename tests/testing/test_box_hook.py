"""The walls the box puts around an official worker, from outside its code: the start-up hook.

Each test runs a plain Python child with the hook on its ``PYTHONPATH`` (as the
box starts workers) and checks one wall: servers asking for every interface
listen on loopback, ``/etc/environment`` appends land in the worker's folder,
and a worker whose box died stops.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vast_magic.testing._box_workers import write_hook

SERVE_EVERYWHERE = """
import asyncio, json
async def main():
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, None, 0)
    print(json.dumps(sorted({s.getsockname()[0] for s in server.sockets})), flush=True)
    server.close()
asyncio.run(main())
"""


def child(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    hook = write_hook(tmp_path / "hook")
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(hook), **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env, addresses", [
    ({"VAST_BOX_BIND_HOST": "127.0.0.1"}, ["127.0.0.1"]),
    ({}, None),                                   # without the box's variable the hook changes nothing
])
def test_a_server_asking_for_every_interface_listens_on_loopback(tmp_path, env, addresses):
    done = child(tmp_path, SERVE_EVERYWHERE, **env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == addresses if addresses else "0.0.0.0" in found


def test_etc_environment_appends_stay_in_the_workers_folder(tmp_path):
    before = Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else None
    target = tmp_path / "etc-environment"
    done = child(tmp_path, "f = open('/etc/environment', 'a')\nf.write('MODE=\"demo\"\\n')\nf.close()",
                 VAST_BOX_ETC_ENVIRONMENT=str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text() == 'MODE="demo"\n'
    assert (Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else None) == before


BOX = """
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time\\nprint('up', flush=True)\\ntime.sleep(120)"],
                          env={**os.environ, "VAST_BOX_PID": str(os.getpid())}, start_new_session=True,
                          stdout=subprocess.PIPE, text=True)
worker.stdout.readline()
print(worker.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_worker_whose_box_died_stops(tmp_path):
    hook = write_hook(tmp_path / "hook")
    box = subprocess.Popen([sys.executable, "-c", BOX], env={**os.environ, "PYTHONPATH": str(hook)},
                           stdout=subprocess.PIPE, text=True)
    worker = int(box.stdout.readline())
    try:
        assert _running(worker)
        box.send_signal(signal.SIGKILL)           # the box dies without stopping anything
        box.wait(10)
        deadline = time.monotonic() + 20
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker)
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
        box.stdout.close()
