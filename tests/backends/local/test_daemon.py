"""The daemon's own life: start/stop/status for the CLI, one per home, idle exit, read-only dry runs."""
from __future__ import annotations

import os
import stat
import threading
import time

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends import get_backend
from vast_magic.backends.local import launcher
from vast_magic.backends.local.backend import LocalBackend
from vast_magic.backends.local.store import read_only


def test_start_status_stop_and_one_daemon_per_home(harness):
    assert launcher.engine_status(harness.home)["running"] is False
    info = launcher.engine_start(harness.home)
    harness.collect()
    assert info["running"] and launcher.engine_start(harness.home)["pid"] == info["pid"]
    second = launcher.spawn_daemon(harness.home)          # loses the lock, exits at once
    assert second.wait(10) == 0
    status = launcher.engine_status(harness.home)
    assert status["running"] and status["pid"] == info["pid"] and status["deployments"] == []
    for name in ("token", "state.db"):
        assert stat.S_IMODE(os.stat(harness.home / name).st_mode) == 0o600
    assert launcher.engine_stop(harness.home)["stopped"] is True
    assert launcher.engine_status(harness.home)["running"] is False


def test_idle_engine_exits(harness, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_ENGINE_IDLE_TIMEOUT", "1")
    info = launcher.engine_start(harness.home)
    harness.collect()
    harness.wait_for(lambda: launcher.running_engine(harness.home) is None, timeout=10, what="idle exit")
    assert not (harness.home / "engine.json").exists() and info["pid"]


def test_dry_run_reads_without_starting_the_engine(harness):
    backend = get_backend("local", home=str(harness.home))
    assert isinstance(backend, LocalBackend)
    assert harness.run(backend.previous_manifest_json("demo", "default")) is None
    assert harness.run(backend.status("demo", "default")).state == "stopped"
    assert harness.run(backend.list_deployments()) == []
    harness.run(backend.teardown("demo", None))
    assert launcher.running_engine(harness.home) is None and not (harness.home / "state.db").exists()


def test_scale_to_zero_and_back_on_demand(harness):
    scaling = {"cold_workers": 0, "max_workers": 1, "inactivity_timeout": 0.5}
    result = harness.apply(plan(make_bundle(harness.folder), autoscaling=scaling))
    assert len(result.workers) == 1                       # a deploy always proves one worker can start
    harness.wait_for(lambda: harness.workers() == [], timeout=15, what="scale to zero")
    started = time.perf_counter()
    assert harness.call("square", 11) == 121              # the queued call brings a worker back
    print(f"call from zero workers: {time.perf_counter() - started:.2f}s")
    stored = read_only(harness.home, "deployments")
    assert [(d.name, d.tag, d.autoscaling) for d in stored] == [("demo", "default", scaling)]


def test_load_reports_scale_up_then_back_down(harness):
    scaling = {"cold_workers": 1, "max_workers": 2, "inactivity_timeout": 1}
    harness.apply(plan(make_bundle(harness.folder), autoscaling=scaling))
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", harness.call("slow", 3.0, cost=1e9)), daemon=True)
    thread.start()                                        # one huge in-flight call: the load report asks for more
    harness.wait_for(lambda: len([w for w in harness.workers() if w.state == "ready"]) == 2, timeout=15,
                     what="scale up to max_workers")
    thread.join(15)
    assert box["v"] == "v1"
    harness.wait_for(lambda: len(harness.workers()) == 1, timeout=15, what="scale down to cold_workers")


def test_previous_manifest_is_read_read_only(harness):
    deployed = plan(make_bundle(harness.folder), secrets=[("API_TOKEN", "hunter2")])
    harness.apply(deployed)
    launcher.engine_stop(harness.home)              # reading must not need (or start) the engine
    assert harness.run(harness.backend.previous_manifest_json("demo", "default")) == deployed.manifest.to_json()
    assert harness.run(harness.backend.previous_manifest_json("demo", "other")) is None
    assert launcher.running_engine(harness.home) is None
    for path in harness.home.glob("state.db*"):           # secrets live in the db: owner-only
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
