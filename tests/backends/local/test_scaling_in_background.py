"""The engine's heartbeat never waits for a worker start: the reconciler's autoscale steps run beside it.

A warm start can wait up to a minute for its version's template (its import).
Once, the reconciler awaited each deployment's autoscale step in its beat, so
a start waiting on a template held the whole heartbeat: dead workers of every
other deployment went unnoticed, ttl deployments did not expire, an idle
engine did not stop. Here deployment "a"'s template is held at its import
(``GATED_APP``) while its autoscaler replaces a killed worker; meanwhile
"b"'s worker is killed and must be noticed within a few beats. Then the
step still waiting meets a teardown, or engine stop: it is cancelled, and
nothing of it is left. Real engine, real processes; the fixture's check at the
end covers every process whose working directory is in the home. Last, with
no process: one step at a time per deployment, and a failed step is one plain
line in engine.log, not a failed beat; and a spawned call on a deployment
scaled to zero begins the deployment's one step, not an untracked one.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.backends.local.engine_harness import (APP, GATED_APP, Harness, engine_with_step, make_bundle,
                                                 pid_gone, plan, processes_in)
from vast_magic.backends.local import launcher, spawned, templates
from vast_magic.backends.local.engine import Engine, Unwanted

needs_fork = pytest.mark.skipif(templates.fork_unavailable() is not None, reason="no fork here")

SCALING = {"cold_workers": 1, "max_workers": 2, "inactivity_timeout": 0}


def _a_waits_on_its_template(harness: Harness) -> None:
    """Deploy "b" (plain) and "a" (its template held at its import), then kill "a"'s worker: the reconciler's
    autoscale step for "a" starts a replacement, which waits on the held template. Returns once it does."""
    harness.apply(plan(make_bundle(harness.folder / "b", app=APP.format(version="b")), name="b", autoscaling=SCALING))
    gate = harness.folder / "gate"
    gate.touch()
    harness.apply(plan(make_bundle(harness.folder, app=GATED_APP.format(gate=str(gate))), name="a",
                       autoscaling=SCALING))
    harness.wait_for(lambda: len(processes_in(harness.home / "templates")) == 2,
                     what="b's template, and a's held at its import")
    [first] = harness.workers("a")
    os.kill(first.pid, signal.SIGKILL)
    harness.wait_for(lambda: first.id not in {w.id for w in harness.workers("a")}
                     and _starting(harness, "a", besides=first.id), what="a's replacement start, waiting")
    time.sleep(0.3)                                 # it is awaiting the template now, not copying its folder


def _starting(harness: Harness, name: str, besides: str) -> list[str]:
    """Worker folders of ``name`` other than ``besides``: a start in flight has made its folder already."""
    return [d for d in os.listdir(harness.home / "workers") if d.startswith(f"{name}-") and d != besides]


def _open_the_gate(harness: Harness) -> None:
    (harness.folder / "gate").unlink(missing_ok=True)


@needs_fork
def test_a_start_waiting_on_its_template_does_not_stall_the_heartbeat(harness):
    """Before the steps ran beside the beat, b's death went unnoticed until a's start gave up on its template
    (READY_TIMEOUT, 60 s) or the gate opened."""
    try:
        _a_waits_on_its_template(harness)
        victim = harness.kill_and_see_noticed("b", within=1.5)
        failed = [w for w in harness.run(harness.backend.status("b", "default")).workers if w.state == "failed"]
        assert [w.id for w in failed] == [victim.id]
        assert _starting(harness, "a", besides="") != [], "a's start should still be waiting on its template"
    finally:
        _open_the_gate(harness)
    harness.wait_for(lambda: len(harness.workers("a")) == 1, what="a's replacement, once its template imported")


@needs_fork
def test_a_teardown_while_the_background_step_waits_leaves_nothing_and_logs_no_traceback(harness):
    try:
        _a_waits_on_its_template(harness)
        started = time.monotonic()
        harness.run(harness.backend.teardown("a", "default"), timeout=30)
        assert time.monotonic() - started < 10, "the teardown waited out the template's import"
    finally:
        _open_the_gate(harness)
    harness.wait_for(lambda: _starting(harness, "a", besides="") == [], timeout=10, what="a's start folder gone")
    assert harness.workers("a") == []
    time.sleep(1.5)                                 # a few more beats, each with b's autoscale step
    assert [w.name for w in harness.workers("b")] == ["b"]
    log = (harness.home / "engine.log").read_text()
    assert "Traceback" not in log and "reconcile failed" not in log and "scaling a/default failed" not in log, log
    assert "was stopped as soon as it started" not in log, "the step went on to a fresh worker: it was not cancelled"


@needs_fork
def test_engine_stop_while_the_background_step_waits_leaves_no_worker(harness):
    try:
        _a_waits_on_its_template(harness)
        engine = launcher.running_engine(harness.home)
        os.kill(engine["pid"], signal.SIGTERM)      # `engine stop` without its reaping of recorded workers after
        harness.wait_for(lambda: pid_gone(engine["pid"], engine["start_time"]), timeout=20, what="the engine gone")
    finally:
        _open_the_gate(harness)
    assert harness.workers("a") == [] and harness.workers("b") == []
    assert processes_in(harness.home / "workers") == [], "a worker process is still running"
    assert _starting(harness, "a", besides="") == [], "a's start left its folder"
    log = (harness.home / "engine.log").read_text()
    assert "Traceback" not in log, log
    assert "was stopped as soon as it started" not in log, "the step went on to a fresh worker: it was not cancelled"


# -- the step's bookkeeping (no processes: an engine whose _autoscale is a stand-in) ------------------------------

def _held_steps(tmp_path) -> tuple[Engine, object, list[asyncio.Event]]:
    """An engine whose every autoscale step waits, as a start waits on its template, until its event is set."""
    held: list[asyncio.Event] = []

    async def step(dep):
        held.append(asyncio.Event())
        await held[-1].wait()

    engine, dep = engine_with_step(tmp_path, step)
    return engine, dep, held


def _run(engine: Engine, scenario) -> None:
    try:
        asyncio.run(scenario())
    finally:
        engine.store.close()


async def _beats(engine: Engine, count: int) -> None:
    """``count`` heartbeats that each autoscale (every 4th tick does), with a chance to run in between."""
    for _ in range(count):
        engine.ticks = 3
        await engine.reconcile_once()
        await asyncio.sleep(0.01)


def test_a_beat_does_not_wait_for_the_step_and_begins_no_second_one_while_it_runs(tmp_path):
    engine, dep, began = _held_steps(tmp_path)

    async def scenario():
        await asyncio.wait_for(_beats(engine, 3), 2)
        assert len(began) == 1                      # one step in flight: the later beats left it be
        began[0].set()
        await asyncio.sleep(0.01)
        await _beats(engine, 1)
        assert len(began) == 2                      # the last one ended: the next beat begins another
        engine.stop_scaling()                       # engine stop: the one in flight ends now
        await asyncio.wait_for(engine.starts.finished(), 2)
        assert dep.scale_step.cancelled()
    _run(engine, scenario)


def test_a_spawned_call_on_a_scaled_to_zero_deployment_begins_the_tracked_step(tmp_path):
    """Its step, too, is the deployment's one step: beats leave it be, teardown and engine stop cancel it."""
    engine, dep, began = _held_steps(tmp_path)

    async def scenario():
        waiting = asyncio.ensure_future(spawned.wait_for_routes(engine, dep, time.monotonic() + 5, cost=1.0))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if began:
                break
        assert dep.scale_step is not None and not dep.scale_step.done()
        await _beats(engine, 2)
        assert len(began) == 1 and dep.waiting == 1
        engine.stop_scaling()
        await asyncio.wait_for(engine.starts.finished(), 2)
        assert dep.scale_step.cancelled()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert dep.waiting == 0
    _run(engine, scenario)


@pytest.mark.parametrize("error, line", [
    (OSError(24, "Too many open files"), "scaling d/t failed: OSError: [Errno 24] Too many open files"),
    (Unwanted("no worker is started: d/t was torn down"), "scaling d/t ended: no worker is started: d/t was torn down"),
])
def test_a_failed_step_is_one_plain_line_in_the_log_and_no_failed_beat(tmp_path, capsys, error, line):
    outcomes = [error, error, error, None, error]   # the same failure 3 beats running, a good step, again

    async def step(dep):
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    engine, dep = engine_with_step(tmp_path, step)
    try:
        asyncio.run(_beats(engine, 5))              # reconcile_once did not raise: the beats themselves went fine
    finally:
        engine.store.close()
    logged = capsys.readouterr().out
    assert outcomes == [] and logged.splitlines() == [line, line], logged   # said once, and again after a success
