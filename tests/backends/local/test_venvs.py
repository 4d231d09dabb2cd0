"""Pip requirements run in a cached venv, installed offline from a wheel built here."""
from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.local.venvs import MARKER
from vast_magic.errors import DeployError

APP = '''
import sys
async def probe():
    import vmtiny, cloudpickle
    return vmtiny.VALUE, sys.prefix, cloudpickle.__name__

async def square(x):
    return x * x
'''
REMOTES = [{"name": "probe", "is_async": True},
           {"name": "square", "is_async": True, "benchmark_dataset": [{"x": 2}], "benchmark_runs": 1}]


def build_wheel(folder) -> None:
    """A minimal valid wheel (zip + dist-info with hashed RECORD); no build tools, no network."""
    files = {"vmtiny/__init__.py": b"VALUE = 42\n",
             "vmtiny-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: vmtiny\nVersion: 0.1\n",
             "vmtiny-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + "vmtiny-0.1.dist-info/RECORD,,\n"
    folder.mkdir()
    with zipfile.ZipFile(folder / "vmtiny-0.1-py3-none-any.whl", "w") as whl:
        for name, data in {**files, "vmtiny-0.1.dist-info/RECORD": record.encode()}.items():
            whl.writestr(name, data)


def test_pip_requirements_get_a_cached_venv(harness, monkeypatch):
    wheels = harness.folder / "wheels"
    build_wheel(wheels)
    monkeypatch.setenv("VAST_MAGIC_PIP_ARGS", f"--no-index --find-links {wheels}")
    harness.apply(plan(make_bundle(harness.folder, "v1", app=APP.replace("import vmtiny, ", "import "),
                                   remotes=REMOTES, contexts=())))
    missing = make_bundle(harness.folder, "v2", app=APP, remotes=REMOTES, contexts=(),
                          config={"pip_installs": ["vmtiny-does-not-exist"]})
    with pytest.raises(DeployError) as info:
        harness.apply(plan(missing, tier=3))
    assert "vmtiny-does-not-exist" in str(info.value) and "previous version keeps serving" in str(info.value)
    assert harness.call("square", 6) == 36                   # v1 still serving
    with_pip = make_bundle(harness.folder, "v3", app=APP, remotes=REMOTES, contexts=(),
                           config={"pip_installs": ["vmtiny"]})
    harness.apply(plan(with_pip, tier=3))
    value, prefix, pickler = harness.call("probe")
    assert value == 42 and pickler == "cloudpickle"          # the .pth keeps the caller's packages visible
    venvs = [p for p in (harness.home / "venvs").iterdir() if p.is_dir()]
    assert len(venvs) == 1 and prefix == str(venvs[0]) and (venvs[0] / MARKER).exists()
