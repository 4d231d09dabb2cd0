"""A teardown whose worker does not stop: the heartbeat goes on, and an engine stop still stops it.

A worker that does not answer its stop (here: frozen with SIGSTOP, as a
worker wedged in C code holding the GIL would be) takes a teardown about 6 s:
the stop message's grace, then SIGTERM and 2 s, then SIGKILL. Once, the
reconciler awaited a ttl teardown in its beat, so for those seconds no death
of any other deployment's worker was noticed; and a teardown in progress at
engine stop had already taken its workers out of the deployments the daemon
stops at shutdown, so a frozen one outlived the engine. Real engine, real
processes; each test ends with the worker's pid checked gone.
"""
from __future__ import annotations

import os
import signal

from tests.backends.local.engine_harness import APP, make_bundle, pid_gone, plan
from vast_magic.backends.local import launcher
from vast_magic.backends.local.backend import LocalBackend

ONE_WORKER = {"cold_workers": 1, "max_workers": 1, "inactivity_timeout": 0}


def _frozen_ttl_deployment(harness):
    """Deploy "demo" with a 1.5 s ttl from a backend that then goes away, freeze its worker, and return the
    worker's record once the ttl teardown has begun (the deployment is gone, its worker is being stopped)."""
    owner = LocalBackend(harness.home)
    harness.run(owner.apply(plan(make_bundle(harness.folder), ttl=1.5, autoscaling=ONE_WORKER), lambda e: None))
    harness.collect()
    [worker] = harness.workers()
    os.kill(worker.pid, signal.SIGSTOP)
    owner.close()                                    # no more heartbeats: the ttl runs out
    harness.wait_for(lambda: harness.run(harness.backend.status("demo", "default")).state == "stopped",
                     timeout=15, what="the ttl teardown begun")
    return worker


def _unfreeze(worker) -> None:
    """A failing test must not leave a frozen process: SIGKILL works on a stopped one (by pid, checked)."""
    if not pid_gone(worker.pid, worker.start_time):
        os.kill(worker.pid, signal.SIGKILL)


def test_a_ttl_teardown_of_a_frozen_worker_does_not_hold_the_heartbeat(harness):
    harness.apply(plan(make_bundle(harness.folder / "b", app=APP.format(version="b")), name="b",
                       autoscaling=ONE_WORKER))
    frozen = _frozen_ttl_deployment(harness)
    try:
        harness.kill_and_see_noticed("b", within=1.5)
        assert not pid_gone(frozen.pid, frozen.start_time), "the frozen worker should still be being stopped"
        harness.wait_for(lambda: pid_gone(frozen.pid, frozen.start_time) and harness.workers() == [], timeout=15,
                         what="the frozen worker stopped by its teardown, its record gone")
    finally:
        _unfreeze(frozen)


def test_engine_stop_during_a_teardown_stops_its_frozen_worker(harness):
    frozen = _frozen_ttl_deployment(harness)
    try:
        engine = launcher.running_engine(harness.home)
        os.kill(engine["pid"], signal.SIGTERM)       # `engine stop` without its reaping of recorded workers after
        harness.wait_for(lambda: pid_gone(engine["pid"], engine["start_time"]), timeout=20, what="the engine gone")
        assert pid_gone(frozen.pid, frozen.start_time), "the frozen worker outlived the engine"
        assert harness.workers() == [], "its record outlived the engine"
        assert "Traceback" not in (harness.home / "engine.log").read_text()
    finally:
        _unfreeze(frozen)
