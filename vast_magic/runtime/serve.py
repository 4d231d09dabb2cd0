"""The worker's life, top to bottom: connect, install, load, enter contexts, benchmark, serve, stop.

Run as ``python -m vast_magic_runtime.serve`` (``python -m vast_magic.runtime.serve``
in the repository) with the extracted bundle as the working directory, and
one JSON object on stdin (then end of file), read before anything else:

- ``engine``: ``host:port`` of the engine (loopback)
- ``token``: the engine token (for the engine and for callers)
- ``worker_id``: the id every message carries
- ``fixed_perf`` (optional float): use this perf, skip the benchmark
- ``shm_dir`` (optional): take and send big buffers through shared memory there

The token comes through a pipe rather than the environment (or a path in it),
so user code, its subprocesses and crash reports do not find it there; stdin
is /dev/null afterwards, as it was before. The environment itself is only what
the engine chose (``workers.worker_environment``) plus the deployment's env.

Every step reports a state to the engine; any failure reports ``failed`` with
the traceback and exits non-zero. Losing the engine, its ``stop`` message or
SIGTERM stop the worker gracefully, within 2 s unless the engine granted more grace.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass

__all__ = ["SIGTERM_GRACE", "LOAD_INTERVAL", "Launch", "Worker", "main"]

if __package__ in (None, ""):                # pragma: no cover - only for `python serve.py` by mistake
    sys.exit("run this as a module: python -m vast_magic_runtime.serve")

from . import benchmark, contexts, executor, output, registry, setup, shm
from .engine_link import EngineLink
from .server import CallServer

SIGTERM_GRACE = 0.5
LOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class Launch:
    """What the engine tells a worker it starts (JSON on stdin)."""

    engine: str
    token: str
    worker_id: str
    bundle_dir: str
    fixed_perf: float | None = None
    shm_dir: str | None = None
    version: str | None = None       # the deployment version this worker runs (calls for another are refused)

    @classmethod
    def read(cls, fd: int = 0) -> "Launch":
        """Read the launch message from ``fd`` to its end, then point ``fd`` at /dev/null."""
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd)
        os.close(null)
        try:
            data = json.loads(b"".join(chunks))
            missing = [k for k in ("engine", "token", "worker_id") if not data.get(k)]
        except (ValueError, AttributeError) as exc:
            raise RuntimeError(f"the worker expects its launch message (JSON) on stdin: {exc}") from None
        if missing:
            raise RuntimeError(f"the worker's launch message lacks: {', '.join(missing)}")
        fixed = data.get("fixed_perf")
        return cls(str(data["engine"]), str(data["token"]), str(data["worker_id"]), os.getcwd(),
                   float(fixed) if fixed is not None else None, data.get("shm_dir") or None,
                   str(data["version"]) if data.get("version") else None)


class Worker:
    """What has been started so far, so stopping undoes exactly that."""

    def __init__(self, env: Launch, link: EngineLink):
        self.env, self.link = env, link
        self.app: registry.LoadedApp | None = None
        self.entered: contexts.EnteredContexts | None = None
        self.server: CallServer | None = None

    async def start(self) -> None:
        """The start-up checklist; each step is announced before it runs."""
        await self.link.state("starting")
        config = setup.read_config(self.env.bundle_dir)
        await self.link.state("installing")
        await setup.run_commands(config.get("runs"), self.env.bundle_dir)
        setup.apply_envs(config.get("envs"))
        self.app = await asyncio.to_thread(registry.load_bundle, self.env.bundle_dir)
        await self.link.state("contexts")
        self.entered = await contexts.enter_all(self.app)
        perf, median, per_function = await self.benchmark()
        self.server = CallServer(executor.Executor(self.app, per_function, self.env.version), self.env.token,
                                 segments=_segments(self.env.shm_dir))
        port = await self.server.start()
        await self.link.state("ready", perf=perf, median=median, port=port)

    async def benchmark(self) -> tuple[float | None, float | None, dict[str, float | None]]:
        """Worker perf = the first benchmarked function's; functions without a benchmark share it."""
        names = [n for n, e in self.app.remotes.items()
                 if e.options.get("benchmark_dataset") is not None or e.benchmark_generator is not None]
        if self.env.fixed_perf is not None or not names:
            perf = self.env.fixed_perf
            return perf, perf, {name: perf for name in self.app.remotes}
        await self.link.state("benchmarking")
        results = {}
        for name in names:
            entry = self.app.remotes[name]
            results[name] = await benchmark.run_benchmark(entry, _captured_invoke(entry))
            print(f"benchmark {name}: perf {results[name].perf:.6g}/s, median {results[name].median:.6g}/s")
        first = results[names[0]]
        return first.perf, first.median, {n: results[n].perf if n in results else first.perf
                                          for n in self.app.remotes}

    async def stop(self, grace: float) -> None:
        """Stop accepting, let calls finish within ``grace``, cancel the rest, exit contexts."""
        if self.server is not None:
            await self.server.shutdown(grace)
        if self.entered is not None:
            for failure in await self.entered.exit_all(timeout=max(0.8, grace)):
                print(failure, file=sys.stderr)

    async def report_load(self) -> None:
        """About once a second while busy (and once more when it becomes idle); an error skips one report."""
        was_busy = False
        while True:
            await asyncio.sleep(LOAD_INTERVAL)
            runner = self.server.executor if self.server else None
            busy = bool(runner and runner.inflight_calls)
            try:
                if busy or was_busy:
                    await self.link.send("load", inflight=runner.inflight_workload, calls=runner.inflight_calls)
            except Exception as exc:
                print(f"[vast_magic] load report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            was_busy = busy


def _segments(directory: str | None) -> "shm.Segments | None":
    """The engine's segment folder, if it is still private; else big buffers go inline (and the log says why)."""
    if not directory:
        return None
    try:
        return shm.Segments.open(directory)
    except OSError as exc:
        print(f"[vast_magic] not using shared memory: {exc}", file=sys.stderr)
        return None


def _captured_invoke(entry: registry.RemoteEntry):
    """Benchmark calls run like real calls; their output goes to the log, tagged with the function."""
    async def run(payload: dict):
        with output.capture(entry.name):
            return await executor.invoke(entry, (), payload, collect=True)   # a generator: all its items
    return run


async def live() -> int:
    """The whole life; returns the exit status."""
    env = Launch.read()
    link = EngineLink(env.worker_id)
    await link.connect(env.engine, env.token)
    output.install()
    output.set_log_sink(link.logs.write)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, link.request_stop, SIGTERM_GRACE)
    background = [asyncio.ensure_future(c) for c in (link.listen(), link.ship_logs_forever())]
    worker = Worker(env, link)
    try:
        return await _run(worker, link, background)
    finally:
        for task in background:
            task.cancel()
        await link.close()


async def _run(worker: Worker, link: EngineLink, background: list) -> int:
    startup = asyncio.ensure_future(worker.start())
    stop_wait = asyncio.ensure_future(link.stop_requested.wait())
    await asyncio.wait([startup, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    if not startup.done():                                   # stopped while starting
        startup.cancel()
        await asyncio.wait([startup], timeout=1.0)
    elif startup.exception() is not None:
        stop_wait.cancel()
        await worker.stop(0.0)
        await link.state("failed", error="".join(traceback.format_exception(startup.exception())))
        return 1
    else:
        background.append(asyncio.ensure_future(worker.report_load()))
        await stop_wait
    await worker.stop(link.stop_grace)
    await link.state("stopped")
    return 0


def _line_buffered() -> None:
    """stdout is a pipe the engine logs: each line goes out when printed, before the state it explains."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, OSError):
            pass


def main() -> None:
    _line_buffered()
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(live())
    except BaseException:                      # no engine to tell: the log is all we have
        traceback.print_exc()
        code = 2
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):            # the engine (the pipe's reader) is gone
            pass
    # os._exit, not sys.exit: a sync call still running in a to_thread worker would
    # otherwise hold the interpreter open and break the "exit within 2 s" promise.
    os._exit(code)


def _alias_package() -> None:
    """In the repository this runs as vast_magic.runtime; the generated app imports
    vast_magic_runtime.registry. One module object for both names keeps one worker_app()."""
    if __package__ != "vast_magic_runtime" and "vast_magic_runtime" not in sys.modules:
        for name, module in list(sys.modules.items()):
            if name == __package__ or name.startswith(__package__ + "."):
                sys.modules["vast_magic_runtime" + name[len(__package__):]] = module


if __name__ == "__main__":
    _alias_package()
    main()
