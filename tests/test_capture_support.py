"""Shared pieces for the capture tests: a real IPython shell, and a fresh process that runs shipped code.

``run_shipped`` rebuilds what the bundle's generated module does (write local
modules, exec imports, unpickle values, exec sources in order) in a separate
Python process whose working directory is *not* the notebook's, so anything
the capture forgot shows up as a NameError or ImportError there.
"""
from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from vast_magic.capture import CapturedCode


@pytest.fixture
def shell():
    """A real InteractiveShell with an in-memory history, fresh for each test."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    instance = InteractiveShell.instance(config=config)
    yield instance
    instance.reset(new_session=False)
    InteractiveShell.clear_instance()


def run_cells(shell: InteractiveShell, *cells: str) -> None:
    """Run each cell like a notebook does (stored in history), failing the test on any error."""
    for cell in cells:
        result = shell.run_cell(textwrap.dedent(cell), store_history=True)
        result.raise_error()


_RUNNER = r'''
import asyncio, inspect, os, pickle, sys, types
import cloudpickle
data = pickle.load(open(sys.argv[1], "rb"))
root = sys.argv[2]
for relpath, content in data["modules"]:
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(content)
sys.path.insert(0, root)
module = types.ModuleType("vast_magic_app")
module.__file__ = os.path.join(root, "vast_magic_app.py")
sys.modules["vast_magic_app"] = module
ns = module.__dict__
for line in data["imports"]:
    exec(line, ns)
for name, payload in data["values"]:
    ns[name] = cloudpickle.loads(payload)
for name, source in data["sources"]:
    exec(compile(source, "<shipped %s>" % name, "exec"), ns)
for name in data["deployments"]:
    ns[name] = "worker-registry"
result = ns[data["call"]](*data["args"])
if inspect.isawaitable(result):
    result = asyncio.run(result)
print(repr(result))
'''


def run_shipped(code: CapturedCode, call: str, args: tuple, tmp_path: Path) -> object:
    """Exec the captured pieces in a new process (cwd elsewhere) and return ``call(*args)``."""
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir(exist_ok=True)
    data = {
        "modules": [(m.relpath, m.content) for m in code.modules],
        "imports": [i.line for i in code.imports],
        "values": [(v.name, v.payload) for v in code.values],
        "sources": [(s.name, s.source) for s in code.sources],
        "deployments": list(code.deployment_names),
        "call": call, "args": args,
    }
    (worker_dir / "shipped.pkl").write_bytes(pickle.dumps(data))
    (worker_dir / "runner.py").write_text(_RUNNER)
    done = subprocess.run([sys.executable, "runner.py", "shipped.pkl", str(worker_dir)], cwd=worker_dir,
                          capture_output=True, text=True, timeout=60, env=_clean_env())
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def _clean_env() -> dict:
    """The parent's environment minus PYTHONPATH, so the worker cannot import the notebook's modules."""
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def digests_of(code: CapturedCode) -> str:
    """Everything process-independent about a capture, as JSON (payload bytes excluded)."""
    return json.dumps({
        "sources": [[s.name, s.kind, s.digest, s.source] for s in code.sources],
        "imports": [[i.name, i.line, i.digest] for i in code.imports],
        "values": [[v.name, v.digest, v.by_value_code] for v in code.values],
        "modules": [[m.module, m.relpath, m.digest] for m in code.modules],
        "deployments": list(code.deployment_names),
    }, sort_keys=True)
