"""A full or read-only VAST_MAGIC_HOME: a clear error, the previous version keeps serving, no corrupted state.

Tests run as root, so chmod cannot make a folder unwritable. Instead the
scenario runs in a child under ``unshare -m`` (a private mount namespace):
the home is a small tmpfs there, filled to the last byte (before the client
writes the bundle, or after, so the engine is the one to fail) or bind-mounted
read-only. The scenario deploys v1, breaks the disk, tries to deploy v2,
checks v1 still answers, repairs the disk, deploys v2 (the state was not
corrupted), then stops the engine and prints every pid it saw; the test
checks from outside that they are all gone.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from vast_magic.backends.local.workers import proc_start_time, stop_now

from tests.scripts import result_of

SCENARIO = r'''
import json, os, subprocess, sys, time
from pathlib import Path
from vast_magic import Deployment
from vast_magic.errors import VastMagicError
from vast_magic.backends.local import launcher, store

HOME = Path(os.environ["VAST_MAGIC_HOME"])
MODE = sys.argv[1]

app = Deployment(name="disk")
app.configure_autoscaling(cold_workers=1, max_workers=1)

@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    print("squaring", x)
    return x * x

app2 = Deployment(name="disk")
app2.configure_autoscaling(cold_workers=1, max_workers=1)

@app2.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square_v2(x):
    print("squaring v2", x)
    return x * x + 1

pids = set()
def collect():
    """Remember every engine/worker pid, also in a file outside the tmpfs for the test's last resort."""
    info = launcher.running_engine(HOME)
    if info:
        pids.add((info["pid"], info["start_time"]))
    pids.update((w.pid, w.start_time) for w in store.read_only(HOME, "workers"))
    Path(os.environ["PIDS_FILE"]).write_text(json.dumps(sorted(pids)))

def break_disk():
    if MODE == "full-engine":          # the client's bundle cache already holds v2: the engine is the one to fail
        app2._pipeline._cached_bundle(app2._pipeline.prepare(app2._snapshot()))
    if MODE.startswith("full"):
        with open(HOME / "filler", "wb", buffering=0) as filler:   # unbuffered: nothing left to flush at close
            try:
                for _ in range(4096):                  # bounded: the tmpfs is a few MiB
                    filler.write(b"\0" * 65536)
            except OSError:
                pass
    else:
        subprocess.run(["mount", "--bind", str(HOME), str(HOME)], check=True)       # open files stay writable,
        subprocess.run(["mount", "-o", "remount,bind,ro", str(HOME)], check=True)   # new writes fail: EROFS

def repair_disk():
    if MODE.startswith("full"):
        (HOME / "filler").unlink()
    else:
        subprocess.run(["mount", "-o", "remount,bind,rw", str(HOME)], check=True)

def scenario(out):
    out.update(v1_tier=app.ensure_ready().tier, v1=square.call(3))
    collect()
    break_disk()
    try:
        app2.ensure_ready(timeout=30)
        out["v2_error"] = None
    except VastMagicError as exc:
        out["v2_error"] = [type(exc).__name__, str(exc)]
    out["v1_after"] = square.call(4)
    out["status"] = app.status().state
    repair_disk()
    out["v2_tier"] = app2.ensure_ready().tier
    out["v2"] = square_v2.call(3)
    collect()
    app2.teardown()

out = {}
try:
    scenario(out)
finally:
    collect()
    if MODE == "readonly":
        subprocess.run(["mount", "-o", "remount,bind,rw", str(HOME)])   # the engine must be able to stop
    launcher.engine_stop(HOME)
print("RESULT " + json.dumps(out))
'''


def _run_in_private_mounts(tmp_path, mode: str) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: cannot simulate a full or read-only home")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here ({probe.stderr.strip()}): cannot simulate a full home")
    home = tmp_path / "tmpfs-home"
    home.mkdir(mode=0o700)
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    shell = (f"mount --make-rprivate / && mount -t tmpfs -o size=4m,mode=0700 tmpfs {home} && "
             f"exec {sys.executable} {script} {mode}")
    pids_file = tmp_path / "pids.json"
    env = {**os.environ, "VAST_MAGIC_HOME": str(home), "VAST_MAGIC_DISPLAY": "text", "PIDS_FILE": str(pids_file)}
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=150,
                              cwd=tmp_path, env=env)
    finally:                                  # a scenario that died half-way must not leave processes behind
        recorded = json.loads(pids_file.read_text()) if pids_file.exists() else []
        leftover = [(pid, start) for pid, start in recorded if proc_start_time(pid) == start]
        for pid, start in leftover:
            stop_now(pid, start, grace=2.0)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert recorded and not leftover, f"orphan processes left: {leftover}"
    return result_of(proc.stdout)


@pytest.mark.parametrize("mode, words", [
    ("full", "No space left on device"),
    ("full-engine", "No space left on device"),
    ("readonly", "Read-only file system"),
])
def test_broken_home_gives_a_clear_error_and_loses_nothing(tmp_path, mode, words):
    result = _run_in_private_mounts(tmp_path, mode)
    print(result)
    assert (result["v1_tier"], result["v1"]) == (4, 9)
    kind, message = result["v2_error"]
    assert words in message and "VAST_MAGIC_HOME" in message, message     # says what and where to fix
    assert (result["v1_after"], result["status"]) == (16, "ready")       # the previous version kept serving
    assert (result["v2_tier"], result["v2"]) == (2, 10)                  # repaired disk: state was intact
