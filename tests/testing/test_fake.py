"""FakeVast's worker serves the bundle the client uploaded, in its own process, as a Vast worker does."""
from __future__ import annotations

import os

import pytest

from vast_magic.backends.local.workers import proc_start_time
from vast_magic.errors import DeployError
from vast_magic.testing import WORKER, FakeVast

KEY = "user-key-0123456789"
SETUP = ("from vast_magic import Deployment, Secret\n"
         "app = Deployment(name='shipped', api_key=KEY, backend='vast', transport=TRANSPORT)\n"
         "app.image('vastai/base-image:@vastai-automatic-tag', storage=16).env(MODE='fast', TOKEN=Secret('s3cret'))")
CONTEXT = ("@app.context('tiny-model')\n"
           "class Model:\n"
           "    def __init__(self, model_id):\n"
           "        self.model_id = model_id\n"
           "    async def __aenter__(self):\n"
           "        if self.model_id == 'missing':\n"
           "            raise FileNotFoundError('no weights for missing')\n"
           "        return self\n"
           "    async def __aexit__(self, *exc):\n"
           "        return False")
REMOTE = ("import os\n"
          "FACTOR = 10\n"
          "@app.remote(benchmark_dataset=[{'x': 2}])\n"
          "async def where(x):\n"
          "    print('running', x)\n"
          "    model = app.get_context(Model)\n"
          "    return {'pid': os.getpid(), 'value': x * FACTOR, 'model': model.model_id,\n"
          "            'mode': os.environ.get('MODE'), 'token': os.environ.get('TOKEN')}")


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    with FakeVast(api_key=KEY, ready_after=0) as fake:
        shell.user_ns.update(KEY=KEY, TRANSPORT=fake.transport(), fake=fake)
        yield shell
    InteractiveShell.clear_instance()


def run(shell, *cells):
    for cell in cells:
        shell.run_cell(cell, store_history=True).raise_error()


def test_calls_run_the_uploaded_code_in_the_workers_process(shell):
    run(shell, SETUP, CONTEXT, REMOTE, "report = app.ensure_ready()", "first = where.call(3)")
    fake = shell.user_ns["fake"]
    (deployment,) = fake.deployments.values()
    first = shell.user_ns["first"]
    worker = deployment.processes[WORKER][1]
    assert first == {"pid": worker.pid, "value": 30, "model": "tiny-model", "mode": "fast",
                     "token": "s3cret"}
    assert first["pid"] != os.getpid()
    assert "Loaded config for deployment: shipped" in worker.logs()
    run(shell, "FACTOR = 1000", "second = where.call(3)")          # changed here, not deployed: not run there
    assert shell.user_ns["second"]["value"] == 30
    run(shell, "def where(x):\n    return 'a local object'")        # nor is any object of this process
    run(shell, "third = app.functions['where'].call(3)")
    assert shell.user_ns["third"]["value"] == 30


def test_a_redeploy_serves_the_new_bundle_from_a_new_process(shell):
    run(shell, SETUP, CONTEXT, REMOTE, "app.ensure_ready()", "first = where.call(1)")
    old_pid = shell.user_ns["first"]["pid"]
    old_start = proc_start_time(old_pid)
    run(shell, "FACTOR = 7", "report = app.ensure_ready()", "second = where.call(1)")
    assert shell.user_ns["report"].tier == 2
    second = shell.user_ns["second"]
    assert second["value"] == 7 and second["pid"] != old_pid
    assert proc_start_time(old_pid) != old_start                       # the old worker was stopped


def test_a_worker_whose_context_fails_reports_what_vast_says(shell):
    run(shell, SETUP, CONTEXT.replace("'tiny-model'", "'missing'"), REMOTE)
    with pytest.raises(DeployError, match=r"Lifecycle startup failed: no weights for missing"):
        run(shell, "app.ensure_ready(timeout=60)")


def test_close_stops_the_workers_by_pid(shell):
    run(shell, SETUP, CONTEXT, REMOTE, "app.ensure_ready()", "first = where.call(1)")
    pid = shell.user_ns["first"]["pid"]
    start = proc_start_time(pid)
    shell.user_ns["fake"].close()
    assert proc_start_time(pid) != start


def test_a_plain_env_change_reaches_the_workers(shell):
    run(shell, SETUP, CONTEXT, REMOTE, "app.ensure_ready()")
    run(shell, "app.image('vastai/base-image:@vastai-automatic-tag', storage=16).env(MODE='slow', TOKEN=Secret('s3cret'))",
        "report = app.ensure_ready(timeout=5)", "after = where.call(1)")
    assert shell.user_ns["report"].tier == 3 and shell.user_ns["after"]["mode"] == "slow"
