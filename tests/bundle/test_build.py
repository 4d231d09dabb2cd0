"""The bundle: reproducible bytes, exact layout, no secrets, and generated code that runs."""
from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bundle.sample_inputs import SECRET_VALUE, demo_inputs, make_code, make_image, source
from vast_magic.backends.local.bundles import EXTRACT_FILTER
from vast_magic.bundle import read_bundle_manifest, write_bundle
from vast_magic.bundle.registry_spec import RemoteSpec
from vast_magic.bundle.vast_entry import deployment_source
from vast_magic.errors import BundleError

ROOT = Path(__file__).resolve().parents[2]
OWN_MEMBERS = ["./config.json", "./deployment.py", "./localmod.py", "./manifest.json", "./vast_magic_app.py",
               "./vast_magic_registry.pkl", "./vast_magic_values.pkl"]


def build(path: Path, inputs=None, backend: str = "local"):
    inputs = inputs or demo_inputs()
    return write_bundle(path, manifest=inputs.manifest(), code=inputs.code, remotes=inputs.remotes,
                        contexts=inputs.contexts, image=inputs.image, backend=backend)


def extract(bundle: Path, into: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(into, **EXTRACT_FILTER)
    return into


def run_python(code: str, cwd: Path, extra_path: tuple = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *map(str, extra_path)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_same_inputs_give_identical_bytes_whatever_the_file_name(tmp_path):
    first = build(tmp_path / "a.tar.gz")
    second = build(tmp_path / "sub" / "other-name.tar.gz")
    one, two = Path(first.path).read_bytes(), Path(second.path).read_bytes()
    assert one == two and hashlib.sha256(one).hexdigest() == hashlib.sha256(two).hexdigest()
    assert first.fingerprint == second.fingerprint == demo_inputs().manifest().fingerprint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "sub"]   # no temp files left


def test_gzip_header_has_no_name_and_no_mtime(tmp_path):
    data = Path(build(tmp_path / "a.tar.gz").path).read_bytes()
    flags, mtime = data[3], int.from_bytes(data[4:8], "little")
    assert data[:3] == b"\x1f\x8b\x08" and flags & 0x08 == 0 and mtime == 0


def test_members_modes_and_owners(tmp_path):
    bundle = build(tmp_path / "a.tar.gz")
    with tarfile.open(bundle.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert [n for n in names if not n.startswith("./vast_magic_runtime")] == OWN_MEMBERS
    runtime = {n for n in names if n.startswith("./vast_magic_runtime/")}
    expected_runtime = {f"./vast_magic_runtime/{p.relative_to(ROOT / 'vast_magic/runtime').as_posix()}"
                        for p in (ROOT / "vast_magic" / "runtime").rglob("*.py") if "__pycache__" not in p.parts}
    assert expected_runtime <= runtime
    assert "./vast_magic_runtime/_vendor/cloudpickle/__init__.py" in runtime
    assert "./vast_magic_runtime/_vendor/cloudpickle/cloudpickle.py" in runtime
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "root", "root"), m.name
        assert m.mode == (0o755 if m.isdir() else 0o644), m.name
    assert set(bundle.files) == {m.name[2:] for m in members if m.isfile()}


def test_config_json_is_the_official_record_without_secrets(tmp_path):
    bundle = build(tmp_path / "a.tar.gz")
    with tarfile.open(bundle.path) as tar:
        text = tar.extractfile("./config.json").read().decode()
    assert text == ('{"name": "demo", "pip_installs": ["numpy"], "apt_gets": [], "envs": [["MODE", "fast"]], '
                    '"runs": ["echo hi", ["python", "-V"]]}')


def test_secret_value_is_in_no_byte_of_the_bundle(tmp_path):
    raw = Path(build(tmp_path / "a.tar.gz").path).read_bytes()
    for blob in (raw, gzip.decompress(raw)):
        assert SECRET_VALUE.encode() not in blob


def test_manifest_can_be_read_back(tmp_path):
    bundle = build(tmp_path / "a.tar.gz")
    assert read_bundle_manifest(bundle.path) == demo_inputs().manifest()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(BundleError, match="rebuild"):
        read_bundle_manifest(tmp_path / "junk.tar.gz")


def _copy_inputs(tmp_path: Path, dst_file: str, dst_dir: str):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("alpha")
    (tmp_path / "src" / "deep").mkdir()
    (tmp_path / "src" / "deep" / "b.txt").write_text("beta")
    (tmp_path / "one.txt").write_text("one")
    copies = ((str(tmp_path / "one.txt"), dst_file), (str(tmp_path / "src"), dst_dir))
    return replace(demo_inputs(), image=make_image(copies=copies))


# (backend, file dst, dir dst, expected members or error)
COPY_CASES = [
    ("local", "one.txt", "data", ["./data/a.txt", "./data/deep/b.txt", "./one.txt"]),
    ("local", "files/one.txt", "data/", ["./data/a.txt", "./data/deep/b.txt", "./files/one.txt"]),
    ("vast", "/opt/one.txt", "data", ["./data/a.txt", "./data/deep/b.txt", "/opt/one.txt"]),
    ("local", "/opt/one.txt", "data", "absolute destinations are Vast-only"),
    ("local", "../one.txt", "data", "must stay inside the bundle"),
    ("local", "config.json", "data", "used by vast_magic itself"),
]


@pytest.mark.parametrize("backend,dst_file,dst_dir,expected", COPY_CASES)
def test_copies(tmp_path, backend, dst_file, dst_dir, expected):
    inputs = _copy_inputs(tmp_path, dst_file, dst_dir)
    if isinstance(expected, str):
        with pytest.raises(BundleError, match=expected):
            build(tmp_path / "a.tar.gz", inputs, backend=backend)
        return
    with tarfile.open(build(tmp_path / "a.tar.gz", inputs, backend=backend).path) as tar:
        files = [m.name for m in tar.getmembers() if m.isfile() and m.name not in OWN_MEMBERS
                 and not m.name.startswith("./vast_magic_runtime/")]
        assert files == expected
        assert tar.extractfile(expected[0]).read() == b"alpha"


def test_generated_modules_are_valid_python(tmp_path):
    root = extract(Path(build(tmp_path / "a.tar.gz").path), tmp_path / "x")
    for name in ("vast_magic_app.py", "deployment.py"):
        ast.parse((root / name).read_text())
    app = (root / "vast_magic_app.py").read_text()
    order = [app.index(marker) for marker in ("import math", "OFFSET = ", "app = _vm_worker_app()",
                                               "def helper", "class Model", "async def square")]
    assert order == sorted(order)


def test_extracted_app_runs_with_the_shipped_runtime(tmp_path):
    root = extract(Path(build(tmp_path / "a.tar.gz").path), tmp_path / "x")
    proc = run_python("""
        import asyncio
        from vast_magic_runtime import contexts, registry
        loaded = registry.load_bundle(".")
        async def main():
            await contexts.enter_all(loaded)
            return await loaded.remotes["square"].function(3)
        print(asyncio.run(main()), loaded.modules["vast_magic_app"].TAGS == {"a", "b", "c"}, sorted(loaded.classes))
    """, root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "122 True ['vast_magic_app:Model']"   # helper(9) + offset 10 + len(TAGS)


FAKE_VASTAI = '''
class Deployment:
    instances = []

    def __init__(self, name=None, **kwargs):
        self.name, self.remotes, self.managers, self.contexts = name, {}, {}, {}
        Deployment.instances.append(self)

    def context(self, *args, **kwargs):
        def decorator(cls):
            self.managers[cls] = cls(*args, **kwargs)
            return cls
        return decorator

    def get_context(self, cls):
        if cls not in self.contexts:
            raise KeyError(f"Context {cls} not registered or not yet entered")
        return self.contexts[cls]

    def remote(self, f=None, **options):
        def decorator(fn):
            assert "__file__" in fn.__globals__
            self.remotes[fn.__name__] = (fn, options)
            return fn
        return decorator(f) if f is not None else decorator

    async def __aenter__(self):
        self.contexts = {cls: await m.__aenter__() for cls, m in self.managers.items()}

    async def __aexit__(self, *exc):
        self.contexts = {}
'''

DRIVER = """
    import asyncio, base64, json, os, sys
    KEY = bytes(range(32))
    os.environ["VAST_MAGIC_ENVELOPE_KEY"] = KEY.hex()      # what the deployment env gives the worker
    import vastai, deployment
    from vast_magic.backends.vast import envelope
    from vast_magic.runtime import sealed
    app = vastai.Deployment.instances[0]

    def sealed_call(*args, **kwargs):
        payload = envelope.request_payload(args, kwargs)
        return envelope.call_kwargs(KEY, payload, function="square", version=deployment._VM_VERSION)

    def unsealed(text):
        header, payload = sealed.Opener(KEY).open(text, "square")
        return envelope.decode(base64.b64encode(payload).decode())

    out = {"name": app.name, "remotes": sorted(app.remotes)}
    async def main():
        await app.__aenter__()          # serve mode enters its lifecycle this way
        fn, options = app.remotes["square"]
        out["options"] = sorted(options)
        out["flags"] = [options["allow_parallel_requests"], options["max_queue_time"], options["benchmark_runs"]]
        out["plain"] = await fn(x=3)
        out["plain_positional"] = await fn(3, 2)
        reply = envelope.decode(await fn(**sealed_call(4, y=2)))
        out["enveloped"] = [reply["ok"], reply["value"], reply["output"]]
        generated = [options["benchmark_generator"]() for _ in range(4)]
        out["generated"] = [unsealed(g["__vast_magic__"])["kwargs"]["x"] for g in generated]
        failed = envelope.decode(await fn(**sealed_call("bad")))
        out["failed"] = [failed["ok"], failed["error"]["type"]]
        try:
            await fn()
        except TypeError as exc:
            out["missing"] = "x" in str(exc)
    asyncio.run(main())
    print(json.dumps(out))
"""


def _fake_vastai(tmp_path: Path) -> Path:
    fake = tmp_path / "fake"
    (fake / "vastai").mkdir(parents=True)
    (fake / "vastai" / "__init__.py").write_text(FAKE_VASTAI)
    return fake


def test_deployment_py_registers_shims_for_the_stock_worker(tmp_path):
    root = extract(Path(build(tmp_path / "a.tar.gz").path), tmp_path / "x")
    proc = run_python(DRIVER, root, (_fake_vastai(tmp_path), ROOT))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["name"] == "demo" and out["remotes"] == ["square"]
    assert out["options"] == ["allow_parallel_requests", "benchmark_generator", "benchmark_runs", "max_queue_time"]
    assert out["flags"] == [True, 30.0, 2]
    assert out["plain"] == 122 and out["plain_positional"] == 2 * 109 + 10 + 3
    assert out["enveloped"] == [True, 2 * 116 + 10 + 3, [["stdout", "squaring 4\n"]]]
    assert sorted(out["generated"]) == [2, 2, 3, 3]          # every dataset item, cycling
    assert out["failed"] == [False, "builtins.TypeError"] and out["missing"] is True


def test_failing_benchmark_fails_the_lifecycle(tmp_path):
    inputs = replace(demo_inputs(), remotes=(replace(RemoteSpec("square", True, at="vast_magic_app:square"),
                                                     benchmark_dataset=({"x": 2}, {"x": "bad"})),))
    root = extract(Path(build(tmp_path / "a.tar.gz", inputs).path), tmp_path / "x")
    proc = run_python("""
        import asyncio, vastai, deployment
        app = vastai.Deployment.instances[0]
        try:
            asyncio.run(app.__aenter__())
        except RuntimeError as exc:
            print("FAILED", "square(**{'x': 'bad'})" in str(exc), "TypeError" in str(exc), app.contexts == {})
    """, root, (_fake_vastai(tmp_path), ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "FAILED True True True"


# (function source, shim parameters, how they are passed on)
SHIM_CASES = [
    ("def f(a, b=2):\n    pass\n", "a=_VM_MISSING, b=_VM_MISSING, *, __vast_magic__=None",
     "[('a', a), ('b', b)], (), [], {}"),
    ("def f(a, *rest, k=1, **extra):\n    pass\n", "a=_VM_MISSING, *rest, k=_VM_MISSING, __vast_magic__=None, **extra",
     "[('a', a)], rest, [('k', k)], extra"),
    ("async def f(a, /, b):\n    pass\n", "a=_VM_MISSING, b=_VM_MISSING, *, __vast_magic__=None",
     "[('a', a), ('b', b)], (), [], {}"),
    ("def f():\n    pass\n", "*, __vast_magic__=None", "[], (), [], {}"),
]


@pytest.mark.parametrize("text,params,passed", SHIM_CASES)
def test_shim_signatures(text, params, passed):
    code = make_code(extra=(source("f", text),))
    generated = deployment_source("demo", code, (RemoteSpec("f", True, at="vast_magic_app:f"),), ())
    ast.parse(generated)
    assert f"async def f({params}):" in generated
    assert f"return await _vm_plain('f', {passed})" in generated


# (remote name or parameter, error)
REFUSED = [
    ("app", "def app(x):\n    pass\n", "cannot be named 'app'"),
    ("f", "def f(__vast_magic__):\n    pass\n", "reserves"),
    ("f", "def g():\n    pass\n", "defines no function"),
]


@pytest.mark.parametrize("name,text,error", REFUSED)
def test_refused_remote_shapes(name, text, error):
    code = make_code(extra=(source(name, text),))
    with pytest.raises(BundleError, match=error):
        deployment_source("demo", code, (RemoteSpec(name, True, at=f"vast_magic_app:{name}"),), ())
