"""The engine daemon SIGKILLed under a live client, then a kernel restart: scripts run as real processes.

The first script deploys, SIGKILLs the daemon while calls are in flight, and
checks that the in-flight calls (shorter than the workers' 0.9 s grace)
still finish, that the old workers exit by themselves, that the very next call brings
the engine back (restoring the deployment from SQLite) and that ensure_ready()
then says tier 0. A second interpreter (a restarted kernel) reconnects as tier 0.
"""
from __future__ import annotations

import os
import subprocess
import sys

from vast_magic.backends.local.workers import proc_start_time

from tests.scripts import result_of

SCRIPT = r'''
import json, os, signal, sys, threading, time
from vast_magic import Deployment, settings
from vast_magic.backends.local import launcher
from vast_magic.backends.local.workers import proc_start_time

app = Deployment(name="rel")
app.configure_autoscaling(cold_workers=1, max_workers=1)

@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    return x * x

@app.remote(timeout=15)
async def slow(x):
    import asyncio
    await asyncio.sleep(0.8)
    return x

@app.remote
def pid():
    return os.getpid()

def gone_within(pid, start, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc_start_time(pid) != start:
            return round(seconds - (deadline - time.monotonic()), 2)
        time.sleep(0.05)
    return None

out = {"tier": app.ensure_ready().tier, "worker": pid.call()}
if sys.argv[1] == "kill-engine":
    engine = launcher.running_engine(settings.home())
    worker_start = proc_start_time(out["worker"])
    box = {}
    flight = threading.Thread(target=lambda: box.update(r=slow.map(range(8), return_exceptions=True)))
    flight.start()
    time.sleep(0.3)
    os.kill(engine["pid"], signal.SIGKILL)
    flight.join(30)
    out["in_flight"] = [r if isinstance(r, int) else f"{type(r).__name__}: {r}" for r in box.get("r", ["hung"])]
    out["killed_engine"] = [engine["pid"], engine["start_time"]]
    out["old_worker_exit_s"] = gone_within(out["worker"], worker_start, 60)
    out["next_call"] = square.call(5)
    out["engine_back"] = launcher.running_engine(settings.home())["pid"] != engine["pid"]
    out["after_tier"] = app.ensure_ready().tier
    out["new_worker"] = pid.call()
print("RESULT " + json.dumps(out))
'''


def _run(tmp_path, mode: str) -> dict:
    script = tmp_path / "rel_app.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=150,
                          cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return result_of(proc.stdout)


def test_engine_sigkilled_then_next_call_restores_and_a_new_kernel_reconnects(tmp_path, engine_home):
    first = _run(tmp_path, "kill-engine")
    engine_home.collect()
    assert first["tier"] == 4
    assert first["in_flight"] == list(range(8))      # in-flight calls shorter than the workers' grace still finish
    assert first["old_worker_exit_s"] is not None, first       # the orphaned worker exits (ceiling 60 s)
    pid, start = first["killed_engine"]
    assert proc_start_time(pid) != start
    assert first["next_call"] == 25 and first["engine_back"] is True
    assert first["after_tier"] == 0 and first["new_worker"] != first["worker"]

    restarted = _run(tmp_path, "reconnect")                          # a kernel restart: a new interpreter
    engine_home.collect()
    assert restarted["tier"] == 0 and restarted["worker"] == first["new_worker"]
