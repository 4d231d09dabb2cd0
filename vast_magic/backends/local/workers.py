"""Worker processes: spawn, identify (pid + start time), stop, reap.

A pid alone is not an identity: after a crash the number can belong to an
unrelated process. Every worker is recorded with its start time from
``/proc/<pid>/stat`` and is only ever signalled when both still match, so a
restarted daemon can reap what an earlier one left without hurting anyone else.
When ``/proc`` cannot be read (a descriptor flood: EMFILE) we cannot tell, and
"cannot tell" is never "dead": the worker is kept, and not signalled either.
Workers run in their own session (``start_new_session``), so the pid is also
the process group: stopping the group takes any child a ``runs`` script left.
A start can end after nobody wants the worker any more (its deployment torn
down, the engine stopping): ``StartsInFlight`` stops it at once, and lets
engine stop wait for every start and such stop in flight. A start that ends
without a worker (a cancelled deploy) removes the worker's folder; a child its
template forked meanwhile ends by itself, at the end of its stdin, which
carries its launch message and which nobody else holds.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ...runtime import procinfo

__all__ = [
    "RUNTIME_MODULE", "proc_start_time", "liveness", "is_running", "INHERITED", "worker_environment", "spawn",
    "stop_now", "stop", "StartsInFlight"
]

RUNTIME_MODULE = "vast_magic_runtime.serve"


def proc_start_time(pid: int | None) -> int | None:
    """Field 22 of /proc/<pid>/stat, None when the process is gone; raises ``procinfo.Unknown`` when it cannot tell."""
    return procinfo.start_time(pid)


def liveness(pid: int | None, start_time: int | None, popen=None) -> bool | None:
    """True alive, False gone, None cannot tell. Our own child's state comes from ``waitpid`` (no file
    descriptor needed, and an unreaped child's pid cannot have been reused); a worker forked by a template
    (``templates.ForkedProcess``) answers from that template's exit reports."""
    if popen is not None and pid and popen.pid == pid:
        running = getattr(popen, "running", None)
        return running() if running is not None else popen.poll() is None
    return procinfo.liveness(pid, start_time)


def is_running(pid: int | None, start_time: int | None, popen: subprocess.Popen | None = None) -> bool:
    """True unless ``pid`` is known to be gone (or another process): "cannot tell" is never taken as dead."""
    return liveness(pid, start_time, popen) is not False


#: what a worker inherits from the engine's environment: what the shell, Python and locale need, nothing else;
#: and coverage.py's settings (no secret), so a test suite measured with it measures the workers too
INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                       "LD_LIBRARY_PATH", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"})


def worker_environment(engine_env: Mapping[str, str], env: Iterable[tuple[str, str]],
                       secrets: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A worker's environment: the minimum above (plus ``LC_*``) from the engine's, then exactly the
    deployment's env and secrets. The engine's environment is that of whichever client started it (a
    notebook's ``HF_TOKEN``, cloud keys...), so nothing else of it may reach user code."""
    base = {k: v for k, v in engine_env.items() if k in INHERITED or k.startswith("LC_")}
    return {**base, **dict(env), **dict(secrets)}


def spawn(python: str, workdir: Path, env: Mapping[str, str], launch: Mapping) -> subprocess.Popen:
    """Start ``python -m vast_magic_runtime.serve`` detached; its stdout and stderr are pipes the engine reads
    into the worker's rotated log (``worker_output``); the launch message (with the token) goes through
    stdin, never the environment."""
    popen = subprocess.Popen(
        [python, "-m", RUNTIME_MODULE], cwd=str(workdir), env=dict(env), start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
    )
    try:
        popen.stdin.write(json.dumps(dict(launch)).encode())   # a few hundred bytes: the pipe never blocks
        popen.stdin.close()
    except OSError:                                            # died at once: its exit is noticed and reported
        pass
    return popen


def _signal(pid: int, start_time: int | None, sig: int, popen: subprocess.Popen | None = None) -> bool:
    """Signal only a process known to be the recorded one: when we cannot tell, we do not shoot."""
    if liveness(pid, start_time, popen) is not True:
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


def _reap(popen: subprocess.Popen | None) -> None:
    if popen is not None:
        popen.poll()


def _stop_steps(pid: int | None, start_time: int | None, grace: float,
                popen: subprocess.Popen | None) -> Iterator[float]:
    """The stop sequence, as the pauses between its checks: SIGTERM, up to ``grace`` s, SIGKILL, up to 5 s.

    The sync and async forms only differ in how they sleep, so the sequence lives here once.
    """
    if not pid or not _signal(pid, start_time, signal.SIGTERM, popen):
        _reap(popen)
        return
    for limit, pause, final in ((grace, 0.02, False), (5.0, 0.01, True)):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            _reap(popen)
            if not is_running(pid, start_time, popen):
                return
            yield pause
        if not final:
            _signal(pid, start_time, signal.SIGKILL, popen)


def stop_now(pid: int | None, start_time: int | None, grace: float = 2.0,
             popen: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL (blocking; used at start-up and shutdown)."""
    for pause in _stop_steps(pid, start_time, grace, popen):
        time.sleep(pause)


async def stop(pid: int | None, start_time: int | None, grace: float = 2.0,
               popen: subprocess.Popen | None = None) -> None:
    """The async form of ``stop_now`` for the daemon's loop."""
    for pause in _stop_steps(pid, start_time, grace, popen):
        await asyncio.sleep(pause)


class StartsInFlight:
    """The engine's worker starts not finished yet, and the stops of workers started for nothing: engine stop
    waits for all of them, so no worker started meanwhile outlives it."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def run(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop_unwanted(self, popen, start_time: int | None, workdir: Path) -> None:
        """Stop, by pid and at once, a worker that started after nobody wanted it, and remove its folder; a
        cancelled caller does not end the stop."""
        await asyncio.shield(self.run(_stop_unwanted(popen, start_time, workdir)))

    def remove_folder(self, workdir: Path, after: asyncio.Future) -> None:
        """A start that ended without a worker (cancelled, or its spawn failed) leaves no folder: remove it once
        ``after`` (the copy into it, a thread that a cancellation does not stop) is done."""
        self.run(_remove_folder(workdir, after))

    async def finished(self) -> None:
        while pending := [task for task in self.tasks if not task.done()]:
            await asyncio.wait(pending)


async def _remove_folder(workdir: Path, after: asyncio.Future) -> None:
    await asyncio.wait([after])
    await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _stop_unwanted(popen, start_time: int | None, workdir: Path) -> None:
    await stop(popen.pid, start_time, grace=2.0, popen=popen)
    for pipe in (popen.stdout, popen.stderr):
        pipe.close()
    await asyncio.to_thread(shutil.rmtree, workdir, True)
