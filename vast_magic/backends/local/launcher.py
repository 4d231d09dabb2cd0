"""Finding, starting and stopping the engine daemon from the client side (and the CLI).

The daemon announces itself in ``home/engine.json`` (pid, process start time,
port), written atomically; the pid is trusted only while its start time still
matches. Starting is idempotent: a lock file held by the running daemon makes
a second one exit, so two clients racing to auto-start end up sharing one.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ... import settings
from ...errors import BackendError
from ...runtime import shm
from . import workers as procs
from .store import read_only

__all__ = [
    "START_TIMEOUT", "token_path", "load_token", "write_json_atomic", "running_engine", "has_deployments",
    "spawn_daemon", "ensure_engine", "engine_start", "engine_stop", "engine_status"
]

START_TIMEOUT = 20.0


def token_path(home: Path) -> Path:
    return Path(home) / "token"


def load_token(home: Path) -> str:
    """The engine token, created once (0600, atomically: write a temp file, then link it into place)."""
    path = token_path(home)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=home, prefix=".token-")
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass                       # another process created it first: use theirs
        finally:
            os.unlink(tmp)
    token = path.read_text(errors="replace").strip()
    if len(token) < 32 or not token.isalnum():
        raise BackendError(f"the engine token {path} is empty or corrupt. Run `vast-magic engine stop`, delete the "
                           "file and retry: a new token is created (running clients then reconnect).")
    return token


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def running_engine(home: Path) -> dict | None:
    """engine.json's content when that daemon is alive, else None."""
    try:
        info = json.loads((Path(home) / "engine.json").read_text())
    except (OSError, ValueError):
        return None
    if not procs.is_running(info.get("pid"), info.get("start_time")):
        return None
    return info


def has_deployments(home: Path) -> bool:
    return bool(read_only(Path(home), "deployments"))


def spawn_daemon(home: Path, idle_timeout: float | None = None) -> subprocess.Popen:
    idle = idle_timeout if idle_timeout is not None else settings.resolve("engine_idle_timeout")
    log_limits = ["--worker-log-bytes", str(settings.resolve("worker_log_bytes")),   # the engine's for its life
                  "--worker-log-files", str(settings.resolve("worker_log_files")),
                  *([] if settings.resolve("worker_fork") else ["--no-fork"])]
    fd = os.open(Path(home) / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "vast_magic.backends.local.daemon_main", "--home", str(home), "--idle-timeout",
             str(idle), *log_limits],
            cwd=str(home), start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            close_fds=True, env={**os.environ, "VAST_MAGIC_HOME": str(home)},
        )


def ensure_engine(home: Path, timeout: float = START_TIMEOUT) -> dict:
    """The running daemon's info, starting one if needed (blocking; call it off the loop)."""
    home = Path(home)
    info = running_engine(home)
    if info is not None:
        return info
    load_token(home)
    child = spawn_daemon(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = running_engine(home)
        if info is not None:
            return info
        if child.poll() not in (None, 0):
            break
        time.sleep(0.02)
    tail = _log_tail(home)
    raise BackendError(f"the local engine did not start within {timeout:.0f}s; see {home / 'engine.log'}:\n{tail}")


def _log_tail(home: Path, lines: int = 15) -> str:
    try:
        return "\n".join((Path(home) / "engine.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no engine.log)"


def engine_start(home: Path) -> dict:
    """`vast-magic engine start`: start the daemon unless one runs; return its info."""
    return {"running": True, **ensure_engine(Path(home))}


def engine_stop(home: Path, timeout: float = 15.0) -> dict:
    """`vast-magic engine stop`: SIGTERM the daemon (it stops its workers); deployments stay recorded.

    When the daemon does not exit in time it is killed and the recorded
    workers are reaped here, by pid and start time. Either way, and also when
    no daemon runs (it was killed), the home's shared-memory folder goes.
    """
    home = Path(home)
    info = running_engine(home)
    if info is None:
        _reap_recorded_workers(home)
        shm.remove_dir(shm.segment_dir(home))       # whatever a killed engine and its workers left
        return {"running": False, "stopped": False}
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and procs.is_running(info["pid"], info["start_time"]):
        time.sleep(0.02)
    if procs.liveness(info["pid"], info["start_time"]) is True:
        os.kill(info["pid"], signal.SIGKILL)
    _reap_recorded_workers(home)
    shm.remove_dir(shm.segment_dir(home))           # no worker is left to attach what is still there
    return {"running": False, "stopped": True, "pid": info["pid"]}


def _reap_recorded_workers(home: Path) -> None:
    try:
        recorded = read_only(home, "workers")
    except BackendError:               # a corrupt state file: `engine stop` must still work (the daemon is down)
        return
    for rec in recorded:
        procs.stop_now(rec.pid, rec.start_time, grace=2.0)


def engine_status(home: Path) -> dict:
    """`vast-magic engine status`: whether it runs, where, and the recorded deployments."""
    home = Path(home)
    info = running_engine(home)
    deployments = [f"{d.name}/{d.tag}" for d in read_only(home, "deployments")]
    return {"running": info is not None, **(info or {}), "home": str(home), "deployments": deployments}
