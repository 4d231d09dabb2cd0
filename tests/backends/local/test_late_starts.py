"""A worker whose start ends after nobody wants it any more is stopped at once, and nothing of it is left.

A warm start can wait up to a minute for its version's template. Here the
template's import is held at a gate (``GATED_APP``) so that a scale-up's start
is still waiting when its deployment is torn down, or when the engine stops;
it then ends with a fresh worker the engine must stop itself, by pid. Real
engine, real processes; the fixture's check at the end covers every process
whose working directory is in the home.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import Future

import pytest

from tests.backends.local.engine_harness import APP, GATED_APP, Harness, make_bundle, pid_gone, plan, processes_in
from vast_magic import loop
from vast_magic.backends.local import launcher, templates

pytestmark = pytest.mark.skipif(templates.fork_unavailable() is not None, reason="no fork here")

SCALING = {"cold_workers": 1, "max_workers": 2, "inactivity_timeout": 0}


def _a_start_waiting_on_the_template(harness: Harness) -> Future:
    """Deploy one (fresh) worker; its template boots and is held at its import; a scale-up to two then waits
    on it. Returns that scale-up's apply (``wait=False``: it answers once the start has ended)."""
    gate = harness.folder / "gate"
    gate.touch()
    bundle = make_bundle(harness.folder, app=GATED_APP.format(gate=str(gate)))
    harness.apply(plan(bundle, autoscaling=SCALING))
    harness.wait_for(lambda: processes_in(harness.home / "templates"), what="the template, held at its import")
    scale_up = loop.submit(harness.backend.apply(
        plan(bundle, tier=1, wait=False, autoscaling={**SCALING, "cold_workers": 2}), harness.events.append))
    harness.wait_for(lambda: len(os.listdir(harness.home / "workers")) == 2, what="the second worker's start")
    return scale_up


def _no_worker_left(harness: Harness) -> None:
    assert harness.workers() == [], "a worker is still recorded"
    assert processes_in(harness.home / "workers") == [], "a worker process is still running"


def test_a_start_that_ends_after_its_teardown_stops_its_worker(harness):
    scale_up = _a_start_waiting_on_the_template(harness)
    harness.run(harness.backend.teardown("demo", "default"))
    scale_up.result(timeout=60)
    _no_worker_left(harness)
    assert "was stopped as soon as it started: demo/default was torn down" in (
        harness.home / "engine.log").read_text()


def test_a_start_that_ends_while_the_engine_stops_stops_its_worker(harness):
    scale_up = _a_start_waiting_on_the_template(harness)
    engine = launcher.running_engine(harness.home)
    os.kill(engine["pid"], signal.SIGTERM)          # `engine stop` without its reaping of recorded workers after
    harness.wait_for(lambda: pid_gone(engine["pid"], engine["start_time"]), what="the engine gone")
    _no_worker_left(harness)
    with contextlib.suppress(Exception):            # its connection closed with the engine
        scale_up.result(timeout=30)


def test_a_teardown_during_a_scale_up_ends_the_deployment_quietly(harness):
    """The scale-up's start holds the deployment's scaling lock; the reconciler's own autoscale step waits for
    it meanwhile. Once, after the teardown that step went on for a deployment that no longer existed (or
    its own start ended for nothing), raised, and engine.log got a "reconcile failed" traceback."""
    scale_up = _a_start_waiting_on_the_template(harness)
    time.sleep(1.5)                                 # the reconciler autoscales every 4 beats (1 s): it waits too
    harness.run(harness.backend.teardown("demo", "default"))
    scale_up.result(timeout=60)
    time.sleep(1.5)                                 # the reconciler's step and a few more beats
    _no_worker_left(harness)
    log = (harness.home / "engine.log").read_text()
    assert "reconcile failed" not in log and "Traceback" not in log, log


#: the template forks at once but holds its answer while the file ``gate`` exists: the forked child is running
#: while the engine's start still waits for the fork answer
ANSWER_HELD_APP = '''
import os, sys, time
if sys.argv[0].endswith("template.py"):
    _fork = os.fork

    def _fork_then_hold():
        pid = _fork()
        while pid and os.path.exists({gate!r}):
            time.sleep(0.02)
        return pid
    os.fork = _fork_then_hold
    open({gate!r} + ".imported", "w").close()
''' + APP.format(version="v1")


def _exited(pid: int) -> bool:
    """Gone, or a zombie (it ended; its parent, the template, has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_start_cancelled_while_it_waits_for_the_fork_answer_leaves_no_child_nor_folder(harness):
    """The template has forked the child but not answered yet when the scale-up is cancelled (the client's
    Ctrl-C: ``cancel_apply``). Nobody will ever send that child its launch message: it ends at the end of its
    stdin, whose write end the cancelled start closed (not by the engine giving up on a silent template). The
    start's folder goes too; once, it was left in the home for good."""
    gate = harness.folder / "gate"
    bundle = make_bundle(harness.folder, app=ANSWER_HELD_APP.format(gate=str(gate)))
    harness.apply(plan(bundle, autoscaling=SCALING))
    harness.wait_for(lambda: (harness.folder / "gate.imported").exists(), what="the template, imported")
    [first] = harness.workers()
    gate.touch()
    scale_up = loop.submit(harness.backend.apply(
        plan(bundle, tier=1, wait=False, autoscaling={**SCALING, "cold_workers": 2}), harness.events.append))
    [child] = harness.wait_for(lambda: [p for p in processes_in(harness.home / "workers") if p != first.pid],
                               what="the forked child, its answer held")
    scale_up.cancel()                                # the client stops waiting: the engine cancels the apply
    cancelled_at = time.monotonic()
    harness.wait_for(lambda: _exited(child), timeout=10, what="the forked child's end")
    assert time.monotonic() - cancelled_at < templates.FORK_TIMEOUT - 1   # the cancel ended it, not a give-up
    gate.unlink()                                    # the template answers now, to nobody
    workers = harness.wait_for(lambda: len(harness.workers()) == 2 and harness.workers(),
                               what="the second worker the committed scaling still asks for")
    assert child not in {w.pid for w in workers}
    assert sorted(os.listdir(harness.home / "workers")) == sorted(w.id for w in workers)
    assert "start fresh" not in (harness.home / "engine.log").read_text()
