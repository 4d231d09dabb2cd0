"""A secret reaches the worker's environment and nowhere else in plain text; nothing else reaches it.

A script deploys with ``image.env(TOKEN=Secret(...))`` through the public API
and prints everything a user can see: the DeployReport and status reprs, the
logs, the manifest JSON, the fingerprint, a built bundle. The test then scans
every output: the script's stdout/stderr, engine.log, every worker log, both
bundle tarballs (raw and unpacked), the extracted bundle folders. The only
place the value may live is the 0600 ``state.db`` (documented in store.py).

Workers start with a minimal environment (``workers.INHERITED`` and ``LC_*``)
plus exactly their deployment's env and secrets: a canary in the environment
of the client that started the engine never reaches them, nor does the token.
"""
from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.local import launcher, workers

from tests.scripts import result_of

SECRET = "s3cr3t-value"

SCRIPT = r'''
import json, os
from vast_magic import Deployment, Secret

app = Deployment(name="sec")
image = app.image("vastai/base-image:@vastai-automatic-tag")
image.env(TOKEN=Secret("s3cr3t-value"), MODE="plain-visible")

@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    print("working on", x, "with mode", os.environ.get("MODE"))
    return x * x

@app.remote
async def has_token():                     # compares digests: the function's own source must not hold the value
    import hashlib
    return hashlib.sha256(os.environ.get("TOKEN", "").encode()).hexdigest() == "1f3fa74b1208842aad0b685f0cd06053a9e84f0eb7f2c1c94c96ea25cb13cd77"

report = app.ensure_ready()
print("REPORT", repr(report))
print("STATUS", repr(app.status()))
print("CALL", square.call(3), has_token.call())
print("LOGS", [repr(line) for line in app.logs()])
print("MANIFEST", app.manifest().to_json())
print("FINGERPRINT", repr(app.manifest().fingerprint()))
print("IMAGE", repr(image), str(image.spec()))
bundle = app.build_bundle("built.tar.gz")
print("BUNDLE", repr(bundle))
print("RESULT " + json.dumps({"has_token": has_token.call(), "bundle": str(bundle.path)}))
'''


def _tar_texts(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def test_a_secret_never_appears_in_plain_text(tmp_path, engine_home):
    (tmp_path / "sec_app.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "sec_app.py"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ))
    engine_home.collect()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = result_of(proc.stdout)
    assert result["has_token"] is True                              # it did reach the worker
    assert "plain-visible" in proc.stdout and "MANIFEST" in proc.stdout and "REPORT" in proc.stdout

    home = engine_home.path
    scanned: dict[str, bytes] = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
    tarballs = [tmp_path / "built.tar.gz", *(home / "bundles").glob("*.tar.gz")]
    assert len(tarballs) >= 2
    for tarball in tarballs:
        scanned[str(tarball)] = tarball.read_bytes()
        scanned[f"{tarball} (gunzipped)"] = gzip.decompress(tarball.read_bytes())
        scanned.update({f"{tarball}:{name}": data for name, data in _tar_texts(tarball)})
    for folder in ("logs", "bundles", "workers"):
        for path in (home / folder).rglob("*"):
            if path.is_file():
                scanned[str(path)] = path.read_bytes()
    scanned["engine.log"] = (home / "engine.log").read_bytes()
    assert any("logs/" in name for name in scanned) and any("/config.json" in name for name in scanned)
    leaks = [name for name, data in scanned.items() if SECRET.encode() in data]
    assert not leaks, leaks
    for name in ("state.db", "secret.key"):                          # where it may be: owner-only files
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name


def test_workers_get_a_minimal_environment_plus_exactly_their_deployment_env(harness, monkeypatch):
    """The engine inherits the environment of whichever client started it; its workers must not."""
    monkeypatch.setenv("HF_TOKEN", "notebook-canary-hf")
    monkeypatch.setenv("VAST_MAGIC_CANARY", "notebook-canary")
    monkeypatch.setenv("LC_CANARY_LOCALE", "kept")
    harness.apply(plan(make_bundle(harness.folder), env=[("DECLARED", "yes")], secrets=[("API_SECRET", "s3")]))
    (worker,) = harness.workers()
    engine = launcher.running_engine(harness.home)
    assert b"HF_TOKEN=notebook-canary-hf" in Path(f"/proc/{engine['pid']}/environ").read_bytes()  # it was there

    seen = {key: harness.call("env", key) for key in ("HF_TOKEN", "VAST_MAGIC_CANARY", "VAST_MAGIC_TOKEN_FILE",
                                                     "DECLARED", "API_SECRET", "LC_CANARY_LOCALE", "PATH")}
    assert seen["HF_TOKEN"] is None and seen["VAST_MAGIC_CANARY"] is None and seen["VAST_MAGIC_TOKEN_FILE"] is None
    assert (seen["DECLARED"], seen["API_SECRET"], seen["LC_CANARY_LOCALE"]) == ("yes", "s3", "kept") and seen["PATH"]

    environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
    keys = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
    extra = {k for k in keys - workers.INHERITED - {"DECLARED", "API_SECRET"} if not k.startswith("LC_")}
    assert not extra, extra
    assert launcher.load_token(harness.home).encode() not in environ     # the token came through a pipe
