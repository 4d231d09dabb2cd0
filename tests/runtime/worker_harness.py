"""Test helpers for the worker runtime: a hand-built bundle dir, a fake engine, a call client.

The engine engineer may reuse them: ``FakeEngine`` speaks the worker<->engine
protocol of docs/internals.md (hello, then state/log/load messages in, stop out),
``CallClient`` the call protocol, ``spawn_worker`` starts a real worker process.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle

from vast_magic.runtime import framing, handshake, wire

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "vast_magic" / "runtime"
TOKEN = "test-token-0123456789"


def remote_spec(name: str, **options) -> dict:
    """A RemoteSpec.to_dict()-shaped dict with the SDK defaults."""
    spec = {"name": name, "is_async": True, "benchmark_dataset": None, "benchmark_generator": None,
            "benchmark_runs": 10, "workload_calculator": None, "workload_mode": None,
            "allow_parallel_requests": True, "max_queue_time": 30.0, "retries": 0, "timeout": 600.0}
    spec.update(options)
    return spec


def at(name: str | None) -> str | None:
    """Where a name of the hand-written ``vast_magic_app.py`` lives, as the registry says it."""
    return name if name is None or ":" in name else f"vast_magic_app:{name}"


def write_bundle(root: Path, app_source: str, *, remotes=(), contexts=(), classes=(), config=None,
                 with_runtime: bool = False) -> Path:
    """Lay out a bundle directory the way the bundle builder does (minus the tar), one module: vast_magic_app."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vast_magic_app.py").write_text(textwrap.dedent(app_source))
    remotes = [{**spec, "at": at(spec["name"]), "workload_calculator": at(spec.get("workload_calculator")),
                "benchmark_generator": at(spec.get("benchmark_generator"))} for spec in remotes]
    contexts = [{**spec, "at": at(spec["name"])} for spec in contexts]
    registry = {"modules": ["vast_magic_app"], "remotes": remotes, "contexts": contexts,
                "classes": [at(name) for name in classes]}
    (root / "vast_magic_registry.pkl").write_bytes(cloudpickle.dumps(registry, protocol=5))
    cfg = {"name": "test", "pip_installs": [], "apt_gets": [], "envs": [], "runs": []}
    cfg.update(config or {})
    (root / "config.json").write_text(json.dumps(cfg))
    if with_runtime:
        shutil.copytree(RUNTIME_DIR, root / "vast_magic_runtime",
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


class Worker:
    """A real worker process; ``stop()`` kills it by PID if it is still alive."""

    def __init__(self, proc: subprocess.Popen, log_dir: Path):
        self.proc, self.log_dir = proc, log_dir

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def logs(self) -> str:
        return "".join((self.log_dir / f"worker.{s}").read_text(errors="replace") for s in ("out", "err"))


def spawn_worker(bundle_dir: Path, engine_port: int, *, module: str = "vast_magic.runtime.serve",
                 worker_id: str = "w1", env: dict | None = None, python_flags=(), fixed_perf: float | None = None) -> Worker:
    """A worker started like the engine starts one: its launch message (JSON) on stdin."""
    launch = {"engine": f"127.0.0.1:{engine_port}", "token": TOKEN, "worker_id": worker_id, "fixed_perf": fixed_perf}
    out = open(bundle_dir.parent / "worker.out", "wb")
    err = open(bundle_dir.parent / "worker.err", "wb")
    with out, err:
        proc = subprocess.Popen([sys.executable, *python_flags, "-m", module], cwd=bundle_dir,
                                env={**os.environ, **(env or {})}, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                start_new_session=True)
    proc.stdin.write(json.dumps(launch).encode())
    proc.stdin.close()
    return Worker(proc, bundle_dir.parent)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class FakeEngine:
    """Accepts one worker connection; records every message with its arrival time."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.messages: list[tuple[float, dict]] = []
        self.hello_ok = asyncio.Event()
        self._changed = asyncio.Event()
        self._writer = None
        self._server = None
        self.port = None

    async def start(self) -> "FakeEngine":
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _connection(self, reader, writer):
        if not await handshake.server_hello(reader, writer, self.token):
            writer.close()
            return
        self._writer = writer
        self.hello_ok.set()
        try:
            while True:
                main, buffers = await framing.read_frame(reader)
                self.messages.append((time.monotonic(), wire.loads(main, buffers)))
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def states(self) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.messages if m.get("op") == "state"]

    def state_names(self) -> list[str]:
        return [m["state"] for _, m in self.states()]

    def log_lines(self) -> list[tuple]:
        return [line for _, m in self.messages if m.get("op") == "log" for line in m["lines"]]

    async def wait_state(self, *names: str, timeout: float = 20.0) -> dict:
        """Wait for the first state message whose state is one of ``names``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, message in self.states():
                if message["state"] in names:
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no state in {names}; got {self.state_names()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def send(self, message: dict) -> None:
        main, buffers = wire.dumps(message)
        await framing.write_frame(self._writer, main, buffers)

    def drop(self) -> None:
        """Close the worker's connection (what an engine crash looks like to the worker)."""
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        self.drop()
        self._server.close()
        await self._server.wait_closed()


class CallClient:
    """A minimal multiplexed client of the worker call protocol."""

    def __init__(self, class_refs=None, resolve_class=None):
        self.class_refs, self.resolve_class = class_refs or {}, resolve_class or {}
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._lock = asyncio.Lock()

    async def connect(self, port: int, token: str = TOKEN) -> "CallClient":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        await handshake.client_hello(self.reader, self.writer, token)
        self._reader_task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            while True:
                main, buffers = await framing.read_frame(self.reader)
                response = wire.loads(main, buffers, self.resolve_class)
                future = self._pending.pop(response.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(response)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"worker connection lost: {exc!r}"))

    async def call(self, fn: str, *args, cost: float = 100.0, timeout: float = 30.0, **kwargs) -> dict:
        self._next_id += 1
        call_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        request = {"op": "call", "id": call_id, "fn": fn, "args": args, "kwargs": kwargs,
                   "cost": cost, "timeout": timeout}
        main, buffers = wire.dumps(request, self.class_refs)
        async with self._lock:
            await framing.write_frame(self.writer, main, buffers)
        return await asyncio.wait_for(future, timeout + 10)

    async def close(self):
        self._reader_task.cancel()
        self.writer.close()
