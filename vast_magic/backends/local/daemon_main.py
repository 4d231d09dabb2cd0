"""The local engine process: ``python -m vast_magic.backends.local.daemon_main --home DIR``.

Its life: take the home's lock (a second daemon exits at once), reap the
workers an earlier daemon left and restore stored deployments, listen on
127.0.0.1 (port 0), announce pid/port in ``engine.json``, then serve clients
and workers until SIGTERM or until it has had no deployment for the idle
timeout. On the way out it stops every worker it started (by pid + start time).
Every connection must pass the mutual handshake before anything is unpickled.
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import resource
import signal
import sys
import time
from pathlib import Path

from ...runtime import framing, handshake, shm
from . import daemon_ops
from . import workers as procs
from .channel import Channel
from .launcher import load_token, write_json_atomic
from .engine import Engine
from .logfiles import LogLimits
from .loops import keep_running, log
from .store import Store

__all__ = ["WORKER_OPS", "SEGMENT_MAX_AGE", "SEGMENT_DEAD_GRACE", "raise_file_limit", "serve", "main"]

WORKER_OPS = {"state", "log", "load"}
SEGMENT_MAX_AGE = 300.0      # a segment nobody attached in 5 minutes never will be
SEGMENT_DEAD_GRACE = 10.0    # its creator died: a receiver reading the frame right now still finds it


def raise_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one (a flood of sockets must not starve the engine
    of descriptors for its workers, database and /proc reads); returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, 1 << 16):
        if target == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and target <= soft):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return soft, target
        except (ValueError, OSError):
            continue
    return soft, soft


async def _connection(engine: Engine, gate: handshake.PreAuthGate, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    if not await gate.admit(reader, writer):
        writer.close()
        return
    channel = Channel(reader, writer)
    engine.channels.add(channel)
    is_worker = False
    try:
        while True:
            message = await channel.recv()
            if not isinstance(message, dict):
                continue
            if message.get("op") in WORKER_OPS and "worker" in message:
                is_worker = True
                await engine.on_worker_message(message, channel)
            else:
                engine.background(daemon_ops.handle(engine, channel, message))
    except (asyncio.IncompleteReadError, ConnectionError, framing.FrameError, OSError, asyncio.CancelledError):
        pass                                   # peer gone, or the engine is shutting down
    finally:
        engine.channels.discard(channel)
        channel.close()
        for subscribers in engine.subscribers.values():
            subscribers.discard(channel)
        if is_worker:
            await engine.on_worker_disconnect(channel)


async def serve(home: Path, idle_timeout: float, log_limits: LogLimits = LogLimits(), fork: bool = True) -> None:
    token = load_token(home)
    store = Store(home)
    segments = _segment_dir(home)
    engine = Engine(home, store, token, idle_timeout, shm_dir=segments, log_limits=log_limits, fork=fork)
    engine.restore()
    gate = handshake.PreAuthGate(token)
    server = await asyncio.start_server(lambda r, w: _connection(engine, gate, r, w), "127.0.0.1", 0, limit=1 << 20)
    engine.port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, engine.stopping.set)
    write_json_atomic(home / "engine.json", {"pid": os.getpid(), "start_time": procs.proc_start_time(os.getpid()),
                                             "port": engine.port, "started": time.time()})
    log(f"listening on 127.0.0.1:{engine.port}, {len(engine.deployments)} deployment(s) restored, "
        f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    reconciler = asyncio.ensure_future(engine.reconcile_forever())
    janitor = asyncio.ensure_future(_sweep_segments_forever(segments))
    await engine.stopping.wait()
    log("stopping")
    server.close()
    reconciler.cancel()
    janitor.cancel()
    engine.stop_scaling()                      # its autoscale steps, which may wait on a template
    workers = [w for dep in engine.deployments.values() for w in dep.workers.values()] + list(engine.leaving)
    await asyncio.gather(*(procs.stop(w.rec.pid, w.rec.start_time, 2.0, w.popen) for w in workers))
    for worker in workers:
        store.delete_worker(worker.rec.id)
        worker.drain_output()                  # their last words, into their logs
        for pipe in worker.pipes:
            pipe.close()
        if worker.log is not None:
            worker.log.close()
    await engine.templates.stop_all()         # starts that waited for a template end now
    await engine.starts.finished()            # and each stops the worker it started, if any
    for channel in list(engine.channels):
        channel.close()
    await asyncio.sleep(0.05)                  # let connection handlers see the close before the store goes
    (home / "engine.json").unlink(missing_ok=True)
    shm.remove_dir(segments)                   # no worker left to attach what is still there
    store.close()


def _segment_dir(home: Path) -> str | None:
    """The home's shared-memory folder, checked private, with what crashed processes left swept; None
    (big buffers inline) when it is not private: engine.log says why and what to do."""
    directory = shm.segment_dir(home)
    if directory is None:
        return None
    try:
        shm.prepare_dir(directory)
    except OSError as exc:
        log(f"not using shared memory: {exc}")
        return None
    removed = shm.sweep(directory, older_than=SEGMENT_MAX_AGE)      # no grace: their creators died before us
    if removed:
        log(f"removed {removed} shared-memory segment(s) left by processes that died")
    return directory


async def _sweep_segments_forever(directory: str | None, every: float = 15.0) -> None:
    """Shared-memory segments normally vanish when attached, or when the peer's connection closes; remove
    those of creators that died mid-transfer, and any nobody attached for SEGMENT_MAX_AGE."""
    async def sweep() -> None:
        removed = await asyncio.to_thread(shm.sweep, directory, SEGMENT_MAX_AGE, SEGMENT_DEAD_GRACE)
        if removed:
            log(f"removed {removed} shared-memory segment(s) nobody attached")
    await keep_running(sweep, every, "shared-memory sweep")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vast_magic local engine daemon")
    parser.add_argument("--home", required=True)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--worker-log-bytes", type=int, default=LogLimits().max_bytes)
    parser.add_argument("--worker-log-files", type=int, default=LogLimits().files)
    parser.add_argument("--no-fork", action="store_true", help="start every worker as a fresh interpreter")
    args = parser.parse_args(argv)
    home = Path(args.home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    raise_file_limit()
    lock = open(home / "engine.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another engine holds the lock for this home; exiting")
        return 0
    asyncio.run(serve(home, args.idle_timeout, LogLimits(args.worker_log_bytes, args.worker_log_files),
                      fork=not args.no_fork))
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
