"""A secret reaches the worker's environment and nowhere else in plain text.

A script deploys with ``image.env(TOKEN=Secret(...))`` through the public API
and prints everything a user can see: the DeployReport and status reprs, the
logs, the manifest JSON, the fingerprint, a built bundle. The test then scans
every output: the script's stdout/stderr, engine.log, every worker log, both
bundle tarballs (raw and unpacked), the extracted bundle folders. The only
place the value may live is the 0600 ``state.db`` (documented in store.py).
"""
from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import tarfile

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
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])
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
