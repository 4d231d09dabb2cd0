"""The public API on backend="vast" against the fake Vast API: ensure_ready, tiers vs actions, calls, teardown."""
from __future__ import annotations

import io
import json
import tarfile
import threading

import pytest

from vast_magic import settings
from vast_magic.backends.vast import sealing
from vast_magic.errors import ConfigError
from vast_magic.testing import FakeVast

KEY = "user-key-0123456789"
TOKEN = "hf-secret-token-42"
CELLS = [
    "from vast_magic import Deployment, Secret\nfrom vast_magic.query import RTX_4090, gpu_name, gpu_ram\n"
    "app = Deployment(name='fake-e2e', api_key=KEY, backend='vast', transport=TRANSPORT)\n"
    "image = app.image('vastai/base-image:@vastai-automatic-tag', storage=16)\n"
    "image.env(MODE='fast', HF_TOKEN=Secret(TOKEN)).publish_port(8080).require(gpu_ram >= 24, gpu_name.in_([RTX_4090]))\n"
    "app.configure_autoscaling(max_workers=4, cold_workers=1)",
    "FACTOR = 1",
    "@app.remote(benchmark_dataset=[{'x': 2}])\nasync def square(x):\n    print('squaring', x)\n    return x * x * FACTOR",
]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    with FakeVast(api_key=KEY, ready_after=0) as fake:     # its workers run the uploaded bundle
        yield fake


@pytest.fixture
def shell(fake):
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.user_ns.update(KEY=KEY, TOKEN=TOKEN, TRANSPORT=fake.transport())   # passed in, never patched
    yield shell
    InteractiveShell.clear_instance()


def run(shell, *cells):
    for cell in cells:
        shell.run_cell(cell, store_history=True).raise_error()


def make_app(shell, fake):
    run(shell, *CELLS)
    return shell.user_ns["app"], shell.user_ns["square"]


def uploaded_members(fake: FakeVast) -> dict[str, bytes]:
    raw = fake.uploads[-1]["raw"]
    start = raw.index(b"\x1f\x8b")   # the gzip part of the multipart body
    with tarfile.open(fileobj=io.BytesIO(raw[start:]), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_ensure_ready_tiers_follow_vast_actions(fake, shell):
    app, _ = make_app(shell, fake)
    first = app.ensure_ready()
    assert (first.tier, first.backend_action) == (4, "created") and first.endpoint.startswith("vast endpoint")
    put = fake.sent("PUT", "/api/v0/deployments/")[0].body
    assert put["search_params"] == "gpu_name in RTX_4090 gpu_ram>=24 rentable=true rented=false verified=true"
    envelope_key = sealing.read_key(settings.home(), "fake-e2e", "default").hex()
    assert put["env"] == (f"-p 3000:3000/tcp -p 8080:8080/tcp -e REPORT_ADDR=https://run.vast.ai -e HF_TOKEN={TOKEN} "
                          f"-e VAST_MAGIC_ENVELOPE_KEY={envelope_key} -e VAST_MAGIC_MAX_REQUEST_BYTES=67108864")
    assert (put["max_workers"], put["cold_workers"], put["storage"]) == (4, 1, 16)
    members = uploaded_members(fake)
    assert json.loads(members["./config.json"])["envs"] == [["MODE", "fast"]]
    for secret in (TOKEN, envelope_key):     # secrets travel in the env string only (never the bundle or manifest)
        assert not any(secret.encode() in data for data in members.values())
        assert secret not in repr(first) and secret not in first.fingerprint.code + first.fingerprint.image
    assert "./deployment.py" in members and "./manifest.json" in members

    assert (app.ensure_ready().tier, fake.sent("PUT")[-1].body == put) == (0, True)
    assert app.ensure_ready().backend_action == "exists" and len(fake.uploads) == 1
    app.configure_autoscaling(max_workers=8)
    scaled = app.ensure_ready()
    assert (scaled.tier, scaled.backend_action, len(fake.uploads)) == (1, "autoscale_update", 1)


def test_code_change_is_a_soft_update(fake, shell):
    app, _ = make_app(shell, fake)
    app.ensure_ready()
    run(shell, "FACTOR = 2")
    report = app.ensure_ready()
    assert (report.tier, report.backend_action, len(fake.uploads), len(fake.updates)) == (2, "soft_update", 2, 1)


def test_calls_and_teardown(fake, shell, capsys):
    app, remote = make_app(shell, fake)
    app.ensure_ready()
    assert remote.call(7) == 49
    assert "squaring 7" in capsys.readouterr().out
    assert app.status().state == "ready"
    app.teardown()
    app.teardown()
    assert all(d.deleted for d in fake.deployments.values())


def test_missing_key_fails_before_packaging(fake, shell, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    shell.user_ns["KEY"] = None
    app, _ = make_app(shell, fake)

    with pytest.raises(ConfigError, match="VAST_API_KEY"):
        app.ensure_ready()
    assert fake.requests == [] and not (tmp_path / "home" / "bundles").exists()


def test_calls_right_after_a_soft_update_run_the_new_code(fake, shell):
    """1,000 calls at concurrency 32 through the public API, while the fake still routes 64 calls to the old
    worker (every other route): each gets "stale version" there, routes again, and is answered by the new code."""
    app, remote = make_app(shell, fake)
    app.ensure_ready()
    old_runs = []
    fake.old_functions["square"] = lambda x: old_runs.append(x) or x * x
    fake.old_worker_routes = 64
    run(shell, "FACTOR = 2")
    assert app.ensure_ready().backend_action == "soft_update"
    numbers = iter(range(1000))
    lock, answers = threading.Lock(), {}

    def lane():
        while True:
            with lock:
                x = next(numbers, None)
            if x is None:
                return
            answers[x] = remote.call(x)

    lanes = [threading.Thread(target=lane) for _ in range(32)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join(120)
    assert answers == {x: 2 * x * x for x in range(1000)}
    assert old_runs == [] and fake.stale_answers == 64


def test_a_secret_travels_only_in_the_env_string(fake, shell, tmp_path, capsys, caplog):
    """Where a Secret goes on Vast (README "Security"): the PUT's env string, nowhere else we write. Every request,
    the uploaded tarball (config.json, manifest.json), the fingerprint, the report, this machine's record, the
    progress lines and every log record at DEBUG are searched for it, through a deploy, a call, a secret change
    (tier 3: Vast's own hard update) and a status."""
    import logging
    caplog.set_level(logging.DEBUG)
    app, remote = make_app(shell, fake)
    reports = [app.ensure_ready()]
    assert remote.call(3) == 9
    run(shell, "image.env(HF_TOKEN=Secret(TOKEN + '-rotated'))")
    reports.append(app.ensure_ready())
    status = app.status()
    assert (reports[1].tier, reports[1].backend_action, fake.updates) == (3, "soft_update", [])
    assert reports[1].reasons == ("secret: HF_TOKEN changed", "image-level change: Vast answered 'soft_update': Vast "
                                  "performs a hard update itself (it restarts the same workers on the new image), so "
                                  "vast_magic sent no /update_workers/")

    carrying = [(r.method, r.path) for r in fake.requests if TOKEN.encode() in r.raw]
    assert carrying == [("PUT", "/api/v0/deployments/")] * 2
    assert all(TOKEN in put.body["env"] and TOKEN not in json.dumps({k: v for k, v in put.body.items() if k != "env"})
               for put in fake.sent("PUT"))
    assert len(fake.uploads) == 2 and not any(TOKEN.encode() in data for data in uploaded_members(fake).values())
    written = [p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert written and not any(TOKEN.encode() in data for data in written)   # records, bundles, keys
    shown = capsys.readouterr()
    for text in (caplog.text, shown.out, shown.err, repr(reports), repr(status), str(reports[0].fingerprint)):
        assert TOKEN not in text
    assert "tier 3" in shown.out and "HF_TOKEN" in shown.out        # the change is named, its value is not


def test_map_writes_vasts_wait_status_once(fake, shell, capsys):
    app, remote = make_app(shell, fake)
    app.ensure_ready()
    capsys.readouterr()
    fake.route_waits = 6                                  # every call of the map waits on /route/ first
    assert remote.map([1, 2, 3]) == [1, 4, 9]
    waits = [line for line in capsys.readouterr().err.splitlines() if "waiting for a worker" in line]
    assert len(waits) == 1 and waits[0].endswith("(vast: waiting for workers: 1 loading)")
    assert fake.route_waits == 0
