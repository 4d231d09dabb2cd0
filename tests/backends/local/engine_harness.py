"""The local engine tests' harness: real bundles, plans, and an engine home with an orphan check.

Bundles are laid out with ``worker_harness.write_bundle`` (runtime copied in)
and tarred here, so these tests need nothing from the bundle builder. The
``harness`` fixture (conftest.py) gives every test its own ``VAST_MAGIC_HOME``;
at teardown the engine is stopped and every pid it ever recorded (daemon and
workers) must be gone.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path


from tests.runtime.worker_harness import remote_spec, write_bundle
from vast_magic import loop
from vast_magic.backends.base import DeployPlan
from vast_magic.backends.local import launcher, store
from vast_magic.backends.local.engine import Engine
from vast_magic.backends.local.backend import LocalBackend
from vast_magic.backends.local.engine_model import Deployment
from vast_magic.backends.local.workers import proc_start_time
from vast_magic.runtime import shm

APP = '''
import asyncio, os
VERSION = {version!r}

class Model:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

async def square(x):
    return x * x

async def version():
    return VERSION

async def env(key):
    return os.environ.get(key)

async def pid():
    return os.getpid()

async def slow(seconds):
    await asyncio.sleep(seconds)
    return VERSION

async def boom(message):
    raise ValueError(message)

async def shout(text):
    print("shouting", text)
    return text.upper()
'''
#: the template's import (only the template's: a fresh worker's argv is serve.py) waits while the file ``gate``
#: exists, so a worker start waits on a template that is not ready for as long as a test needs
GATED_APP = '''
import os, sys, time
if sys.argv[0].endswith("template.py"):
    while os.path.exists({gate!r}):
        time.sleep(0.02)
''' + APP.format(version="v1")
REMOTES = [remote_spec("square", benchmark_dataset=[{"x": 2}, {"x": 3}], benchmark_runs=2),
           *(remote_spec(n) for n in ("version", "env", "pid", "slow", "boom", "shout"))]


@dataclass(frozen=True)
class Print:
    code: str


@dataclass(frozen=True)
class FakeManifest:
    """Stands in for bundle.manifest.Manifest: what the backend sends is its JSON and code digest."""

    code: str
    extra: str = ""

    def to_json(self) -> str:
        return json.dumps({"code": self.code, "extra": self.extra})

    def fingerprint(self) -> Print:
        return Print(self.code)


CONTEXTS = [{"name": "Model", "args": [], "kwargs": {}}]


def make_bundle(folder: Path, version: str = "v1", *, app: str | None = None, remotes=None, contexts=CONTEXTS,
                config=None) -> Path:
    """A bundle tar.gz made of a real runtime and a small app module."""
    source = folder / f"src-{version}"
    write_bundle(source, app if app is not None else APP.format(version=version),
                 remotes=remotes if remotes is not None else REMOTES, contexts=contexts, config=config,
                 with_runtime=True)
    path = folder / f"bundle-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(source.rglob("*")):
            if "__pycache__" not in item.parts:
                tar.add(item, arcname=str(item.relative_to(source)), recursive=False)
    return path


def plan(bundle: Path, *, name: str = "demo", tag: str = "default", tier: int = 4, env=(), secrets=(),
         autoscaling=None, ttl=None, timeout: float = 60.0, wait: bool = True, code: str | None = None,
         image=None) -> DeployPlan:
    code = code or hashlib.sha256(bundle.read_bytes()).hexdigest()
    return DeployPlan(name=name, tag=tag, tier=tier, reasons=("test",), manifest=FakeManifest(code, json.dumps(env)),
                      bundle_path=str(bundle), env=tuple(env), secrets=tuple(secrets),
                      autoscaling=dict(autoscaling or {}), image=image, ttl=ttl, wait=wait, timeout=timeout)


class Harness:
    """One engine home: the backend, the events it emitted, and every pid seen."""

    def __init__(self, home: Path, folder: Path):
        self.home, self.folder = home, folder
        self.backend = LocalBackend(home)
        self.events: list = []
        self.pids: set[tuple[int, int | None]] = set()

    def run(self, coro, timeout: float = 120.0):
        return loop.run_sync(coro, timeout)

    def apply(self, deploy_plan: DeployPlan):
        result = self.run(self.backend.apply(deploy_plan, self.events.append))
        self.collect()
        return result

    def call(self, function: str, *args, name="demo", tag="default", timeout=30.0, retries=0, cost=100.0,
             max_queue_time=30.0, **kwargs):
        from vast_magic.backends.base import CallSpec
        spec = CallSpec(name=name, tag=tag, function=function, timeout=timeout, max_queue_time=max_queue_time,
                        retries=retries, cost=cost)
        outcome = self.run(self.backend.call(spec, args, kwargs, {}))
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def workers(self, name="demo", tag="default"):
        return store.read_only(self.home, "workers", "name = ? AND tag = ?", (name, tag))

    def kill_and_see_noticed(self, name: str, within: float):
        """SIGKILL ``name``'s one worker and return its record once the engine has noticed, which must take
        less than ``within`` s: the heartbeat is not held up (by a start, a stop, a template)."""
        [victim] = self.workers(name)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        self.wait_for(lambda: victim.id not in {w.id for w in self.workers(name)}, timeout=15,
                      what=f"{name}'s dead worker noticed")
        noticed_after = time.monotonic() - killed_at
        assert noticed_after < within, f"{name}'s dead worker was noticed {noticed_after:.2f}s after it died"
        return victim

    def collect(self) -> None:
        info = launcher.running_engine(self.home)
        if info:
            self.pids.add((info["pid"], info["start_time"]))
        for rec in store.read_only(self.home, "workers"):
            self.pids.add((rec.pid, rec.start_time))
        for pid in processes_in(self.home):        # templates too: no store knows them
            self.pids.add((pid, proc_start_time(pid)))

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                self.collect()
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def close(self) -> None:
        self.collect()
        try:
            self.run(_close_on_loop(self.backend))     # its connections belong to the background loop
        finally:
            launcher.engine_stop(self.home)      # whatever happened above, no engine outlives the test
        deadline = time.monotonic() + 10
        alive = self.alive()
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = self.alive()
        assert not alive, f"orphan processes left: {alive}"
        segments = shm.segment_dir(self.home)
        left = os.listdir(segments) if segments and os.path.isdir(segments) else []
        shm.remove_dir(segments)
        assert not left, f"shared-memory segments nobody attached: {left}"

    def alive(self) -> list[int]:
        return [pid for pid, start in self.pids if start is not None and proc_start_time(pid) == start]


async def _close_on_loop(backend: LocalBackend) -> None:
    backend.close()
    await asyncio.sleep(0)                        # the cancelled connection readers finish


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is inside ``folder`` (the engine's workers and templates)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd == str(folder) or cwd.startswith(str(folder) + os.sep):
                found.append(int(entry))
    return found


def pid_gone(pid: int, start: int | None) -> bool:
    return proc_start_time(pid) != start or start is None


def env_without(*keys: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in keys}


def engine_with_step(tmp_path: Path, step) -> tuple[Engine, Deployment]:
    """An engine with no process and one committed deployment whose autoscale step is ``step(dep)``: for
    the bookkeeping of scale steps without worker starts."""
    engine = Engine(tmp_path, store.Store(tmp_path), "token", idle_timeout=3600)
    rec = store.DeploymentRecord("d", "t", "local://d/t", "v1", "{}", "", "", {}, [], [], "python", [], [], None,
                                 time.time(), "ready", time.time())
    dep = engine.new_deployment(rec, committed=True)
    engine._autoscale = step
    return engine, dep
