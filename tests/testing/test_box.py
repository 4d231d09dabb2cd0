"""``backend="vast"`` end to end, offline: our client -> the loopback box -> the official worker serving our upload.

Nothing here is faked on the path of a call: the box (``vast_magic.testing.VastBox``)
answers as Vast's webserver, storage and autoscaler on 127.0.0.1, and each worker
is the official ``vastai==1.9.1`` serve entry point started without
``DEBUG_DEPLOYMENT_TAR``, so it downloads the bundle our client uploaded, enters
the contexts, benchmarks, reports ready, verifies the box's RSA signature on every
call and runs our shim. The tests use the public API only (cells in a real
IPython shell or a real kernel); they read the box's records to check what
crossed the wire. If the official venv cannot be built the tests fail, saying
why (CI has the package index), never skip.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient
from traitlets.config import Config

from vast_magic import settings
from vast_magic.errors import DeployError
from vast_magic.testing import VastBox
from vast_magic.testing._box_workers import listening_addresses

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture
def box(request, tmp_path, monkeypatch):
    """A running box (``workers_shape`` from ``indirect`` parametrization); every worker gone afterwards."""
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    for name in ("VAST_API_KEY", "VAST_MAGIC_VAST_URL", "VAST_MAGIC_AUTOSCALER_URL", "VAST_MAGIC_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAST_MAGIC_VAST_POLL_INTERVAL", "0.5")     # the documented testing knob
    settings.set_config_source(None)
    with VastBox(workers_shape=getattr(request, "param", "dict")) as running:
        yield running
        pids = [w["pid"] for w in running.workers() if w["pid"]]
    assert not [pid for pid in pids if _alive(pid)], "the box left worker processes running"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def shell():
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    shell.user_ns["__session__"] = "box-demo.ipynb"
    shell.run_line_magic("load_ext", "vast_magic")
    yield shell
    shell.run_line_magic("unload_ext", "vast_magic")
    InteractiveShell.clear_instance()


def run(shell: InteractiveShell, cell: str):
    """Run a cell like a notebook does; ``value = <expression>`` cells return the value (no Out[] line)."""
    result = shell.run_cell(cell, store_history=True)
    result.raise_error()
    return shell.user_ns.get("value") if cell.startswith("value = ") else result.result


SETUP = '''
import numpy as np
from vast_magic import Deployment

app = Deployment(name="boxdemo", backend="vast", ttl=600, **BOX)
app.configure_autoscaling(max_workers=1)
'''
CONTEXT = '''
@app.context(offset=10)
class Model:
    def __init__(self, offset):
        self.offset = offset
    async def __aenter__(self):
        self.loaded = True
        return self
    async def __aexit__(self, *exc):
        return False
'''
FUNCTIONS = '''
def helper(x):
    return x + 1

@app.remote(benchmark_dataset=[{"x": 1}, {"x": 2}], benchmark_runs=2)
async def add(x):
    model = app.get_context(Model)
    print("adding", x)
    return helper(x) + model.offset

@app.remote()
def scaled(values):
    return np.asarray(values) * 2.5

@app.remote()
async def fail(message):
    print("about to fail")
    raise KeyError(message)
'''
EDITED = FUNCTIONS.replace('print("adding", x)\n    return helper(x) + model.offset',
                           'print("adding v2", x)\n    return helper(x) * 100 + model.offset')


def test_cells_deploy_and_run_on_the_official_worker(box, shell, capsys):
    shell.user_ns["BOX"] = {"api_key": box.api_key, "vast_url": box.web_url, "autoscaler_url": box.autoscaler_url}
    for cell in (SETUP, CONTEXT, FUNCTIONS):
        run(shell, cell)
    assert f"vast_url='{box.web_url}', autoscaler_url='{box.autoscaler_url}'" in repr(shell.user_ns["app"])

    report = run(shell, "value = app.ensure_ready()")
    (worker,) = box.workers()
    assert (report.tier, report.backend_action) == (4, "created")
    assert [(w.id, w.state, w.detail) for w in report.workers] == [(str(worker["id"]), "ready", "idle")]
    assert report.benchmark and report.benchmark > 0
    progress = capsys.readouterr().out
    assert f"worker {worker['id']}: ready (vast: idle) perf=" in progress
    assert all(host in LOOPBACK for host, _ in listening_addresses(worker["pid"]))

    assert run(shell, "value = await add(5)") == 16
    assert capsys.readouterr().out == "adding 5\n"
    np.testing.assert_array_equal(run(shell, "value = await scaled(np.arange(4.0))"), np.arange(4.0) * 2.5)
    run(shell, "try:\n    await fail('no such key')\nexcept KeyError as exc:\n    caught = exc")
    caught = shell.user_ns["caught"]
    assert (caught.remote_type, caught.remote_message) == ("KeyError", "'no such key'")
    assert capsys.readouterr().out == "about to fail\n"

    run(shell, "%vast_status --app app")
    status = capsys.readouterr().out
    assert "vast_magic boxdemo (tag default): ready" in status
    assert f"webserver {box.web_url}, autoscaler {box.autoscaler_url}" in status
    assert f"worker {worker['id']}: ready (vast: idle)" in status
    run(shell, "%vast_logs --app app add")
    assert capsys.readouterr().out.splitlines() == [f"[{report.endpoint.removeprefix('vast ')}] adding 5"]

    run(shell, EDITED)                                            # a cell edit: tier 2, a soft update
    edited = run(shell, "value = app.ensure_ready()")
    assert (edited.tier, edited.backend_action) == (2, "soft_update")
    assert run(shell, "value = await add(5)") == 610              # the next call runs the new code
    assert capsys.readouterr().out.endswith("adding v2 5\n")
    new = next(w for w in box.workers() if w["replaces"] == worker["id"])
    assert new["version"] == 2 and new["status"] == "idle"
    assert next(w for w in box.workers() if w["id"] == worker["id"])["status"] in ("destroying", "stopped")
    run(shell, "app.configure_autoscaling(max_workers=2)")
    scaled = run(shell, "value = app.ensure_ready()")
    unchanged = run(shell, "value = app.ensure_ready()")
    assert [(r.tier, r.backend_action) for r in (scaled, unchanged)] == [(1, "autoscale_update"), (0, "exists")]
    assert len([w for w in box.workers() if w["alive"] and w["status"] == "idle"]) == 1     # cold_workers unset: 1

    run(shell, "%vast_teardown --app app")
    assert "boxdemo: torn down (tag default)" in capsys.readouterr().out
    box.wait_until(lambda b: all(not w["alive"] for w in b.workers()), timeout=30)
    assert_wire(box, workers=2)


def assert_wire(box: VastBox, workers: int) -> None:
    """What crossed the box: each request of reference 1.2's order, from the right party with the right key."""
    def count(role, method, path):
        return len(box.requests(role, method, path))
    put1, *later = box.requests("webserver", "PUT", "/api/v0/deployments/")
    assert [put.answer.body["action"] for put in [put1, *later]] == ["created", "soft_update", "autoscale_update",
                                                                    "exists"]                     # reference 8.1
    assert put1.bearer == box.api_key and f"-e VAST_API_URL={box.web_url}" in put1.json["env"]
    assert f"-e REPORT_ADDR={box.autoscaler_url}" in put1.json["env"]
    assert count("storage", "POST", "/upload") == 2
    downloads = [r for r in box.requests("webserver", "GET") if r.path.endswith("/download_url/")]
    assert len(downloads) == workers and all(r.bearer and r.bearer != box.api_key for r in downloads)
    assert len([r for r in box.requests("storage", "GET") if r.path.startswith("/blobs/")]) == workers
    assert count("autoscaler", "GET", "/pubkey/") >= workers
    assert count("autoscaler", "POST", "/worker_status/") >= workers
    assert count("autoscaler", "POST", "/update_workers/") == 1
    assert count("webserver", "GET", "/api/v0/workergroups/") == 0      # the PUT answer carried workergroup_id
    assert count("webserver", "DELETE", None) >= 1
    heartbeats = [r for r in box.requests("webserver", "POST") if r.path.endswith("/heartbeat/")]
    assert heartbeats and all(r.bearer == box.api_key and r.raw == b"" for r in heartbeats)


def test_a_call_waits_on_route_until_a_cold_worker_is_ready(box, shell, capsys):
    """cold_workers=0: ensure_ready does not wait, the first /route/ recruits, and the call waits for it, writing
    what the autoscaler said into its cell."""
    shell.user_ns["BOX"] = box.deployment_args()
    run(shell, "from vast_magic import Deployment\napp = Deployment(name='cold', backend='vast', **BOX)\n"
               "app.configure_autoscaling(cold_workers=0, max_workers=1)")
    run(shell, "@app.remote(benchmark_dataset=[{'x': 3}])\nasync def triple(x):\n    return 3 * x")
    assert run(shell, "value = app.ensure_ready()").workers == () and box.workers() == []
    assert run(shell, "value = triple.call(4)") == 12
    routes = box.requests("autoscaler", "POST", "/route/")
    first, last = routes[0], routes[-1]
    assert first.json["request_idx"] == 0 and first.answer.status == 200 and "url" not in first.answer.body
    assert first.answer.body["status"].startswith("waiting for workers: 1 ")          # reference 8.3
    assert all(r.json["request_idx"] == first.answer.body["request_idx"] for r in routes[1:])
    assert last.answer.body["url"] == f"http://127.0.0.1:{box.workers()[0]['port']}"
    assert len(box.workers()) == 1
    notes = capsys.readouterr().err.splitlines()
    assert notes and notes[0].startswith("[vast_magic] triple: waiting for a worker after ")
    assert notes[0].endswith(f"(vast: {first.answer.body['status']})")
    run(shell, "app.teardown()")


def test_a_secret_rotation_is_vasts_own_hard_update(box, shell):
    """Tier 3 (a secret changed): no /update_workers/; Vast (the box) restarts the worker on the PUT, ensure_ready
    waits for the restarted one, and the next call sees the new value."""
    shell.user_ns["BOX"] = box.deployment_args()
    run(shell, "import os\nfrom vast_magic import Deployment, Secret\n"
               "app = Deployment(name='rotate', backend='vast', **BOX)\napp.configure_autoscaling(max_workers=1)\n"
               "image = app.image()\nimage.env(TOKEN=Secret('first'))")
    run(shell, "@app.remote(benchmark_dataset=[{'x': 1}])\nasync def token(x):\n    return os.environ['TOKEN']")
    assert run(shell, "value = app.ensure_ready()").tier == 4
    assert run(shell, "value = token.call(1)") == "first"
    (old,) = box.workers()
    run(shell, "image.env(TOKEN=Secret('second'))")
    report = run(shell, "value = app.ensure_ready()")
    assert (report.tier, report.backend_action) == (3, "soft_update")
    assert report.reasons[-1].startswith("image-level change: Vast answered 'soft_update': Vast performs a hard "
                                         "update itself")
    assert box.requests("autoscaler", "POST", "/update_workers/") == []
    new = next(w for w in box.workers() if w["replaces"] == old["id"])
    assert [w.id for w in report.workers if w.state == "ready"] == [str(new["id"])]
    assert run(shell, "value = token.call(1)") == "second"
    run(shell, "app.teardown()")


@pytest.mark.parametrize("box", ["list"], indirect=True)     # get_endpoint_workers as the SDK expects it
def test_a_failing_benchmark_fails_the_deploy_with_the_workers_message(box, shell):
    shell.user_ns["BOX"] = box.deployment_args()
    run(shell, "from vast_magic import Deployment\napp = Deployment(name='broken', backend='vast', **BOX)")
    run(shell, "@app.remote(benchmark_dataset=[{'x': 0}])\nasync def invert(x):\n    return 1 / x")
    with pytest.raises(DeployError, match=r"every new worker of endpoint \d+ failed; fix the cause.*\nworker 1: "
                                          r"Lifecycle startup failed: benchmark call invert\(\*\*\{'x': 0\}\) "
                                          r"failed: builtins.ZeroDivisionError: division by zero\n"):
        run(shell, "app.ensure_ready(timeout=120)")    # the worker's words, not "no worker became ready within"
    run(shell, "app.teardown()")


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quickstart_vast_section_runs_headless_against_the_box(box, tmp_path, monkeypatch):
    """The quickstart's Vast cells, unchanged, in a real kernel whose environment points at the box."""
    for key, value in box.env().items():
        monkeypatch.setenv(key, value)
    section = [c.source for c in _build_module().VAST_SECTION if c.cell_type == "code"]
    cells = ["%load_ext vast_magic\nfrom vast_magic import Deployment", *section]   # the notebook's first cell
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = {cell.source.splitlines()[0]: _text(cell.outputs) for cell in notebook.cells}

    def output(prefix: str) -> str:
        return next(text for first, text in out.items() if first.startswith(prefix))

    assert output("from vast_magic.query") == "no offers match these requirements; loosen image.require(...)"
    assert "tier 4 (backend: created): new deployment" in output("report = %vast_deploy")
    assert output("report = %vast_deploy").endswith("tier 4 created workers 1\n")
    assert output("await square(5)") == "worker squaring 5 with tiny-model\n25"
    status = output("%vast_status")
    assert "vast_magic quickstart (tag default): ready" in status and "worker 1: ready (vast: idle)" in status
    assert f"webserver {box.web_url}, autoscaler {box.autoscaler_url}" in status
    assert output("%vast_logs").strip().endswith("] worker squaring 5 with tiny-model")
    assert output("%vast_teardown") == "quickstart: torn down (tag default)\n"
    (put,) = box.requests("webserver", "PUT", "/api/v0/deployments/")
    assert put.json["search_params"] == "gpu_name in RTX_4090,H100_SXM gpu_ram>=24 rentable=true rented=false verified=true"
    assert put.json["ttl"] == 3600 and box.requests("webserver", "POST", None)     # heartbeats of the ttl
    box.wait_until(lambda b: all(not w["alive"] for w in b.workers()), timeout=30)


def _text(outputs: list) -> str:
    parts = []
    for output in outputs:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def test_a_box_in_a_terminal_prints_what_to_export_and_serves_until_ctrl_c(tmp_path, monkeypatch, shell):
    """``python -m vast_magic.testing``: the export lines point a client at it; Ctrl-C stops it and its workers."""
    import os
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    process = subprocess.Popen([sys.executable, "-m", "vast_magic.testing", "--api-key", "terminal-key"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        lines = [process.stdout.readline() for _ in range(6)]
        exports = dict(line.strip().removeprefix("export ").split("=", 1) for line in lines if "export " in line)
        assert exports["VAST_API_KEY"] == "terminal-key" and lines[-1].startswith("Ctrl-C stops it")
        for key, value in exports.items():
            monkeypatch.setenv(key, value)
        run(shell, "from vast_magic import Deployment\napp = Deployment(name='terminal', backend='vast')")
        run(shell, "@app.remote(benchmark_dataset=[{'x': 1}])\nasync def inc(x):\n    return x + 1")
        assert run(shell, "value = app.ensure_ready()").backend_action == "created"
        assert run(shell, "value = inc.call(41)") == 42
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopping the box and its workers" in rest


@pytest.mark.parametrize("argv, message", [
    (["--max-workrs", "2"], "unrecognized arguments: --max-workrs 2"),
    (["--webserver-port", "eighty"], "argument --webserver-port: invalid int value: 'eighty'"),
])
def test_box_command_typos(argv, message, capsys):
    from vast_magic.testing.box import main
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
