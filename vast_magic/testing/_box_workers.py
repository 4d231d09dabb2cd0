"""Worker processes of the box: the official serve entry point, started and stopped by PID.

Each worker runs ``python -m vastai.serverless.remote.serve_deployment`` from
the cached official venv, in a private folder, with the environment a Vast
container gives it (reference 4.1): what the deployment's env string says,
then what the platform sets (its ids, keys and ports), never
``DEBUG_DEPLOYMENT_TAR``, so it downloads the bundle the client uploaded.

On Vast the worker lives in its own container, with its own network and its
own ``/etc``; here it shares the machine. The box gives it those two walls from
outside the official code, with a start-up hook (``sitecustomize.py`` on the
worker's ``PYTHONPATH`` only, written by the box): a server that asks for every
interface listens on 127.0.0.1 instead (the official worker passes no host to
aiohttp), appends to ``/etc/environment`` go to a file in the worker's
folder, and a worker whose box process is gone (killed with its kernel, say)
stops as a container would. ``listening_addresses`` lets tests check the first
wall from ``/proc``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Mapping

__all__ = ["SERVE_MODULE", "BIND_HOST", "SITECUSTOMIZE", "write_hook", "free_port", "worker_env", "spawn",
           "signal_group", "listening_addresses"]

SERVE_MODULE = "vastai.serverless.remote.serve_deployment"
BIND_HOST = "127.0.0.1"

SITECUSTOMIZE = '''\
"""vast_magic box: the walls a Vast container gives its worker, put up from outside the official code.

Loaded only by the box's workers (their PYTHONPATH). A server asking for every
interface listens on VAST_BOX_BIND_HOST; appends to /etc/environment go to
VAST_BOX_ETC_ENVIRONMENT; when the box process (VAST_BOX_PID) is gone, the
worker is interrupted like a stopped container (SIGINT, then exit after 10 s).
"""
import asyncio.base_events as _base_events
import builtins as _builtins
import os as _os

_HOST = _os.environ.get("VAST_BOX_BIND_HOST")
_ETC_ENVIRONMENT = _os.environ.get("VAST_BOX_ETC_ENVIRONMENT")
_BOX_PID = _os.environ.get("VAST_BOX_PID")
_EVERY_INTERFACE = (None, "", "0.0.0.0", "::")

if _HOST:
    _create_server = _base_events.BaseEventLoop.create_server

    async def _create_server_on_box_host(self, protocol_factory, host=None, *args, **kwargs):
        return await _create_server(self, protocol_factory, _HOST if host in _EVERY_INTERFACE else host,
                                    *args, **kwargs)

    _base_events.BaseEventLoop.create_server = _create_server_on_box_host

if _ETC_ENVIRONMENT:
    _open = _builtins.open

    def _open_box_etc(file, *args, **kwargs):
        return _open(_ETC_ENVIRONMENT if file == "/etc/environment" else file, *args, **kwargs)

    _builtins.open = _open_box_etc

if _BOX_PID:
    import signal as _signal
    import threading as _threading
    import time as _time

    def _stop_without_the_box():
        while _os.getppid() == int(_BOX_PID):
            _time.sleep(0.5)
        _os.kill(_os.getpid(), _signal.SIGINT)
        _time.sleep(10.0)
        _os._exit(1)

    _threading.Thread(target=_stop_without_the_box, name="vast-box-watch", daemon=True).start()
'''


def write_hook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((BIND_HOST, 0))
        return probe.getsockname()[1]


def worker_env(*, python: Path, hook: Path, folder: Path, from_env_string: Mapping[str, str],
               platform: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: the box's walls, then the env string's ``-e`` pairs, then the platform's."""
    env = {"PATH": os.pathsep.join([str(python.parent), "/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": str(folder / "home"), "TMPDIR": str(folder / "tmp"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    env.update(from_env_string)
    env.update(platform)
    env.update(PYTHONPATH=str(hook), VAST_BOX_BIND_HOST=BIND_HOST, VAST_BOX_PID=str(os.getpid()),
               VAST_BOX_ETC_ENVIRONMENT=str(folder / "etc-environment"))
    return env


def spawn(python: Path, folder: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """Start one worker in ``folder/work`` (its own session, so its children stop with it)."""
    for sub in ("work", "home", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with open(folder / "worker.log", "ab") as log:
        return subprocess.Popen([str(python), "-m", SERVE_MODULE], cwd=folder / "work", env=dict(env),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def signal_group(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """Signal a still-running worker's process group (its pid is the group id)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, read from ``/proc`` (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:           # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address, width), int(port, 16)))
    return found


def _address(hex_text: str, width: int) -> str:
    raw = bytes.fromhex(hex_text)
    if sys.byteorder == "little":     # /proc prints each 32-bit word in host byte order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw)
