"""Running what capture ships: notebook cells in a real IPython shell (the ``shell`` fixture, conftest.py),
and a fresh process that imports the shipped code.

``run_shipped`` writes what the bundle holds for the captured code (the
generated modules, the values file, local module files and the worker runtime)
and imports it in a separate Python process whose working directory is *not*
the notebook's and whose path has nothing of the client's, so anything the
capture forgot shows up as a NameError or ImportError there.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

from vast_magic.bundle.build import runtime_files
from vast_magic.bundle.codegen import generated_files
from vast_magic.capture import CELLS_MODULE, CapturedCode, location


def run_cells(shell: InteractiveShell, *cells: str) -> None:
    """Run each cell like a notebook does (stored in history), failing the test on any error."""
    for cell in cells:
        result = shell.run_cell(textwrap.dedent(cell), store_history=True)
        result.raise_error()


_RUNNER = r'''
import asyncio, importlib, inspect, sys
root, where = sys.argv[1], sys.argv[2]
args = eval(sys.argv[3])
sys.path.insert(0, root)
from vast_magic_runtime import registry, shipped
for name in eval(sys.argv[4]):
    importlib.import_module(name)
assert not shipped.unbound_links(), shipped.unbound_links()
result = shipped.resolve(where)(*args)
if inspect.isawaitable(result):
    result = asyncio.run(result)
print(repr(result))
'''


def write_shipped(code: CapturedCode, folder: Path) -> Path:
    """Lay out what the bundle holds for ``code``: generated modules, values, local files, the runtime."""
    files = dict(generated_files("test", code))
    files.update((m.relpath, m.content) for m in code.file_modules)
    files.update(runtime_files())
    for relpath, content in files.items():
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def run_shipped(code: CapturedCode, call: str, args: tuple, tmp_path: Path, modules=None) -> object:
    """Import the generated modules in a new process (cwd elsewhere) and return ``call(*args)``.

    ``call`` is ``"module:name"``, or a bare name of the notebook-cells module;
    ``modules`` the import order (default: the order the worker uses).
    """
    worker_dir = write_shipped(code, tmp_path / "worker")
    where = call if ":" in call else location(CELLS_MODULE, call)
    (tmp_path / "runner.py").write_text(_RUNNER)
    modules = list(modules or [m.name for m in code.source_modules])
    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(worker_dir), where, repr(args),
                           repr(modules)], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_clean_env())
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
        "modules": [[m.module, m.relpath, m.digest] for m in code.file_modules],
        "generated": [[m.name, m.path, [item.name for item in m.items]] for m in code.source_modules],
        "deployments": list(code.deployment_names),
    }, sort_keys=True)
