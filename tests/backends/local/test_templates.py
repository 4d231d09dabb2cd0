"""Warm starts: workers forked from their version's template are the workers a fresh interpreter would be.

Real engines, real processes: a scale-up through the template serves calls and
logs; the forked worker's environment and open descriptors equal a fresh one's
(a second engine, with ``worker_fork`` off, gives the fresh one); a killed
template means fresh workers; a forked worker's crash is reported with its
cause; teardown and engine stop leave no template. The fixture's check at the
end covers every process whose working directory is in the home.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.backends.local.engine_harness import (APP, CONTEXTS, GATED_APP, REMOTES, Harness, make_bundle, plan,
                                                 processes_in)
from tests.runtime.worker_harness import remote_spec
from vast_magic import events
from vast_magic.backends.local import templates
from vast_magic.backends.local.launcher import load_token
from vast_magic.backends.local.workers import proc_start_time

pytestmark = pytest.mark.skipif(templates.fork_unavailable() is not None, reason="no fork here")

NUMPY_APP = '''
import numpy
print("imported, numpy", numpy.__version__)
''' + APP.format(version="v1") + '''
async def environment():
    return dict(os.environ)

async def descriptors():
    import re
    kinds = []
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue                     # the listing's own descriptor, gone already
        kinds.append((fd, re.sub(r"\\d+", "N", target)))
    return kinds

async def cwd_and_path():
    import sys
    return os.getcwd(), sys.path[:3]

class Seeded:
    async def __aenter__(self):
        print("first draw", numpy.random.random())       # each worker's own, in its log
        return self

    async def __aexit__(self, *exc):
        return False

async def exit_with(code):
    os._exit(code)
'''
NUMPY_REMOTES = [*REMOTES, *(remote_spec(n) for n in ("environment", "descriptors", "cwd_and_path", "exit_with"))]
NUMPY_CONTEXTS = [*CONTEXTS, {"name": "Seeded", "args": [], "kwargs": {}}]
SCALING = {"cold_workers": 1, "max_workers": 2, "inactivity_timeout": 0}


def _bundle(folder: Path, config=None) -> Path:
    return make_bundle(folder, app=NUMPY_APP, remotes=NUMPY_REMOTES, contexts=NUMPY_CONTEXTS,
                       config=config)


def _started(harness: Harness) -> dict[str, str]:
    """How each worker of the events so far was started (forked | fresh)."""
    return {e.worker: e.start for e in harness.events if isinstance(e, events.WorkerState) and e.start}


def _starts(harness: Harness) -> list[str]:
    """How each live worker was started, as status says."""
    return sorted(w.start for w in harness.run(harness.backend.status("demo", "default")).workers
                  if w.state != "failed")


def _ready(harness: Harness) -> list:
    return [w for w in harness.run(harness.backend.status("demo", "default")).workers if w.state == "ready"]


def _templates(harness: Harness) -> list[int]:
    return [pid for pid in processes_in(harness.home / "templates")]


def _scale_to(harness: Harness, bundle: Path, count: int, scaling=SCALING) -> None:
    harness.apply(plan(bundle, tier=1, autoscaling={**scaling, "cold_workers": count}))


def _template(harness: Harness) -> int:
    """The version's template (it boots once the first worker is ready): its pid."""
    [pid] = harness.wait_for(lambda: _templates(harness), what="the template")
    return pid


def _one_forked_worker(harness: Harness, bundle: Path, scaling=SCALING):
    """Deploy (the first worker is fresh), let the template boot, scale to 2 and back to 1: the autoscaler
    drains the older worker first, so the one left was forked."""
    harness.apply(plan(bundle, autoscaling=scaling))
    _template(harness)
    _scale_to(harness, bundle, 2, scaling)
    _scale_to(harness, bundle, 1, scaling)
    return harness.wait_for(lambda: [w for w in _ready(harness) if w.start == "forked"] if len(
        harness.workers()) == 1 else None, what="only the forked worker left")[0]


def test_a_scale_up_forks_a_worker_that_serves_and_logs(harness):
    bundle = _bundle(harness.folder)
    harness.apply(plan(bundle, autoscaling=SCALING))
    assert list(_started(harness).values()) == ["fresh"]               # the first one: the template boots after it
    ready = [e for e in harness.events if isinstance(e, events.WorkerState) and e.state == "ready"]
    assert ready and all(e.startup is not None and e.startup > 0 and e.start == "fresh" for e in ready)
    template = _template(harness)
    _scale_to(harness, bundle, 2)
    workers = _ready(harness)
    assert len(workers) == 2 and _starts(harness) == ["forked", "fresh"]
    assert _templates(harness) == [template]                         # one template per version, not a worker
    assert all(w.pid != template for w in workers)
    [forked] = [w for w in workers if w.start == "forked"]
    harness.wait_for(lambda: any(line.text.startswith("imported, numpy") for line in harness.run(
        harness.backend.logs("demo", "default", None, 100)) if line.worker == forked.id),
        what="the forked worker's import line, as a fresh one prints it")
    _scale_to(harness, bundle, 1)
    harness.wait_for(lambda: [w.id for w in _ready(harness)] == [forked.id], what="the older worker drained")
    assert harness.call("square", 12) == 144
    assert harness.call("shout", "forked") == "FORKED"
    harness.wait_for(lambda: any(line.text == "shouting forked" and line.worker == forked.id for line in harness.run(
        harness.backend.logs("demo", "default", "shout", 10))), what="the call's line")
    cwd, path = harness.call("cwd_and_path")
    assert cwd.endswith(f"/workers/{forked.id}") and path[0] == cwd     # its own folder, first on sys.path
    assert not any("/templates/" in entry for entry in path)


def test_a_forked_worker_gets_exactly_what_a_fresh_one_gets(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_LEAK_CANARY", "engine-only")        # the engine's environment, not a worker's
    deployment = dict(env=[("MODE", "fast")], secrets=[("API_SECRET", "s3cret")])
    bundle = _bundle(harness.folder)
    harness.apply(plan(bundle, autoscaling=SCALING, **deployment))
    _template(harness)
    for count in (2, 1):
        harness.apply(plan(bundle, tier=1, autoscaling={**SCALING, "cold_workers": count}, **deployment))
    harness.wait_for(lambda: _starts(harness) == ["forked"] and len(_ready(harness)) == 1, what="one forked worker")
    fresh_home = tmp_path / "fresh-home"
    fresh_home.mkdir(mode=0o700)
    monkeypatch.setenv("VAST_MAGIC_WORKER_FORK", "0")                 # read when that engine starts
    fresh = Harness(fresh_home, tmp_path)
    try:
        fresh.apply(plan(_bundle(tmp_path / "fresh"), autoscaling=SCALING, **deployment))
        assert list(_started(fresh).values()) == ["fresh"]
        forked_env, fresh_env = harness.call("environment"), fresh.call("environment")
        assert forked_env == fresh_env
        assert forked_env["MODE"] == "fast" and forked_env["API_SECRET"] == "s3cret"
        assert "VAST_MAGIC_LEAK_CANARY" not in forked_env
        assert not any(load_token(harness.home) in value for value in forked_env.values())
        forked_fds, fresh_fds = harness.call("descriptors"), fresh.call("descriptors")
        assert Counter(kind for _, kind in forked_fds) == Counter(kind for _, kind in fresh_fds), (forked_fds, fresh_fds)
        assert forked_fds[0] == (0, "/dev/null") and [fd for fd, _ in forked_fds[:3]] == [0, 1, 2]
        assert not any(str(harness.home / "templates") in kind for _, kind in forked_fds)
    finally:
        fresh.close()


def test_forked_workers_do_not_share_numpy_random_state(harness):
    """numpy seeds its global generator on first use, so forked workers draw apart as fresh ones do."""
    bundle = _bundle(harness.folder)
    scaling = {**SCALING, "max_workers": 3}
    harness.apply(plan(bundle, autoscaling=scaling))
    _template(harness)
    _scale_to(harness, bundle, 3, scaling)
    forked = {w.id for w in _ready(harness) if w.start == "forked"}
    assert len(forked) == 2

    def draws() -> dict | None:
        found = {line.worker: line.text for line in harness.run(harness.backend.logs("demo", "default", None, 200))
                 if line.text.startswith("first draw") and line.worker in forked}
        return found if len(found) == 2 else None
    draws = harness.wait_for(draws, what="both forked workers' draws")
    assert len(set(draws.values())) == 2, draws


def test_a_killed_template_means_fresh_workers(harness):
    bundle = _bundle(harness.folder)
    forked = _one_forked_worker(harness, bundle)
    template = _template(harness)
    os.kill(template, signal.SIGKILL)
    harness.wait_for(lambda: proc_start_time(template) is None, what="the template gone")
    assert harness.call("pid") == forked.pid                           # its forked worker serves on
    _scale_to(harness, bundle, 2)
    assert _starts(harness) == ["forked", "fresh"]
    assert len(_ready(harness)) == 2 and _templates(harness) == []
    engine_log = (harness.home / "engine.log").read_text()
    assert "workers start fresh; the template process ended" in engine_log
    for _ in range(4):
        assert harness.call("square", 4) == 16


@pytest.mark.parametrize("how, cause", [("signal", "killed by SIGKILL"), ("exit", "exited with code 7")])
def test_a_forked_worker_crash_is_reported_with_its_cause(harness, how, cause):
    worker = _one_forked_worker(harness, _bundle(harness.folder))
    if how == "signal":
        os.kill(worker.pid, signal.SIGKILL)
    else:
        with pytest.raises(Exception):
            harness.call("exit_with", 7, timeout=10)
    failed = harness.wait_for(lambda: [w for w in harness.run(harness.backend.status("demo", "default")).workers
                                       if w.state == "failed"], what="the failure recorded")
    assert failed[0].id == worker.id and failed[0].error.splitlines()[-1].startswith(cause), failed[0].error
    harness.wait_for(lambda: _ready(harness), timeout=60, what="a replacement")
    assert harness.call("square", 6) == 36


def test_teardown_and_engine_stop_leave_no_template(harness):
    from vast_magic.backends.local import launcher
    bundle = _bundle(harness.folder)
    harness.apply(plan(bundle, autoscaling=SCALING))
    first = _template(harness)
    harness.run(harness.backend.teardown("demo", "default"))
    assert proc_start_time(first) is None and os.listdir(harness.home / "templates") == []
    harness.apply(plan(bundle, autoscaling=SCALING))
    second = _template(harness)
    started = proc_start_time(second)
    workers = [w.pid for w in _ready(harness)]
    launcher.engine_stop(harness.home)
    harness.wait_for(lambda: proc_start_time(second) != started and all(proc_start_time(p) is None for p in workers),
                     what="template and workers gone")


def test_set_up_commands_mean_fresh_workers(harness):
    bundle = _bundle(harness.folder, config={"runs": ["true"]})
    harness.apply(plan(bundle, autoscaling=SCALING))
    _scale_to(harness, bundle, 2)
    assert _starts(harness) == ["fresh", "fresh"]
    assert _templates(harness) == [] and harness.call("square", 2) == 4


def test_a_bundle_that_starts_threads_on_import_gets_fresh_workers(harness):
    app = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n" + \
        APP.format(version="v1")
    bundle = make_bundle(harness.folder, app=app)
    harness.apply(plan(bundle, autoscaling=SCALING))
    assert list(_started(harness).values()) == ["fresh"] and harness.call("square", 3) == 9
    harness.wait_for(lambda: "workers start fresh; importing the bundle started 1 thread(s)" in (
        harness.home / "engine.log").read_text(), what="the template's refusal")
    harness.wait_for(lambda: _templates(harness) == [], what="the refused template gone")
    _scale_to(harness, bundle, 2)
    assert _starts(harness) == ["fresh", "fresh"]


def test_a_bundle_that_fails_to_import_fails_its_fresh_worker_with_the_traceback(harness):
    from vast_magic.errors import DeployError
    app = APP.format(version="v1") + "\nraise ImportError('no such model file')\n"
    with pytest.raises(DeployError, match="no such model file"):
        harness.apply(plan(make_bundle(harness.folder, app=app), autoscaling={"cold_workers": 1}, timeout=30))
    assert set(_started(harness).values()) == {"fresh"}


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("no", False), ("1", True), ("on", True),
                                             ("TRUE", True)])
def test_the_worker_fork_setting(monkeypatch, value, expected):
    from vast_magic import settings
    monkeypatch.setenv("VAST_MAGIC_WORKER_FORK", value)
    assert settings.resolve("worker_fork") is expected


def test_a_bad_worker_fork_setting_says_what_it_expects(monkeypatch):
    from vast_magic import settings
    from vast_magic.errors import ConfigError
    monkeypatch.setenv("VAST_MAGIC_WORKER_FORK", "maybe")
    with pytest.raises(ConfigError, match="expected on or off"):
        settings.resolve("worker_fork")


def test_a_call_on_a_deployment_scaled_to_zero_gets_a_forked_worker(harness):
    harness.apply(plan(_bundle(harness.folder), autoscaling={**SCALING, "cold_workers": 0}))
    _template(harness)                                                # booted once the first worker was ready
    harness.wait_for(lambda: harness.workers() == [], what="scaled to zero")
    assert len(_templates(harness)) == 1                              # the version is current: its template stays
    assert harness.call("square", 9, timeout=30) == 81
    assert set(_starts(harness)) == {"forked"}                          # as many as the waiting call's workload asks


# -- a template's stop against the engine's other tasks (no engine: the Templates on a test loop) ----------------

def _lone_templates(tmp_path: Path, app: str = APP.format(version="v1")):
    """A Templates in a home of its own and a version whose template is a real process; ``run`` runs a
    scenario on a fresh loop and then kills by pid whatever process is left in the home, so a failure leaks
    nothing."""
    from tests.runtime.worker_harness import write_bundle
    from vast_magic.backends.local.engine_model import Version
    from vast_magic.backends.local.workers import worker_environment
    bundle = write_bundle(tmp_path / "bundle", app, remotes=REMOTES, with_runtime=True)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    key = ("demo", "default", Version("ab" * 32, str(bundle), sys.executable))
    env = worker_environment(os.environ, (), ())

    def run(scenario) -> None:
        try:
            asyncio.run(scenario(templates.Templates(home), key, env))
        finally:
            for pid in processes_in(home):
                os.kill(pid, signal.SIGKILL)
    return home, run


async def _launched(lone: templates.Templates, key, env) -> templates.Template:
    lone.warm(key, env)
    template = lone.by_key[key]
    await template.launching
    assert template.alive()
    return template


def _nothing_left(home: Path) -> None:
    """No template process, and no template folder (stop_all removes the folder itself too)."""
    folder = home / "templates"
    assert processes_in(home) == [] and (not folder.exists() or os.listdir(folder) == [])


def test_a_teardown_waits_for_the_stop_the_reconciler_began(tmp_path):
    """The reconciler found the version unwanted first and is stopping its template: the teardown's retire
    returns once that template is gone too, not at once because it found nothing left to stop."""
    home, run = _lone_templates(tmp_path)

    async def scenario(lone, key, env):
        await _launched(lone, key, env)
        reconciler = asyncio.ensure_future(lone.retire(set()))
        await asyncio.sleep(0)                      # it took the template and began stopping it
        await lone.retire(set())                    # the teardown's
        _nothing_left(home)
        await reconciler
    run(scenario)


def test_engine_stop_finishes_a_stop_the_cancelled_reconciler_began(tmp_path):
    home, run = _lone_templates(tmp_path)

    async def scenario(lone, key, env):
        await _launched(lone, key, env)
        reconciler = asyncio.ensure_future(lone.retire(set()))
        await asyncio.sleep(0)
        reconciler.cancel()                         # the daemon cancels its reconciler, then stops templates
        await lone.stop_all()
        _nothing_left(home)
    run(scenario)


def test_engine_stop_while_a_template_starts_leaves_no_template(tmp_path):
    """A worker's ready line can arrive while the engine stops: no template starts from then on, and one whose
    start is in flight (its folder being copied) is stopped before its process exists."""
    home, run = _lone_templates(tmp_path)

    async def scenario(lone, key, env):
        lone.warm(key, env)                         # its folder being copied
        stopping = asyncio.ensure_future(lone.stop_all())
        await asyncio.sleep(0)
        lone.warm(("demo", "other", key[2]), env)   # a ready line handled meanwhile
        await stopping
        lone.warm(("demo", "late", key[2]), env)
        assert lone.by_key == {}
        await asyncio.sleep(0.5)                    # what a late start would have copied and started by now
        _nothing_left(home)
    run(scenario)


def test_a_teardown_stops_its_template_while_a_worker_start_waits_on_it(tmp_path):
    """The reconciler leaves a template alone while a worker start waits on it (its version may be a rollout's
    next one); a teardown of its deployment does not: the waiting start gets a fresh worker instead."""
    home, run = _lone_templates(tmp_path)

    async def scenario(lone, key, env):
        template = await _launched(lone, key, env)
        template.starting += 1
        await lone.retire(set())
        assert lone.by_key == {key: template} and template.alive()
        await lone.retire(set(), torn_down=key[:2])
        _nothing_left(home)
        template.starting -= 1
    run(scenario)


async def _start_and_stop(lone: templates.Templates, key, env, home: Path, wid: str) -> str:
    """Start a worker of the version as the engine would (in its own folder), stop it by pid; how it started."""
    from vast_magic.backends.local import workers
    from vast_magic.backends.local.bundles import worker_dir
    workdir = home / "workers" / wid
    workdir.parent.mkdir(parents=True, exist_ok=True)
    worker_dir(Path(key[2].bundle_dir), workdir)
    launch = {"engine": "127.0.0.1:1", "token": "none", "worker_id": wid, "shm_dir": None, "version": "v1"}
    started = await lone.start_worker(key, key[2], workdir, env, launch)
    process = started.process
    await workers.stop(process.pid, getattr(process, "start_time", None), grace=2.0, popen=process)
    process.stdout.close()
    process.stderr.close()
    return started.start


def test_a_start_waiting_on_a_template_its_teardown_stopped_does_not_make_the_version_start_fresh(tmp_path):
    """A worker start waits on a template that is not ready when its deployment is torn down: that start is
    fresh, but the template was stopped, it did not fail, so a redeploy of the same version boots a template
    again and forks from it. (Once, the stopped template's failure was recorded against its version, by key,
    and that version started fresh workers until it was retired.)"""
    gate = tmp_path / "gate"
    gate.touch()
    home, run = _lone_templates(tmp_path, GATED_APP.format(gate=str(gate)))

    async def scenario(lone, key, env):
        old = await _launched(lone, key, env)                    # importing, held at the gate
        waiting = asyncio.ensure_future(_start_and_stop(lone, key, env, home, "w1"))
        while not old.starting:
            await asyncio.sleep(0.01)
        await lone.retire(set(), torn_down=key[:2])              # the teardown
        assert await waiting == "fresh"
        assert lone.given_up == {}
        gate.unlink()
        lone.warm(key, env)                                      # the redeploy's first worker is ready
        assert key in lone.by_key and lone.by_key[key] is not old
        assert await _start_and_stop(lone, key, env, home, "w2") == "forked"
        await lone.stop_all()
        _nothing_left(home)
    run(scenario)


#: a template that stops slowly: it ignores SIGTERM and is held at its import, so stopping it takes the
#: SIGTERM grace (2 s) and a SIGKILL; a fresh worker of the bundle is an ordinary one
STUBBORN_APP = '''
import os, signal, sys, time
if sys.argv[0].endswith("template.py"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open({gate!r} + ".held", "w").close()
    while os.path.exists({gate!r}):
        time.sleep(0.02)
''' + APP.format(version="v1")


def test_a_template_stopped_by_force_does_not_stall_the_heartbeat(harness):
    """Once, each heartbeat waited for every template stop in flight, and the reconciler retires templates
    every beat while any exists: a template that had to be killed held it ~2-7 s, and meanwhile no dead worker
    was noticed (nor ttl expired, nor autoscaling done). Here "other" has a template, so every beat retires;
    "demo"'s teardown stops a template that ignores SIGTERM; a worker of "other" killed right then is
    noticed within a few beats."""
    gate = harness.folder / "gate"
    gate.touch()
    harness.apply(plan(_bundle(harness.folder / "other"), name="other", autoscaling=SCALING))
    harness.wait_for(lambda: len(_templates(harness)) == 1, what="other's template")
    stubborn = make_bundle(harness.folder, app=STUBBORN_APP.format(gate=str(gate)))
    harness.apply(plan(stubborn, autoscaling=SCALING))
    harness.wait_for(lambda: Path(f"{gate}.held").exists(), what="demo's template, held at its import")
    from vast_magic import loop
    teardown = loop.submit(harness.backend.teardown("demo", "default"))
    harness.wait_for(lambda: harness.workers() == [], what="demo's worker stopped: its template's stop begins")
    [victim] = harness.workers("other")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    harness.wait_for(lambda: victim.id not in {w.id for w in harness.workers("other")}, what="the dead worker noticed")
    noticed_after = time.monotonic() - killed_at
    teardown.result(timeout=30)
    assert len(_templates(harness)) == 1                              # demo's went, by SIGKILL; other's stays
    assert noticed_after < 1.2, f"the dead worker was noticed {noticed_after:.2f}s after it died"
