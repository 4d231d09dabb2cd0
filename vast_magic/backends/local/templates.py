"""Warm worker starts: one template process per deployment version, forked for each new worker.

A fresh worker spends most of its start importing: the interpreter, the
runtime, the bundle's modules and what they import (numpy alone is ~0.1 s).
A template (``python -m vast_magic_runtime.template``, runtime ``template``)
does that once per version and then forks; the child becomes a worker as if
started fresh (own session, workdir, stdio pipes, environment, no token until
its launch message). The protocol is in the runtime module's docstring.

When a worker is not forked, and a fresh interpreter starts instead
(``workers.spawn``), is decided here; the worker's ``WorkerState`` events and
``WorkerInfo`` say which (``start``: ``forked`` or ``fresh``), and its "ready"
line in engine.log says why not:

- it is the first worker of its version: the template boots once that one
  is ready (waiting for the template's import would gain nothing, and two
  imports at once slow both on a small machine);
- the ``worker_fork`` setting is off, or this system has no ``fork`` or
  ``SCM_RIGHTS`` (not Linux);
- the bundle has ``runs`` commands: each worker runs them itself, before any
  import, and they may write into its folder or start processes;
- the template could not import the bundle, or importing it started threads
  (a fork copies none), or it died: then that version starts fresh workers
  from then on, with the reason noted once in engine.log.

A pip venv is no reason: the template runs the version's own interpreter.
The template lives while
the version is current or has workers, never counts as a worker, and is
stopped with its deployment, when its version retires, and with the engine.
It ends by itself when its control socket closes, so it never outlives the
engine. Its children are tracked like any worker (pid + start time); their
exit status comes from the template, which reaps them.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Mapping

from . import workers as procs
from .bundles import worker_dir

__all__ = ["TEMPLATE_MODULE", "READY_TIMEOUT", "FORK_TIMEOUT", "Started", "ForkedProcess", "Template", "Templates",
           "fork_unavailable"]

TEMPLATE_MODULE = "vast_magic_runtime.template"
READY_TIMEOUT = 60.0       # a template importing longer than this is given up (its version starts fresh)
FORK_TIMEOUT = 5.0         # a fork answer takes milliseconds; a template that does not answer is given up
_MAX_MESSAGE = 1 << 16


@dataclass(frozen=True)
class Started:
    """A worker process just started, and how."""

    process: "subprocess.Popen | ForkedProcess"
    start: str                 # forked | fresh
    note: str | None = None    # why it was not forked


class ForkedProcess:
    """What the engine needs of a ``Popen`` for a worker its template forked: pid, exit status, output pipes."""

    def __init__(self, pid: int, template: "Template", stdout: IO[bytes], stderr: IO[bytes]):
        self.pid, self.template, self.stdout, self.stderr = pid, template, stdout, stderr
        self.start_time = _start_time(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def running(self) -> bool | None:
        """True alive, False gone, None cannot tell. While its template lives, the template's exit report
        is the truth (an exited child stays a zombie until the template reaps and reports it); once the
        template is gone, ``/proc`` decides, and an exit status is no longer known."""
        if self.returncode is not None:
            return False
        if self.template.alive():
            return True
        return procs.procinfo.liveness(self.pid, self.start_time)


def _start_time(pid: int) -> int | None:
    try:
        return procs.proc_start_time(pid)
    except procs.procinfo.Unknown:
        return None


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def fork_unavailable() -> str | None:
    """Why this system cannot fork workers from a template, or None."""
    if not sys.platform.startswith("linux"):
        return f"forking workers is only done on Linux (this is {sys.platform})"
    if not (hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "SOCK_SEQPACKET")):
        return "this Python has no fork or descriptor passing"
    return None


class Template:
    """One template process and its control socket, on the engine's loop."""

    def __init__(self, key: tuple, workdir: Path):
        self.key, self.workdir = key, workdir
        self.popen: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.settled = asyncio.Event()           # ready, failed or gone
        self.failure: str | None = None
        self.children: dict[int, ForkedProcess] = {}
        self.answers: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.starting = 0                        # worker starts waiting on it: it must not be retired meanwhile
        self.launching: asyncio.Future | None = None    # its folder copied and its process started
        self.stopped: asyncio.Task | None = None        # its one stop, whoever asked first

    def start(self, python: str, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [python, "-m", TEMPLATE_MODULE, str(theirs.fileno())], cwd=str(self.workdir), env=dict(env),
                start_new_session=True, stdin=subprocess.DEVNULL, close_fds=True, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        ours.setblocking(False)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._read)

    def alive(self) -> bool:
        return self.sock is not None and self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        return self.settled.is_set() and self.failure is None and self.alive()

    def _read(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(_MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._gone("the template process ended")
                return
            try:
                self._on_message(json.loads(data))
            except (ValueError, TypeError, KeyError) as exc:
                self._gone(f"the template sent an unreadable message ({exc})")
                return

    def _on_message(self, msg: dict) -> None:
        if "ready" in msg:
            self.settled.set()
        elif "failed" in msg:
            self._gone(str(msg["failed"]))
        elif "exited" in msg:
            child = self.children.pop(int(msg["exited"]), None)
            if child is not None:
                child.returncode = int(msg["code"])
        else:
            answer = self.answers.pop(msg.get("forked") or msg.get("refused"), None)
            if answer is not None and not answer.done():
                answer.set_result(msg)

    def _gone(self, why: str) -> None:
        """No more forks from this template; whoever waits on it is told why."""
        self.failure = self.failure or why
        self.settled.set()
        for answer in self.answers.values():
            if not answer.done():
                answer.set_result({"error": why})
        self.answers.clear()
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    async def fork(self, workdir: Path, launch: Mapping) -> ForkedProcess:
        """A new worker in ``workdir``; its launch message goes to its stdin once it exists (never through
        the template). Raises ``OSError`` when the template cannot fork."""
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours = (stdin_w, out_r, err_r)
        try:
            msg = await self._request_fork(workdir, (stdin_r, out_w, err_w))
        except BaseException:
            _close(*ours)
            raise
        if "pid" not in msg:
            _close(*ours)
            if "refused" not in msg:
                self._gone(str(msg.get("error")))
            raise OSError(str(msg.get("error")))
        child = ForkedProcess(int(msg["pid"]), self, open(out_r, "rb", buffering=0), open(err_r, "rb", buffering=0))
        self.children[child.pid] = child
        with open(stdin_w, "wb") as stdin:
            with contextlib.suppress(OSError):      # died at once: its exit is reported and explained
                stdin.write(json.dumps(dict(launch)).encode())
        return child

    async def _request_fork(self, workdir: Path, theirs: tuple[int, int, int]) -> dict:
        """Send one fork request with the child's ends of its pipes (closed here either way); its answer."""
        rid = next(self.ids)
        answer = asyncio.get_running_loop().create_future()
        self.answers[rid] = answer
        try:
            if self.sock is None:
                raise OSError(self.failure or "the template is gone")
            socket.send_fds(self.sock, [json.dumps({"fork": rid, "workdir": str(workdir)}).encode()], list(theirs))
        except OSError:
            self.answers.pop(rid, None)
            raise
        finally:
            _close(*theirs)
        try:
            return await asyncio.wait_for(answer, FORK_TIMEOUT)
        except asyncio.TimeoutError:
            return {"error": f"the template did not answer a fork request within {FORK_TIMEOUT:g}s"}

    def stop(self) -> asyncio.Task:
        """Close its socket now (it forks no more and exits), then, in a task of its own that a caller's
        cancellation does not end, make sure it is gone and remove its folder. Every caller gets that one task."""
        if self.stopped is None:
            self._gone("the template was stopped")
            self.stopped = asyncio.ensure_future(self._stop())
        return self.stopped

    async def _stop(self) -> None:
        if self.launching is not None:
            await asyncio.wait([self.launching])    # it sees the stop and starts no process
        if self.popen is not None:
            await procs.stop(self.popen.pid, None, grace=2.0, popen=self.popen)
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)


class Templates:
    """The engine's templates, by (name, tag, ``Version``): a tier 3 change (env, secrets) keeps the code
    version but needs another template."""

    def __init__(self, home: Path, enabled: bool = True):
        self.home = home
        self.folder = home / "templates"
        self.by_key: dict[tuple, Template] = {}
        self.disabled = None if enabled else "the worker_fork setting is off"
        self.disabled = self.disabled or fork_unavailable()
        self.given_up: dict[tuple, str] = {}   # versions that start fresh workers, and why
        self.stopping: set[asyncio.Task] = set()   # stops in flight: each caller of retire or stop_all waits for all

    def clear_folder(self) -> None:
        """At engine start: templates die with the engine that started them; their folders may remain."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _why_fresh(self, key: tuple, version) -> str | None:
        return self.disabled or self.given_up.get(key) or _bundle_hazard(Path(version.bundle_dir))

    def warm(self, key: tuple, env: Mapping[str, str]) -> None:
        """A worker of this version is ready: boot the version's template now (when its workers are forked),
        so the next ones fork. Not earlier: the first worker would only wait for the template's import, and
        on a small machine two imports at once slow both."""
        if key not in self.by_key and self._why_fresh(key, key[2]) is None:
            self._template(key, key[2], env)

    async def start_worker(self, key: tuple, version, workdir: Path, env: Mapping[str, str],
                           launch: Mapping) -> Started:
        """Fork a worker from the version's template when it has one and that is safe, else start a fresh
        interpreter (the first worker of a version always: its template boots once it is ready)."""
        note = self._why_fresh(key, version)
        if note is None and key not in self.by_key:
            note = "the first worker of its version"
        if note is None:
            template = self.by_key[key]
            template.starting += 1             # from here on, retire() leaves it alone
            try:
                await asyncio.shield(template.launching)
                note = await self._wait_ready(template)
                if note is None:
                    return Started(await template.fork(workdir, launch), "forked")
            except OSError as exc:
                note = self._give_up(template, f"the template could not fork: {exc}")
            finally:
                template.starting -= 1
        return Started(procs.spawn(version.python, workdir, env, launch), "fresh", note)

    def _template(self, key, version, env: Mapping[str, str]) -> Template:
        """The version's template, started (in the background) when it has none."""
        template = self.by_key.get(key)
        if template is None:
            template = Template(key, self.folder / f"{version.version[:12]}-{secrets.token_hex(4)}")
            template.launching = asyncio.ensure_future(self._launch(template, version, env))
            self.by_key[key] = template
        return template

    async def _launch(self, template: Template, version, env: Mapping[str, str]) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            await asyncio.to_thread(worker_dir, Path(version.bundle_dir), template.workdir)
            if template.failure is None:         # not stopped meanwhile
                template.start(version.python, env)
        except OSError as exc:
            template._gone(f"the template could not start: {exc}")

    async def _wait_ready(self, template: Template) -> str | None:
        try:
            await asyncio.wait_for(template.settled.wait(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            template._gone(f"the template was not ready within {READY_TIMEOUT:g}s")
        if template.ready():
            return None
        return self._give_up(template, template.failure or "the template ended")

    def _give_up(self, template: Template, why: str) -> str:
        """``template`` failed: its version starts fresh workers from now on, and it goes. Unless it is no
        longer its version's (stopped by a teardown or retired, maybe replaced by a redeploy's): then only the
        start that waited on it is fresh. Returns the note for that start."""
        key, note = template.key, why.strip().splitlines()[0] if why.strip() else why
        if self.by_key.get(key) is not template:
            return note
        if key not in self.given_up:
            print(f"{key[0]}/{key[1]} version {key[2].version[:12]}: workers start fresh; {why.strip()}", flush=True)
        self.given_up[key] = note
        self._stop(key)
        return note

    def _stop(self, key: tuple) -> None:
        """Stop the key's template (in the background); it is in ``stopping`` until it is gone."""
        template = self.by_key.pop(key, None)
        if template is not None:
            task = template.stop()
            self.stopping.add(task)
            task.add_done_callback(self.stopping.discard)
            task.add_done_callback(_report_failed_stop)

    async def _stopped(self) -> None:
        """Wait for every stop in flight, also those another caller began (the reconciler can be stopping a
        template when a teardown finds nothing left to stop) or gave up waiting for (a cancelled reconciler).
        A stop that failed was reported in engine.log when it ended; waiting for it does not raise."""
        while pending := [task for task in self.stopping if not task.done()]:
            await asyncio.wait(pending)

    def retire_soon(self, wanted: set[tuple], torn_down: tuple[str, str] | None = None) -> None:
        """Begin stopping the templates of versions no longer wanted (nor being started from, unless their
        deployment, ``torn_down`` as (name, tag), is gone); the stops go on in the background, where ``retire``
        and ``stop_all`` wait for them. The reconciler's form: a template that ignores SIGTERM takes the grace
        and a SIGKILL (seconds), which the engine's heartbeat must not wait out."""
        for key, template in list(self.by_key.items()):
            if key not in wanted and (not template.starting or key[:2] == torn_down):
                self._stop(key)
            elif template.failure is not None and not template.starting:
                self._give_up(template, template.failure)
        for key in [k for k in self.given_up if k not in wanted]:
            del self.given_up[key]

    async def retire(self, wanted: set[tuple], torn_down: tuple[str, str] | None = None) -> None:
        """``retire_soon``, then wait for every stop in flight: a teardown answers once its templates are gone."""
        self.retire_soon(wanted, torn_down)
        await self._stopped()

    async def stop_all(self) -> None:
        """At engine stop: no template starts from now on (a worker's ready line can still arrive), and every
        one started or starting is gone when this returns."""
        self.disabled = "the engine is stopping"
        for key in list(self.by_key):
            self._stop(key)
        await self._stopped()
        shutil.rmtree(self.folder, ignore_errors=True)


def _report_failed_stop(task: asyncio.Task) -> None:
    """Nobody may await a stop (the reconciler only begins it): its failure goes to engine.log here."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"stopping a template failed: {type(exc).__name__}: {exc}", flush=True)


def _bundle_hazard(bundle_dir: Path) -> str | None:
    """A reason in the bundle itself not to fork its workers."""
    try:
        config = json.loads((bundle_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None                              # the fresh worker reports what is wrong with it
    if isinstance(config, dict) and config.get("runs"):
        return "the bundle has set-up commands (runs), which every worker runs itself"
    return None
