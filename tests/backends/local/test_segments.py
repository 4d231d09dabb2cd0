"""Shared-memory segments with real engines, workers and clients: a hostile folder, and crashes.

- a folder someone else prepared (open to all, or a link) is refused by the
  engine and the client, which say why; big arguments still travel (inline)
  and nothing is ever written into that folder;
- a SIGKILLed worker leaves no segment of the arguments sent to it, a
  SIGKILLed client none of the result sent to it: the surviving peer removes
  what the dead one never attached, and the engine what the worker held or
  kept for reuse;
- segments of a process killed mid-transfer are swept when an engine starts,
  and `engine stop` leaves nothing, even after the engine itself was SIGKILLed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.runtime.worker_harness import remote_spec
from tests.backends.local.engine_harness import make_bundle, pid_gone, plan
from vast_magic import loop
from vast_magic.backends.base import CallSpec
from vast_magic.backends.local import launcher
from vast_magic.errors import WorkerLostError
from vast_magic.runtime import shm, shm_reuse

BIG_APP = '''
import asyncio
import numpy as np

async def nbytes(a):
    return int(a.nbytes)

async def big_later(n, delay, started):
    open(started, "w").close()
    await asyncio.sleep(delay)
    return np.ones(n, dtype=np.uint8)
'''
BIG_REMOTES = [remote_spec("nbytes"), remote_spec("big_later")]
MIB = 1 << 20

pytestmark = pytest.mark.skipif(shm.segment_dir("/") is None, reason="no /dev/shm: big buffers always go inline")


def _deploy_big(harness):
    harness.apply(plan(make_bundle(harness.folder, app=BIG_APP, remotes=BIG_REMOTES, contexts=[])))
    return shm.segment_dir(harness.home)


def _segments_in(directory: str) -> list[str]:
    """Every file in the folder: in-flight segments, and those held or kept for reuse."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _in_flight(directory: str) -> list[str]:
    """Segments sent and not yet attached (held and kept files have a prefix)."""
    return [name for name in _segments_in(directory) if "-" not in name]


@pytest.mark.parametrize("kind", ["mode 0777", "a link to a folder of ours"])
def test_a_hostile_segment_folder_is_refused_and_never_written_to(harness, tmp_path, kind):
    directory = shm.segment_dir(harness.home)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    if kind == "mode 0777":
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        target = directory
    else:
        os.symlink(target, directory)
    try:
        with pytest.warns(RuntimeWarning, match="is not used"):
            _deploy_big(harness)
            assert harness.call("nbytes", np.ones(4 * MIB, dtype=np.uint8)) == 4 * MIB   # inline instead
        assert os.listdir(target) == []
        log = (harness.home / "engine.log").read_text()
        assert "not using shared memory" in log and f"rm -r {directory}" in log
    finally:
        if os.path.islink(directory):
            os.unlink(directory)
        else:
            shm.remove_dir(directory)


def test_a_sigkilled_worker_leaves_no_segment_of_its_arguments(harness):
    directory = _deploy_big(harness)
    (worker,) = harness.workers()
    assert harness.call("nbytes", np.ones(2 * MIB, dtype=np.uint8)) == 2 * MIB    # the connection is open
    harness.wait_for(lambda: any(n.startswith(shm_reuse.KEPT) for n in _segments_in(directory)), timeout=10,
                     what="the worker to keep the first argument's file (it lets go after answering)")
    os.kill(worker.pid, signal.SIGSTOP)                       # it will never attach what comes next
    spec = CallSpec(name="demo", tag="default", function="nbytes", timeout=30.0, max_queue_time=30.0)
    call = loop.submit(harness.backend.call(spec, (np.ones(8 * MIB, dtype=np.uint8),), {}, {}))
    harness.wait_for(lambda: _in_flight(directory), timeout=10, what="the argument's segment")
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        call.result(30)
    harness.wait_for(lambda: not _segments_in(directory), timeout=10, what="the client to remove the segment")


CLIENT = textwrap.dedent('''
    import sys
    from vast_magic import loop
    from vast_magic.backends.base import CallSpec
    from vast_magic.backends.local.backend import LocalBackend
    backend = LocalBackend(sys.argv[1])
    spec = CallSpec(name="demo", tag="default", function="big_later", timeout=60.0, max_queue_time=60.0)
    print("CALLING", flush=True)
    loop.run_sync(backend.call(spec, (8 << 20, 1.5, sys.argv[2]), {}, {}), 60)
    print("DONE", flush=True)
''')


def test_a_sigkilled_client_leaves_no_segment_of_its_result(harness, tmp_path):
    directory = _deploy_big(harness)
    started = tmp_path / "started"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(harness.home), str(started)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "CALLING"
        harness.wait_for(started.exists, timeout=30, what="the call to start on the worker")   # it sleeps 1.5 s
        os.kill(client.pid, signal.SIGSTOP)                   # it will never attach the result
        harness.wait_for(lambda: _in_flight(directory), timeout=10, what="the result's segment")
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
        harness.wait_for(lambda: not _segments_in(directory), timeout=10, what="the worker to remove the segment")
        assert "DONE" not in client.stdout.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)


EXPORT_THEN_DIE = textwrap.dedent('''
    import os, signal, sys
    from vast_magic.runtime import shm, shm_reuse
    name = shm.Segments(sys.argv[1]).export(memoryview(b"x" * (2 << 20)))
    print(name.decode(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)                      # a crash between export and send
''')


def _export_then_die(directory: str) -> str:
    done = subprocess.run([sys.executable, "-c", EXPORT_THEN_DIE, directory], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done.stdout.strip()


def _kill_engine(harness) -> None:
    engine = launcher.running_engine(harness.home)
    workers = harness.workers()
    os.kill(engine["pid"], signal.SIGKILL)
    harness.wait_for(lambda: all(pid_gone(w.pid, w.start_time) for w in workers) and
                     pid_gone(engine["pid"], engine["start_time"]), timeout=15, what="engine and workers gone")


def test_segments_of_dead_processes_are_swept_at_engine_start_and_by_engine_stop(harness):
    directory = _deploy_big(harness)
    _kill_engine(harness)
    dead = _export_then_die(directory)
    live = shm.Segments(directory).export(memoryview(b"y" * (2 * MIB))).decode()   # this process lives on
    assert sorted(_segments_in(directory)) == sorted([dead, live])
    launcher.engine_start(harness.home)
    harness.collect()
    assert _segments_in(directory) == [live]                 # the dead creator's went at start; a live one's stays
    assert harness.call("nbytes", np.ones(2 * MIB, dtype=np.uint8)) == 2 * MIB

    _kill_engine(harness)
    _export_then_die(directory)
    assert launcher.engine_stop(harness.home)["stopped"] is False    # nothing ran, and still:
    assert not os.path.exists(directory)
