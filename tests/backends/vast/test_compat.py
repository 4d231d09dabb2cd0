"""Our bundle served by the official worker (``vastai==1.9.1``), offline, with real request signatures.

The official venv is the one the box uses (``vast_magic.testing.official``: built
once in the user cache, never in the checkout), and so is the signer (a helper
process of that venv holding a fresh RSA key). The bundle is built through the
public API from functions defined in real IPython cells, and again from the same
code kept in a module that a script imports (``import compat_app``), with a helper
in a second local module shipped as a file. The worker runs
``python -m vastai.serverless.remote.serve_deployment`` with
``DEBUG_DEPLOYMENT_TAR`` (reference 4.1-4.2), next to a loopback stand-in for
the autoscaler (``/pubkey/``, ``/worker_status/``, ``/delete_requests/``).
The official worker listens on all interfaces, so the whole exchange runs in a
child process inside a private network namespace (``unshare -n``) when the
system allows it; traffic goes only to 127.0.0.1 either way. Calls use the
official request body (reference 3.1-3.2), both with our envelope and as plain
JSON; plain arguments are encoded, and plain answers decoded, by the official
client's own serialization code (in the official venv), so a function raising
``ValueError("boom-7")`` must reach that client with its message (issue 15 item 8).
The context waits for a gate file: a plain call sent before the gate opens is let
in by the stock worker while no context is entered (weakness 14); it must wait
and get its answer once the gate opens (item 10). tests/testing/test_box.py runs the whole path (upload and download
included); this test pins the worker-side contract alone. If the venv cannot
be built the test fails, saying why.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vast_magic.testing._box_signer import Signer
from vast_magic.testing.official import OfficialVenvError, official_python

ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 180.0
GATE = "open-gate"          # Model.__aenter__ waits (at most 60 s) for this file in the worker's directory
#: the official client's own encoder and decoder (``vastai.serverless.remote.serialization``, as ``_dispatch``
#: uses them from a script: root module ``__main__``), run in the official venv; JSON in, JSON out
OFFICIAL_CLIENT = """
import json, sys
from vastai.serverless.remote import serialization as s
job = json.load(sys.stdin)
if job["op"] == "encode":
    out = {name: {k: s.serialize(v, "__main__") for k, v in kwargs.items()} for name, kwargs in job["calls"].items()}
else:
    out = {}
    for name, result in job["results"].items():
        try:
            out[name] = {"value": s.deserialize_unwrap_error(result, "__main__", {})}
        except Exception as exc:
            out[name] = {"raised": [type(exc).__module__ + "." + type(exc).__qualname__, str(exc)]}
print(json.dumps(out, default=repr))
"""

CELLS = [
    "import numpy as np\nfrom vast_magic import Deployment\n"
    "app = Deployment(name='compat', backend='vast')",
    "SCALE = np.array([1.0, 2.0, 3.0])\n\ndef helper(x):\n    return x + 1",
    "@app.context(offset=10)\nclass Model:\n    def __init__(self, offset):\n        self.offset = offset\n"
    "    async def __aenter__(self):\n        import asyncio, os\n        for _ in range(600):\n"
    "            if os.path.exists('open-gate'):\n                break\n            await asyncio.sleep(0.1)\n"
    "        return self\n    async def __aexit__(self, *exc):\n        return False",
    "@app.remote(benchmark_dataset=[{'x': 1}, {'x': 2}], benchmark_runs=2)\nasync def add(x):\n"
    "    model = app.get_context(Model)\n    print('adding', x)\n    return helper(x) + model.offset",
    "@app.remote()\ndef scaled(x):\n    return (SCALE * x).tolist()",
    "@app.remote()\nasync def fail(message):\n    print('about to fail')\n    raise ValueError(message)",
    "@app.remote()\ndef tokens(n, fail_at=None):\n    for i in range(n):\n        if i == fail_at:\n"
    "            raise ValueError(f'failed at token {i}')\n        yield f't{i}'",
]


# -- the cached venv and the signer (shared with the box) ------------------------------------------
def ensure_venv() -> Path:
    try:
        return official_python()
    except OfficialVenvError as exc:
        pytest.fail(f"the official vastai venv is needed and could not be built: {exc}")


def official_client(python: Path, job: dict) -> dict:
    """One job for the official client's serialization code (``OFFICIAL_CLIENT``) in the official venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST", "PYTHON", "IS_DEPLOYMENT"))}
    done = subprocess.run([str(python), "-c", OFFICIAL_CLIENT], input=json.dumps(job), capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def sign(python: Path, url: str) -> tuple[str, str]:
    """A fresh RSA key (PEM public part) and the signature of ``url`` as the autoscaler makes it."""
    signer = Signer(python)
    try:
        return signer.pubkey, signer.sign(url)
    finally:
        signer.close()


# -- building the bundle from IPython cells, or from an imported module ---------------------------------
def build_bundle(folder: Path, style: str) -> Path:
    return build_from_cells(folder) if style == "cells" else build_from_module(folder)


def build_from_cells(folder: Path) -> Path:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        for cell in CELLS:
            result = shell.run_cell(cell, store_history=True)
            result.raise_error()
        path = folder / "compat.tar.gz"
        shell.user_ns["app"].build_bundle(str(path))
        return path
    finally:
        InteractiveShell.clear_instance()


def build_from_module(folder: Path) -> Path:
    """The cells' code as ``compat_app.py`` (its helper in ``compat_helpers.py``), imported as a user's script would."""
    source = folder / "src"
    source.mkdir()
    helper = CELLS[1].split("\n\ndef ")[1]
    (source / "compat_helpers.py").write_text("def " + helper + "\n")
    app_cells = [CELLS[0], "from compat_helpers import helper\nSCALE = np.array([1.0, 2.0, 3.0])", *CELLS[2:]]
    (source / "compat_app.py").write_text("\n\n\n".join(app_cells) + "\n")
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\nimport compat_app\n"
            "compat_app.app.build_bundle(sys.argv[2])\n")
    path = folder / "compat.tar.gz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VAST_MAGIC_HOME"] = str(folder / "home")
    subprocess.run([sys.executable, "-c", code, str(source), str(path)], check=True, env=env, cwd=folder)
    return path


# -- the child: stand-in autoscaler + official worker, inside the namespace ---------------------------
class StandIn(BaseHTTPRequestHandler):
    """Autoscaler (pubkey, worker reports, /route/) and webserver (endptjobs) on one loopback port."""

    pem = ""
    signature = ""
    worker_url = ""
    reports: list = []
    routes: list = []
    pubkeys: list = []

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/pubkey":
            self.pubkeys.append(time.time())
            return self._answer(200, self.pem.encode())
        if path == "/api/v0/endptjobs/1":
            return self._json({"result": {"id": 1, "endpoint_name": "compat-ep", "api_key": "endpoint-key-1"}})
        self._answer(404, b"{}")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        path = self.path.split("?")[0].rstrip("/")
        if path == "/worker_status":
            self.reports.append({**body, "received_at": time.time()})
        if path == "/route":
            self.routes.append({"body": body, "authorization": self.headers.get("authorization")})
            n = len(self.routes) + 100
            return self._json({"url": self.worker_url, "signature": self.signature, "cost": body.get("cost"),
                               "endpoint": body.get("endpoint"), "reqnum": n, "request_idx": n})
        self._answer(200, b"{}")

    def _json(self, data):
        self._answer(200, json.dumps(data).encode())

    def _answer(self, status, data):
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENVELOPE_KEY = bytes(range(7, 39))          # what the deployment env gives the workers (VAST_MAGIC_ENVELOPE_KEY)
MAX_REQUEST_BYTES = 256 * 1024


def start_worker(python: Path, bundle: Path, workdir: Path, port: int, report: str) -> subprocess.Popen:
    tar = workdir / "bundle.tar.gz"
    shutil.copy(bundle, tar)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST", "PYTHON"))}
    env.update(IS_DEPLOYMENT="true", DEPLOYMENT_ID="1", DEBUG_DEPLOYMENT_TAR=str(tar), WORKER_PORT=str(port),
               REPORT_ADDR=report, CONTAINER_ID="7", PUBLIC_IPADDR="127.0.0.1", MASTER_TOKEN="compat-token",
               **{f"VAST_TCP_PORT_{port}": str(port)}, VAST_API_KEY="unused-offline", VAST_LOG_LEVEL="WARNING",
               VAST_MAGIC_ENVELOPE_KEY=ENVELOPE_KEY.hex(), VAST_MAGIC_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES))
    log = open(workdir / "worker.log", "wb")
    return subprocess.Popen([str(python), "-m", "vastai.serverless.remote.serve_deployment"], cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(worker: subprocess.Popen, workdir: Path) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for report in list(StandIn.reports):
            if report.get("error_msg"):
                return report
            if float(report.get("loadtime") or 0) > 0:
                return report
        if worker.poll() is not None:
            break
        time.sleep(0.2)
    log = (workdir / "worker.log").read_text(errors="replace")[-4000:]
    raise AssertionError(f"worker not ready (rc={worker.poll()}); log tail:\n{log}")


def post(url: str, body: dict) -> tuple[int, object]:
    import urllib.error
    import urllib.request
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def official_body(base: str, signature: str, n: int, kwargs: dict) -> dict:
    """What the official client posts to a worker (reference 3.1 step 4), ``auth_data`` as /route/ answered."""
    auth = {"url": base, "signature": signature, "cost": 100, "endpoint": "compat", "reqnum": n, "request_idx": n}
    return {"auth_data": auth, "session_id": None, "payload": {"kwargs": kwargs}}


def early_call(base: str, signature: str, workdir: Path) -> dict:
    """A plain call sent while Model.__aenter__ still waits for the gate (weakness 14), then the gate opened.

    Attempts refused with 401 (the worker has not fetched the pubkey yet) or not connected (its HTTP site is
    not up yet) are sent again. Once one attempt has
    been outstanding for 2 s the worker has let it in; the gate opens and the call must get its answer.
    """
    attempt: dict = {}

    def send():
        for n in range(900, 1200):
            attempt.update(sent_at=time.time(), answered_at=None)
            try:
                status, body = post(f"{base}/remote/add", official_body(base, signature, n, {"x": 1}))
            except OSError as exc:           # the worker's HTTP site is not up yet
                status, body = None, repr(exc)
            attempt.update(status=status, body=body, answered_at=time.time())
            if status not in (None, 401):
                return
            time.sleep(0.2)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (attempt.get("sent_at") and attempt.get("answered_at") is None
                                               and time.time() - attempt["sent_at"] > 2.0):
        time.sleep(0.1)
    gate_at = time.time()
    (workdir / GATE).touch()
    thread.join(120)
    loaded = [r["received_at"] for r in StandIn.reports if float(r.get("loadtime") or 0) > 0]
    return {"status": attempt.get("status"), "body": attempt.get("body"),
            "admitted_before_gate": bool(attempt.get("answered_at")) and attempt["sent_at"] < gate_at,
            "answered_after_gate": (attempt.get("answered_at") or 0) >= gate_at,
            "loaded_before_gate": bool(loaded) and min(loaded) < gate_at}


def bundle_version(workdir: Path) -> str:
    import re
    text = (workdir / "deployment.py").read_text()
    return re.search(r"^_VM_VERSION = '([^']*)'", text, re.M).group(1)


def run_calls(base: str, signature: str, workdir: Path, python: Path) -> dict:
    """Every call with the official body; envelope answers are decoded here, plain ones by the official client."""
    from vast_magic.backends.vast import envelope

    counter = iter(range(1, 1000))
    version = bundle_version(workdir)

    def call(name: str, kwargs: dict):
        return post(f"{base}/remote/{name}", official_body(base, signature, next(counter), kwargs))

    def enveloped(name: str, *args):
        payload = envelope.request_payload(args, {})
        status, body = call(name, envelope.call_kwargs(ENVELOPE_KEY, payload, function=name, version=version, url=base))
        if status != 200 or "ok" not in body.get("result", {}):
            return {"status": status, "body": body}
        outcome = envelope.outcome_from_message(envelope.decode(body["result"]["ok"]))
        error = outcome.error
        return {"status": status, "value": outcome.value, "output": [list(o) for o in outcome.output],
                "error": None if error is None else [error.remote_type, error.remote_message,
                                                     isinstance(error, ValueError)]}

    results = {"env_add": enveloped("add", 5), "env_scaled": enveloped("scaled", 2), "env_fail": enveloped("fail", "nope")}
    plain = {"plain_add": ("add", {"x": 5}), "plain_fail": ("fail", {"message": "boom-7"})}
    encoded = official_client(python, {"op": "encode", "calls": {name: kwargs for name, (_, kwargs) in plain.items()}})
    for name, (function, _) in plain.items():
        status, body = call(function, encoded[name])
        results[name] = {"status": status, "body": body}
    answers = {name: results[name]["body"]["result"] for name in plain if results[name]["status"] == 200}
    results["official_client"] = official_client(python, {"op": "decode", "results": answers})
    bad_auth = post(f"{base}/remote/add", {"auth_data": {"url": base, "signature": "AAAA", "cost": 1, "endpoint": "x",
                                                          "reqnum": 1, "request_idx": 1}, "payload": {"kwargs": {"x": 1}}})
    results["bad_signature"] = {"status": bad_auth[0]}
    results["refusals"] = refusals(call, base, version, workdir)
    return results


def refusals(call, base: str, version: str, workdir: Path) -> dict:
    """Envelopes the shim must refuse, each holding a canary pickle that creates a file if unpickled."""
    import base64
    import pickle

    from vast_magic.backends.vast import envelope
    from vast_magic.runtime import sealed

    canary_path = workdir / "canary-was-unpickled"

    class Canary:
        def __reduce__(self):
            return (open, (str(canary_path), "w"))

    canary = envelope.pack(pickle.dumps({"args": (Canary(),), "kwargs": {}}, protocol=5))
    benign = envelope.request_payload((1,), {})

    def seal(payload, key=ENVELOPE_KEY, **changes):
        return sealed.seal(key, payload, **({"function": "add", "version": version, "url": base} | changes))

    def send(text):
        status, body = call("add", {envelope.PARAM: text})
        result = body.get("result", {}) if isinstance(body, dict) else {}
        if "err" in result:
            return [status, "err", (result["err"].get("contents") or {}).get("message", "")]
        return [status, "ok", str(result.get("ok"))[:200]] if "ok" in result else [status, str(body)[:200]]

    first = seal(benign)
    tampered = first.split(".")
    cases = {
        "unsigned": base64.b64encode(canary).decode(),
        "wrong_key": seal(canary, key=bytes(32)),
        "tampered": ".".join(tampered[:3] + [base64.b64encode(canary).decode()]),
        "other_worker": seal(canary, url="http://127.0.0.1:1"),
        "first_use": first,
        "replayed": first,
        "stale_version": seal(canary, version="f" * 64),
    }
    out = {name: send(text) for name, text in cases.items()}
    out["oversized"] = send(seal(canary + b"\0" * (2 * MAX_REQUEST_BYTES)))
    out["canary_after_refusals"] = canary_path.exists()
    out["control"] = send(seal(canary))[:2]
    out["canary_after_control"] = canary_path.exists()
    return out


async def backend_calls(standin: str, home: Path) -> dict:
    """The same functions through VastBackend.call: endptjobs, /route/ and the worker, over real loopback HTTP."""
    from vast_magic.backends.base import CallSpec
    from vast_magic.backends.vast import sealing, state
    from vast_magic.backends.vast.backend import VastBackend

    state.write_record(home, state.DeployRecord("compat", "default", 1, 1, None, "created"))
    sealing.key_path(home, "compat", "default").write_bytes(ENVELOPE_KEY)
    backend = VastBackend(home=str(home), api_key="user-key-offline", webserver_url=standin, autoscaler_url=standin)
    results = {}
    for name, args in (("add", (7,)), ("scaled", (3,)), ("fail", ("again",))):
        spec = CallSpec(name="compat", tag="default", function=name, timeout=60.0, max_queue_time=30.0)
        outcome = await backend.call(spec, args, {}, {})
        error = outcome.error
        results[name] = {"value": outcome.value, "output": [list(o) for o in outcome.output],
                         "error": None if error is None else [type(error).__name__, str(error)]}
    for label, kwargs in (("stream", {}), ("stream_fail", {"fail_at": 2})):     # the collecting fallback
        spec = CallSpec(name="compat", tag="default", function="tokens", timeout=60.0, max_queue_time=30.0)
        events = [event async for event in backend.stream(spec, (4,), kwargs, {})]
        end = events[-1][1]
        results[label] = {"items": [item for kind, value in events if kind == "items" for item in value],
                          "error": None if end.error is None else [type(end.error).__name__, str(end.error)]}
    await backend.api.aclose()
    return results


def child_main(bundle: str, python: str, out: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vast-compat-"))
    port, stand_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    StandIn.pem, signature = sign(Path(python), base)
    StandIn.signature, StandIn.worker_url = signature, base
    server = ThreadingHTTPServer(("127.0.0.1", stand_port), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = start_worker(Path(python), Path(bundle), workdir, port, f"http://127.0.0.1:{stand_port}")
    try:
        early = early_call(base, signature, workdir)
        ready = wait_ready(worker, workdir)
        results = {"ready": ready, "early": early, "calls": {}, "backend": {}}
        if not ready.get("error_msg"):
            results["calls"] = run_calls(base, signature, workdir, Path(python))
            standin = f"http://127.0.0.1:{stand_port}"
            results["backend"] = asyncio.run(backend_calls(standin, workdir / "home"))
            results["routes"] = StandIn.routes
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        server.shutdown()
    results["worker_log"] = (workdir / "worker.log").read_text(errors="replace")[-3000:]
    Path(out).write_text(json.dumps(results, default=repr))
    shutil.rmtree(workdir, ignore_errors=True)


def namespace_prefix() -> list[str]:
    """``unshare -n`` with loopback up, when this system allows it (root, or user namespaces)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not (unshare and ip):
        return []
    for prefix in ([unshare, "-n"], [unshare, "-rn"]):
        probe = subprocess.run([*prefix, ip, "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            return [*prefix, "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']
    return []


# -- the test ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("style", ["cells", "module"])
def test_official_worker_serves_our_bundle(tmp_path, style):
    python = ensure_venv()
    bundle = build_bundle(tmp_path, style)
    import tarfile
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    expected = {"cells": {"./vast_magic_app.py"}, "module": {"./compat_app.py", "./compat_helpers.py"}}[style]
    assert expected <= names and not ({"./vast_magic_app.py", "./compat_app.py"} - expected) & names
    out = tmp_path / "results.json"
    command = [*namespace_prefix(), sys.executable, __file__, "--child", str(bundle), str(python), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=500, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert not results["ready"].get("error_msg"), results["worker_log"]
    assert results["ready"]["max_perf"] > 0
    calls = results["calls"]
    expected = {
        "env_add": {"status": 200, "value": 16, "output": [["stdout", "adding 5\n"]], "error": None},
        "env_scaled": {"status": 200, "value": [2.0, 4.0, 6.0], "output": [], "error": None},
        "env_fail": {"status": 200, "value": None, "output": [["stdout", "about to fail\n"]],
                     "error": ["ValueError", "nope", True]},
    }
    for name, want in expected.items():
        assert calls[name] == want, (name, calls[name], results["worker_log"])
    assert calls["plain_add"] == {"status": 200, "body": {"result": {"ok": 16}}}
    plain_fail = calls["plain_fail"]
    assert plain_fail["status"] == 200 and plain_fail["body"]["result"]["err"]["class"] == "ValueError"
    # issue 15 item 8: the official client's decoder raises the type with its message
    assert calls["official_client"] == {"plain_add": {"value": 16}, "plain_fail": {"raised": ["builtins.ValueError",
                                                                                              "boom-7"]}}
    # issue 15 item 10: the stock worker admitted a call before the contexts were entered; it waited for them
    assert results["early"] == {"status": 200, "body": {"result": {"ok": 12}}, "admitted_before_gate": True,
                                "answered_after_gate": True, "loaded_before_gate": False}, results["worker_log"]
    assert calls["bad_signature"] == {"status": 401}
    refused = calls["refusals"]
    prefix = "vast_magic envelope refused: "
    expected_refusals = {
        "unsigned": prefix + "not a signed vast_magic envelope", "wrong_key": prefix + "bad signature",
        "tampered": prefix + "payload does not match its signed digest",
        "other_worker": prefix + "signed for worker http://127.0.0.1:1, not this one", "replayed": prefix + "replayed",
    }
    for case, message in expected_refusals.items():
        assert refused[case][:2] == [200, "err"] and refused[case][2].startswith(message), (case, refused[case])
    assert refused["first_use"][:2] == [200, "ok"]
    assert refused["stale_version"] == [200, "ok", "vast_magic:stale-version:" + bundle_version_of(bundle)]
    assert refused["oversized"][0] == 413           # the worker's HTTP body limit, before any handler runs
    assert refused["canary_after_refusals"] is False  # nothing refused was unpickled
    assert refused["control"] == [200, "ok"] and refused["canary_after_control"] is True   # the canary works
    assert results["backend"] == {
        "add": {"value": 18, "output": [["stdout", "adding 7\n"]], "error": None},
        "scaled": {"value": [3.0, 6.0, 9.0], "output": [], "error": None},
        "fail": {"value": None, "output": [["stdout", "about to fail\n"]], "error": ["RemoteValueError", "ValueError: again"]},
        "stream": {"items": ["t0", "t1", "t2", "t3"], "error": None},
        "stream_fail": {"items": ["t0", "t1"], "error": ["RemoteValueError", "ValueError: failed at token 2"]},
    }
    route = results["routes"][0]
    assert route["authorization"] == "Bearer endpoint-key-1"
    assert route["body"] == {"endpoint": "compat-ep", "api_key": "endpoint-key-1", "cost": 100.0, "request_idx": 0,
                             "replay_timeout": 60.0}


def bundle_version_of(bundle: Path) -> str:
    import re
    import tarfile
    with tarfile.open(bundle) as tar:
        text = tar.extractfile("./deployment.py").read().decode()
    return re.search(r"^_VM_VERSION = '([^']*)'", text, re.M).group(1)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child_main(*sys.argv[2:5])
