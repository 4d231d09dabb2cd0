"""The local engine when things go wrong: dead workers, a dead daemon, bad code, strangers, ttl."""
from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import threading
import time

import pytest

from tests.backends.local.engine_harness import make_bundle, pid_gone, plan
from vast_magic import events
from vast_magic.backends.local import launcher
from vast_magic.backends.local.backend import LocalBackend
from vast_magic.errors import CallTimeoutError, DeployError, OverloadedError, WorkerLostError


def _in_thread(fn, *args, **kwargs):
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _ready_pids(harness):
    return {w.pid for w in harness.workers() if w.state == "ready"}


@pytest.mark.parametrize("retries", [0, 1])
def test_worker_killed_mid_call(harness, retries):
    harness.apply(plan(make_bundle(harness.folder)))
    (victim,) = harness.workers()
    thread, box = _in_thread(harness.call, "slow", 3.0, retries=retries)
    time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(30)
    if retries:
        assert box.get("value") == "v1"             # retried on the replacement worker
    else:
        assert isinstance(box.get("error"), WorkerLostError), box
        assert "slow" in str(box["error"]) and box["error"].log_tail      # the worker's last words
    harness.wait_for(lambda: _ready_pids(harness) - {victim.pid}, what="a replacement worker")
    assert harness.call("square", 3) == 9


def test_engine_killed_then_restarted_reaps_and_restores(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    (worker,) = harness.workers()
    info = launcher.running_engine(harness.home)
    os.kill(worker.pid, signal.SIGSTOP)           # a frozen worker cannot notice the engine is gone
    os.kill(info["pid"], signal.SIGKILL)
    harness.wait_for(lambda: launcher.running_engine(harness.home) is None, what="engine gone")
    status = harness.run(harness.backend.status("demo", "default"))   # deployments exist: auto-start
    harness.wait_for(lambda: pid_gone(worker.pid, worker.start_time), timeout=10, what="frozen worker reaped")
    assert launcher.running_engine(harness.home)["pid"] != info["pid"]
    assert status.name == "demo"
    harness.wait_for(lambda: _ready_pids(harness), what="restored worker")
    assert harness.call("square", 4) == 16


def test_failing_context_keeps_the_previous_version(harness):
    harness.apply(plan(make_bundle(harness.folder, "v1")))
    before = {w.pid for w in harness.workers()}
    broken = make_bundle(harness.folder, "v2", app=(
        "class Model:\n"
        "    async def __aenter__(self):\n"
        "        raise RuntimeError('model weights missing')\n"
        "    async def __aexit__(self, *exc):\n"
        "        return False\n"
        "async def version():\n    return 'v2'\n"), remotes=[{"name": "version", "is_async": True}])
    with pytest.raises(DeployError) as info:
        harness.apply(plan(broken, tier=2))
    assert "model weights missing" in str(info.value)
    assert any(isinstance(e, events.Failed) for e in harness.events)
    assert harness.call("version") == "v1"
    assert {w.pid for w in harness.workers()} == before
    assert harness.run(harness.backend.status("demo", "default")).state == "ready"


def test_failing_first_deploy_leaves_nothing_recorded(harness):
    broken = make_bundle(harness.folder, "v1", app="raise ImportError('no such module: torch')\n",
                         remotes=[], contexts=())
    with pytest.raises(DeployError, match="torch"):
        harness.apply(plan(broken))
    assert harness.run(harness.backend.previous_manifest_json("demo", "default")) is None
    assert harness.workers() == []
    assert harness.run(harness.backend.status("demo", "default")).state == "failed"
    harness.apply(plan(make_bundle(harness.folder, "v2")))                  # fixed code deploys fine
    assert harness.call("version") == "v2"


def test_overload_and_timeout(harness):
    harness.apply(plan(make_bundle(harness.folder), autoscaling={"cold_workers": 1, "max_workers": 1}))
    thread, box = _in_thread(harness.call, "slow", 1.5, cost=1e9)
    time.sleep(0.3)
    with pytest.raises(OverloadedError, match="max_queue_time"):
        harness.call("square", 2, max_queue_time=1.0)
    thread.join(10)
    assert box.get("value") == "v1"
    with pytest.raises(CallTimeoutError):
        harness.call("slow", 5.0, timeout=0.5)
    with pytest.raises(TimeoutError):               # CallTimeoutError is also a TimeoutError
        harness.call("slow", 5.0, timeout=0.3)


def test_raw_socket_without_token_is_refused_before_unpickling(harness, tmp_path):
    harness.apply(plan(make_bundle(harness.folder)))
    port = launcher.running_engine(harness.home)["port"]
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    for frame in (struct.pack("!IQ", 0, len(payload)) + payload,                  # a pickle instead of a hello
                  struct.pack("!IQ", 0, 10) + b"VMAG1 nope"):                    # a wrong token
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(frame + struct.pack("!IQ", 0, len(payload)) + payload)
            sock.settimeout(5)
            assert sock.recv(100) == b""                                         # closed, no answer
    assert not marker.exists()
    assert harness.call("square", 5) == 25                                      # the engine still serves


def test_ttl_expires_without_heartbeats(harness):
    owner = LocalBackend(harness.home)
    harness.run(owner.apply(plan(make_bundle(harness.folder), ttl=1.5), lambda event: None))
    harness.collect()
    time.sleep(2.5)                                  # heartbeats keep it alive past its ttl
    assert harness.run(harness.backend.status("demo", "default")).state == "ready"
    owner.close()                                    # the owning process is gone: no more heartbeats
    harness.wait_for(lambda: harness.run(harness.backend.status("demo", "default")).state == "stopped",
                     timeout=10, what="ttl teardown")
    harness.wait_for(lambda: harness.workers() == [], timeout=10, what="ttl workers stopped")


def test_logs_and_call_output(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    outcome = harness.run(harness.backend.call(
        __import__("vast_magic.backends.base", fromlist=["CallSpec"]).CallSpec(
            "demo", "default", "shout", 10.0, 30.0), ("hey",), {}, {}))
    assert outcome.value == "HEY" and ("stdout", "shouting hey\n") in outcome.output
    lines = harness.run(harness.backend.logs("demo", "default", None, 50))
    assert any("benchmark square" in line.text for line in lines)
    assert all(line.function == "square" for line in harness.run(harness.backend.logs("demo", "default", "square", 50)))
