"""The daemon's engine: deployments' workers started, routed, watched, scaled and stopped.

The store (SQLite) is the durable copy; ``engine_model`` is the live one, with
the process handles, engine connections and load reports. Everything runs on
the daemon's single event loop, so no locks. ``reconcile`` is the engine's
heartbeat: it notices dead workers, expires ttl deployments, applies the pure
autoscaler policy and shuts an idle engine down. It never waits for a worker
start (one can wait a minute for its template): its autoscale steps run beside
it, one at a time per deployment.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ...errors import DeployError
from ...reports import LogLine
from ...runtime import shm
from . import logfiles
from . import workers as procs
from .bundles import worker_dir
from .channel import Channel
from .engine_model import LOAD_STALE, Deployment, Version, Worker
from .failures import add_failure, exit_cause, failures_to_keep, mark_replaced
from .loops import keep_running
from .spawned import SpawnedCalls
from .policy import LoadSnapshot, PolicyState, desired_workers, effective_params
from .store import DeploymentRecord, Store, WorkerRecord
from .templates import ForkedProcess, Templates
from .worker_output import OutputPipe

__all__ = ["DRAIN_GRACE", "Engine", "Unwanted"]

DRAIN_GRACE = 30.0           # seconds a drained worker may take to finish its in-flight calls


class Unwanted(DeployError):
    """No worker may join the deployment now: it was torn down, or the engine is stopping. A deploy that meets
    this fails with it; an autoscale step simply ends (the deployment is gone, there is nothing to scale)."""


def _safe_id(name: str, tag: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{tag}")[:40]
    return f"{stem}-{secrets.token_hex(4)}"


class Engine:
    def __init__(self, home: Path, store: Store, token: str, idle_timeout: float, shm_dir: str | None = None,
                 log_limits: logfiles.LogLimits = logfiles.LogLimits(), fork: bool = True):
        self.home, self.store, self.token, self.idle_timeout = home, store, token, idle_timeout
        self.shm_dir = shm_dir                            # None: big buffers go inline (no usable /dev/shm)
        self.log_limits = log_limits
        self.port = 0
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.subscribers: dict[tuple[str, str], set[Channel]] = collections.defaultdict(set)
        self.applying: set[tuple[str, str]] = set()      # new-version deploys in progress
        self.apply_tasks: dict[tuple[str, str], asyncio.Task] = {}   # the request task of each apply, to cancel it
        self.channels: set[Channel] = set()               # every open connection, closed on shutdown
        self.last_activity = time.monotonic()
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.spawned = SpawnedCalls()                     # f.spawn: calls run here, answers kept for a while
        self.templates = Templates(home, enabled=fork)    # warm starts: a template per version, forked per worker
        self.starts = procs.StartsInFlight()              # worker starts in flight: engine stop waits for them
        self.ticks = 0
        self.leaving: set[Worker] = set()                 # workers of torn-down deployments, being stopped

    def background(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def prune_logs(self) -> None:
        """Drop the logs of long-gone workers so a busy home does not grow without end (runs in a thread)."""
        live = {wid for dep in list(self.deployments.values()) for wid in list(dep.workers)}
        logfiles.prune(self.home, live, self.log_limits)

    def find_worker(self, worker_id: str) -> tuple[Deployment, Worker] | tuple[None, None]:
        for dep in self.deployments.values():
            if worker_id in dep.workers:
                return dep, dep.workers[worker_id]
        return None, None

    # -- deployments -------------------------------------------------------------------
    def new_deployment(self, rec: DeploymentRecord, committed: bool) -> Deployment:
        dep = Deployment(rec=rec, params=effective_params(rec.autoscaling), committed=committed)
        self.deployments[dep.key] = dep
        return dep

    def commit(self, dep: Deployment, rec: DeploymentRecord) -> None:
        dep.rec, dep.committed, dep.last_error = rec, True, None
        dep.failed = ()
        dep.params = effective_params(rec.autoscaling)
        self.store.put_deployment(rec)

    def restore(self) -> None:
        """At start-up: reap workers an earlier daemon left, then bring stored deployments back."""
        self.templates.clear_folder()          # templates ended with the engine that started them
        for rec in self.store.workers():
            procs.stop_now(rec.pid, rec.start_time, grace=2.0)
            self.store.delete_worker(rec.id)
            shutil.rmtree(rec.workdir, ignore_errors=True)
        now = time.time()
        for rec in self.store.deployments():
            rec.last_heartbeat = now          # clients could not heartbeat while we were down
            self.store.put_deployment(rec)
            self.new_deployment(rec, committed=True)

    async def teardown(self, dep: Deployment, templates_gone: bool = True) -> None:
        """Drop ``dep`` and stop its workers; with ``templates_gone``, also wait until the templates it no longer
        needs are gone (a teardown request's answer promises that). The reconciler's ttl expiry passes False:
        its heartbeat must not wait seconds for a template that has to be killed (engine stop still does).
        Its workers stay in ``leaving`` while they are stopped, so an engine stop meanwhile stops them too."""
        self.deployments.pop(dep.key, None)
        self.store.delete_deployment(*dep.key)
        _cancel(dep.scale_step)               # its start leaves nothing behind; engine stop waits for its end
        await self.publish_routes(dep)
        workers = list(dep.workers.values())
        self.leaving.update(workers)          # no longer in a deployment: engine stop finds them here
        try:
            await asyncio.gather(*(self.stop_worker(w, grace=2.0) for w in workers))
        finally:
            self.leaving.difference_update(workers)
        for worker in workers:
            self.forget_worker(dep, worker, "stopped", None)
        if templates_gone:
            await self.templates.retire(self.wanted_templates(), torn_down=dep.key)
        else:
            self.templates.retire_soon(self.wanted_templates(), torn_down=dep.key)
        self.touch()

    def wanted_templates(self) -> set[tuple]:
        """The versions whose templates stay: each deployment's current one, and those of live workers."""
        wanted = {(*dep.key, dep.version()) for dep in self.deployments.values()}
        return wanted | {w.template_key for dep in self.deployments.values() for w in dep.workers.values()}

    async def publish_routes(self, dep: Deployment) -> None:
        dep.routes_changed.set()
        dep.routes_changed = asyncio.Event()
        message = {"push": "routes", "name": dep.rec.name, "tag": dep.rec.tag, "routes": dep.routes()}
        for channel in list(self.subscribers.get(dep.key, ())):
            try:
                await channel.send(message)
            except (ConnectionError, OSError):
                self.subscribers[dep.key].discard(channel)

    # -- workers -------------------------------------------------------------------------
    def _why_unwanted(self, dep: Deployment) -> str | None:
        """Why no worker may join ``dep`` now, or None."""
        if self.stopping.is_set():
            return "the engine is stopping"
        if self.deployments.get(dep.key) is not dep:
            return f"{dep.rec.name}/{dep.rec.tag} was torn down"
        return None

    async def start_worker(self, dep: Deployment, version: Version, role: str) -> Worker:
        """A new worker of ``version`` in ``dep``. Its start can wait long (for its template); one that ends
        after ``dep`` was torn down or the engine began stopping is stopped at once, as nobody else would,
        and ``Unwanted`` (a ``DeployError``) says so."""
        if why := self._why_unwanted(dep):
            raise Unwanted(f"no worker is started: {why}")
        return await self.starts.run(self._start_worker(dep, version, role))

    async def _start_worker(self, dep: Deployment, version: Version, role: str) -> Worker:
        wanted_at = time.monotonic()
        wid = _safe_id(dep.rec.name, dep.rec.tag)
        workdir = self.home / "workers" / wid
        log_path = logfiles.worker_log_path(self.home, dep.rec.name, dep.rec.tag, wid)
        env = procs.worker_environment(os.environ, version.env, version.secrets)
        template_key = (*dep.key, version)
        await asyncio.to_thread(self.prune_logs)
        workdir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        launch = {"engine": f"127.0.0.1:{self.port}", "token": self.token, "worker_id": wid, "shm_dir": self.shm_dir,
                  "version": version.version}
        copying = asyncio.ensure_future(asyncio.to_thread(worker_dir, Path(version.bundle_dir), workdir))
        try:
            await asyncio.shield(copying)
            started = await self.templates.start_worker(template_key, version, workdir, env, launch)
        except BaseException:          # no worker (a cancelled deploy, a failed spawn): its folder goes too
            self.starts.remove_folder(workdir, after=copying)
            raise
        popen = started.process
        start_time = popen.start_time if isinstance(popen, ForkedProcess) else _start_time(popen.pid)
        if why := self._why_unwanted(dep):
            await self.starts.stop_unwanted(popen, start_time, workdir)
            raise Unwanted(f"worker {wid} was stopped as soon as it started: {why}")
        rec = WorkerRecord(wid, dep.rec.name, dep.rec.tag, popen.pid, start_time, None,
                           "starting", None, version.version, None, str(workdir), str(log_path), time.time())
        self.store.put_worker(rec)
        worker = Worker(rec, popen, role, start=started.start, start_note=started.note, template_key=template_key,
                        wanted_at=wanted_at, log=logfiles.WorkerLog(log_path, self.log_limits))
        output = functools.partial(self._on_output, dep, worker)
        worker.pipes = (OutputPipe(popen.stdout, "stdout", output), OutputPipe(popen.stderr, "stderr", output))
        dep.workers[wid] = worker
        if role == "serving":
            dep.failed = mark_replaced(dep.failed, wid)
        dep.notify("WorkerState", worker=wid, state="starting", pid=popen.pid, version=version.version,
                   start=started.start)
        return worker

    async def drain(self, dep: Deployment, worker: Worker) -> None:
        """Stop routing to ``worker``, let its in-flight calls finish, then stop it."""
        worker.role = "draining"
        await self.publish_routes(dep)
        self.background(self._finish_drain(worker))

    async def _finish_drain(self, worker: Worker) -> None:
        await asyncio.sleep(0.5)              # clients switch to the new routes first
        await self.stop_worker(worker, grace=DRAIN_GRACE)

    async def stop_worker(self, worker: Worker, grace: float) -> None:
        if worker.channel is not None:
            try:
                await worker.channel.send({"op": "stop", "grace": grace})
            except (ConnectionError, OSError):
                pass
            deadline = time.monotonic() + grace + 2.0
            while time.monotonic() < deadline and procs.is_running(worker.rec.pid, worker.rec.start_time, worker.popen):
                await asyncio.sleep(0.05)
        await procs.stop(worker.rec.pid, worker.rec.start_time, grace=2.0, popen=worker.popen)

    def forget_worker(self, dep: Deployment, worker: Worker, state: str, error: str | None,
                      cause: str | None = None) -> None:
        """The process is gone: record why, drop it everywhere, wake whoever waits on it.

        ``cause`` is how it ended ("killed by SIGKILL"); by default the last line of ``error``."""
        worker.drain_output()                      # a dead writer's last bytes are still in the pipe
        for pipe in worker.pipes:
            pipe.close()
        dep.workers.pop(worker.rec.id, None)
        self.store.delete_worker(worker.rec.id)
        shutil.rmtree(worker.rec.workdir, ignore_errors=True)
        shm.sweep_dead_holders(self.shm_dir)
        worker.rec.state, worker.rec.error = state, error
        if state == "failed":                      # gone, but status keeps saying why for a while
            last = logfiles.tail(Path(worker.rec.log_path), 1)
            dep.failed = add_failure(dep.failed, worker.info(), cause, last[0].text if last else None, time.time())
        if worker.log is not None:
            worker.log.close()
        if worker.channel is not None:
            worker.channel.close()
        worker.settled.set()
        dep.notify("WorkerState", worker=worker.rec.id, state=state, pid=worker.rec.pid,
                   version=worker.rec.version, error=error)

    # -- messages from workers -------------------------------------------------------------
    async def on_worker_message(self, msg: dict, channel: Channel) -> None:
        dep, worker = self.find_worker(str(msg.get("worker")))
        if worker is None or self.stopping.is_set():
            return
        worker.channel = channel
        op = msg.get("op")
        if op == "state":
            await self._on_state(dep, worker, msg)
        elif op == "log":
            self._on_log(dep, worker, msg.get("lines") or [])
        elif op == "load":
            worker.load, worker.load_at = float(msg.get("inflight") or 0.0), time.monotonic()

    async def _on_state(self, dep: Deployment, worker: Worker, msg: dict) -> None:
        worker.drain_output()                    # what it printed before this state is logged before it
        rec = worker.rec
        repeated = rec.state == str(msg.get("state")) and not msg.get("error")  # "starting": engine said it at spawn
        rec.state = str(msg.get("state"))
        rec.perf = msg.get("perf") if msg.get("perf") is not None else rec.perf
        rec.port = msg.get("port") or rec.port
        rec.error = msg.get("error") or rec.error
        self.store.put_worker(rec)
        if rec.state == "ready" and rec.perf is not None:
            dep.notify("BenchmarkScored", worker=rec.id, perf=rec.perf, median=msg.get("median"))
        if not repeated:
            timing = {}
            if rec.state == "ready":
                timing = {"start": worker.start, "startup": time.monotonic() - worker.wanted_at}
                why = f": {worker.start_note}" if worker.start_note else ""
                print(f"worker {rec.id} ready {timing['startup'] * 1000:.0f} ms after it was wanted "
                      f"({worker.start}{why})", flush=True)
                version = worker.template_key[2]
                self.templates.warm(worker.template_key,
                                    procs.worker_environment(os.environ, version.env, version.secrets))
            dep.notify("WorkerState", worker=rec.id, state=rec.state, perf=rec.perf, pid=rec.pid,
                       version=rec.version, error=rec.error, **timing)
        if rec.state == "failed" and worker.role != "draining":
            dep.last_error = f"worker {rec.id} failed:\n{rec.error or 'no traceback'}"
        if rec.state in ("ready", "failed"):
            worker.settled.set()
        if rec.state == "ready" and worker.role == "serving":
            dep.failures = 0
            await self.publish_routes(dep)

    def _on_log(self, dep: Deployment, worker: Worker, lines: list) -> None:
        """Lines printed inside calls, tagged with their function (through the engine link)."""
        self.record(dep, worker, [LogLine(float(when), worker.rec.id, str(stream), str(text), function)
                                  for when, stream, text, function in lines])

    def _on_output(self, dep: Deployment, worker: Worker, stream: str, texts: list[str]) -> None:
        """Lines the worker wrote to its stdout/stderr (its output pipes)."""
        now = time.time()
        self.record(dep, worker, [LogLine(now, worker.rec.id, stream, text, None) for text in texts])

    def record(self, dep: Deployment, worker: Worker, records: list[LogLine]) -> None:
        """Show the lines to whoever follows a deploy, and append them to the worker's rotated log."""
        if dep.watchers:
            for line in records:
                dep.notify("LogLine", **asdict(line))
        if worker.log is not None:
            worker.log.write(records)

    async def on_worker_disconnect(self, channel: Channel) -> None:
        for dep in list(self.deployments.values()):
            for worker in list(dep.workers.values()):
                if worker.channel is channel:
                    worker.channel = None

    # -- the engine's heartbeat ------------------------------------------------------------
    async def reconcile_forever(self, period: float = 0.25) -> None:
        """The heartbeat; a failing step (EMFILE, a full disk, a bug) is logged and retried, never the end."""
        await keep_running(self.reconcile_once, period, "reconcile", stop=self.stopping)

    async def reconcile_once(self) -> None:
        """One beat. A deployment whose step fails does not starve the others; the first failure is raised
        afterwards, so the loop logs it and backs off."""
        self.ticks += 1
        failure: Exception | None = None
        for dep in list(self.deployments.values()):
            try:
                await self._reconcile(dep)
            except Exception as exc:
                failure = failure or exc
        if self.templates.by_key:
            try:                               # only begun here: a template that must be killed takes seconds
                self.templates.retire_soon(self.wanted_templates())
            except Exception as exc:
                failure = failure or exc
        serving = any(dep.committed or dep.rollout for dep in self.deployments.values())
        if not serving and time.monotonic() - self.last_activity > self.idle_timeout:
            self.stopping.set()
        if failure is not None:
            raise failure

    async def _reconcile(self, dep: Deployment) -> None:
        await self._reap_exited(dep)
        if dep.failed:
            dep.failed = failures_to_keep(dep.failed, time.time())
        if dep.committed and dep.key in self.deployments:
            if dep.rec.ttl and time.time() - dep.rec.last_heartbeat > dep.rec.ttl:
                self.background(self._expire(dep))
            elif self.ticks % 4 == 0 and not dep.rollout:
                self.scale_in_background(dep)

    async def _expire(self, dep: Deployment) -> None:
        """Its ttl ran out with no heartbeat from its owner: tear it down beside the heartbeat, as stopping a
        worker that does not answer takes seconds (its grace, SIGTERM, SIGKILL)."""
        print(f"{dep.rec.name}/{dep.rec.tag}: no heartbeat for its ttl of {dep.rec.ttl:g}s; tearing it down",
              flush=True)
        try:
            await self.teardown(dep, templates_gone=False)
        except Exception as exc:
            print(f"teardown of {dep.rec.name}/{dep.rec.tag} failed: {type(exc).__name__}: {exc}", flush=True)

    def scale_in_background(self, dep: Deployment) -> None:
        """Begin an autoscale step for ``dep`` beside the heartbeat (or beside a spawned call that found it
        scaled to zero): its starts can wait up to a minute for a template, and meanwhile the beat must go on
        noticing the dead workers, ttl and idleness of every deployment. One step at a time per deployment:
        a caller that finds the last one still running leaves it be. It runs as a start in flight (engine
        stop waits for it); ``scale_now`` logs its failure."""
        if dep.scale_step is None or dep.scale_step.done():
            dep.scale_step = self.starts.run(self.scale_now(dep))

    def stop_scaling(self) -> None:
        """At engine stop: the reconciler's autoscale steps end now, rather than wait for a template only to
        stop what they start; a cancelled start leaves no process nor folder, and ``starts.finished`` waits
        for each step's end."""
        for dep in self.deployments.values():
            _cancel(dep.scale_step)

    async def _reap_exited(self, dep: Deployment) -> None:
        for worker in list(dep.workers.values()):
            code = worker.popen.poll() if worker.popen is not None else None
            if code is None and procs.is_running(worker.rec.pid, worker.rec.start_time, worker.popen):
                continue
            if worker.has_unread_last_words(time.monotonic()):
                continue
            was_routed = worker.role == "serving" and worker.rec.state == "ready"
            if worker.role == "draining":
                self.forget_worker(dep, worker, "stopped", None)
            else:
                worker.drain_output()
                cause = exit_cause(code)
                error = worker.rec.error or f"worker {cause}\n" + "\n".join(
                    line.text for line in logfiles.tail(Path(worker.rec.log_path), 20))
                if worker.rec.state != "ready":
                    dep.failures += 1
                    dep.next_spawn = time.monotonic() + min(30.0, 0.5 * 2 ** dep.failures)
                self.forget_worker(dep, worker, "failed", error, None if worker.rec.error else cause)
            if was_routed:
                await self.publish_routes(dep)

    async def autoscale(self, dep: Deployment) -> None:
        """Apply the pure policy to this deployment's load; start or drain the difference. A teardown can come
        while this step waits for the lock (another step's start holds it, for as long as a template takes) or
        while its own start is in flight: then the deployment simply ends here, which is no failure."""
        async with dep.scaling:
            if self._why_unwanted(dep):
                return
            try:
                await self._autoscale(dep)
            except Unwanted as exc:
                _say_once(dep, f"scaling {dep.rec.name}/{dep.rec.tag} ended: {exc}")
                return
        dep.scaling_said = None

    async def scale_now(self, dep: Deployment) -> None:
        """An autoscale step out of turn; if it fails, the reconciler's next one tries again (the same failure
        on every beat, e.g. EMFILE, is logged once until a step succeeds or fails differently)."""
        try:
            await self.autoscale(dep)
        except Exception as exc:
            _say_once(dep, f"scaling {dep.rec.name}/{dep.rec.tag} failed: {type(exc).__name__}: {exc}")

    async def _autoscale(self, dep: Deployment) -> None:
        now = time.monotonic()
        active = [w for w in dep.workers.values() if w.role == "serving"]
        ready = [w for w in active if w.rec.state == "ready"]
        load = LoadSnapshot(inflight=sum(w.load for w in ready if now - w.load_at < LOAD_STALE),
                            waiting_calls=dep.waiting, waiting_workload=dep.waiting_workload,
                            perfs=tuple(w.rec.perf or 0.0 for w in ready if w.rec.perf))
        want, dep.policy = desired_workers(dep.params, load, now, PolicyState(len(active), dep.policy.last_needed))
        if want > len(active) and now >= dep.next_spawn:
            for _ in range(want - len(active)):
                await self.start_worker(dep, dep.version(), "serving")
        elif want < len(active):
            idle_first = sorted(active, key=lambda w: (w.rec.state == "ready", w.load))
            for worker in idle_first[: len(active) - want]:
                await self.drain(dep, worker)


def _say_once(dep: Deployment, line: str) -> None:
    """Log ``line`` to engine.log unless it is what this deployment's scaling said last."""
    if line != dep.scaling_said:
        print(line, flush=True)
    dep.scaling_said = line


def _cancel(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()


def _start_time(pid: int) -> int | None:
    """The new worker's start time; None when /proc cannot tell now (its pid alone then identifies it)."""
    try:
        return procs.proc_start_time(pid)
    except procs.procinfo.Unknown:
        return None
