"""Error paths of the local engine that users hit: an engine that cannot start, a deploy cancelled mid-apply.

The cancelled deploy goes through ``Deployment.async_ensure_ready`` (what an ``await`` in a notebook or an
asyncio program calls): cancelling the task while the new worker is still entering its context stops that
worker, and the previous version keeps serving.
"""
from __future__ import annotations

import asyncio
import importlib
import sys
import time

import pytest

from vast_magic.backends.local import launcher
from vast_magic.backends.local.workers import proc_start_time
from vast_magic.errors import BackendError

MODULE = '''
import asyncio
from vast_magic import Deployment

app = Deployment(name="interrupted")
app.image("vastai/base-image:@vastai-automatic-tag", storage=16).env(MODE={mode!r})


@app.context()
class Model:
    async def __aenter__(self):
        await asyncio.sleep({delay})
        return self

    async def __aexit__(self, *exc):
        return False


@app.remote(benchmark_dataset=[{{"x": 1}}], benchmark_runs=1)
async def mode(x):
    import os
    return os.environ["MODE"], os.getpid()
'''


def test_an_engine_that_cannot_start_says_why(tmp_path, monkeypatch, engine_home):
    shadow = tmp_path / "shadow" / "vast_magic"          # a broken install, seen only by the daemon process
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("this vast_magic install is broken")\n')
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    with pytest.raises(BackendError, match=r"(?s)^the local engine did not start within 60s; see \S+engine\.log:\n"
                                           r".*ImportError: this vast_magic install is broken"):
        launcher.ensure_engine(engine_home.path, timeout=60)
    assert launcher.running_engine(engine_home.path) is None


@pytest.fixture
def app_module(tmp_path, monkeypatch, engine_home):
    """Writes ``interrupted_app.py`` with the given MODE and context delay, and imports it afresh."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(mode: str, delay: float):
        (tmp_path / "interrupted_app.py").write_text(MODULE.format(mode=mode, delay=delay))
        sys.modules.pop("interrupted_app", None)
        importlib.invalidate_caches()
        return importlib.import_module("interrupted_app")

    yield load
    sys.modules.pop("interrupted_app", None)
    engine_home.collect()


def test_cancelling_async_ensure_ready_mid_apply_keeps_the_old_version(app_module, engine_home):
    first = app_module("first", 0)

    async def scenario():
        report = await first.app.async_ensure_ready(timeout=120)
        served = await first.mode(1)
        second = app_module("second", 3600)                  # its worker never finishes entering Model
        task = asyncio.ensure_future(second.app.async_ensure_ready(timeout=600))
        deadline = time.monotonic() + 120
        while not [w for w in second.app.status().workers if w.state == "contexts"]:
            assert not task.done() and time.monotonic() < deadline, "the new worker never reached its context"
            await asyncio.sleep(0.1)
        candidate = next(w for w in second.app.status().workers if w.state == "contexts")
        engine_home.collect()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return report, served, candidate, second

    report, served, candidate, second = asyncio.run(scenario())
    assert report.tier == 4 and served[0] == "first" and isinstance(served, tuple)
    start = proc_start_time(candidate.pid)
    deadline = time.monotonic() + 60
    while proc_start_time(candidate.pid) == start and start is not None:
        assert time.monotonic() < deadline, "the cancelled deploy's worker was not stopped"
        time.sleep(0.1)
    status = second.app.status()
    assert [w.pid for w in status.workers if w.state == "ready"] == [served[1]]      # the old worker serves on
    assert first.app.functions["mode"].call(1) == ("first", served[1])
