"""Deploy from anywhere: one app module, every way a person loads it, on the real local engine.

The same ``mylib.py`` is deployed from a script that imports it, run as a
script, imported in a notebook (``from mylib import app, square``), ``%run``
in a notebook, imported by a pytest test, and through the CLI (file and module
forms); a package with relative imports runs as ``python -m pkg.app``. Every
style gives the same fingerprint, so after the first deploy each one is tier 0
on the same workers. Scripts, pytest and the CLI are real subprocesses,
notebooks real kernels (nbclient); nothing here tells capture how a module was
loaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.scripts import result_of

MYLIB = '''
import json
from vast_magic import Deployment

app = Deployment(name="mylib")
app.configure_autoscaling(max_workers=1)

OFFSET = 1


@app.context(factor=10)
class Model:
    def __init__(self, factor):
        self.factor = factor

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def helper(x):
    return x + OFFSET


@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    return helper(x) * x * app.get_context(Model).factor


if __name__ == "__main__":
    import dataclasses
    report = app.ensure_ready()
    print("RESULT " + json.dumps({"tier": report.tier, "reasons": list(report.reasons),
                                  "fingerprint": dataclasses.asdict(report.fingerprint), "square": square.call(3)}))
'''

REPORT = '''
import dataclasses, json
def show(report, value):
    print("RESULT " + json.dumps({"tier": report.tier, "reasons": list(report.reasons),
                                  "fingerprint": dataclasses.asdict(report.fingerprint), "square": value}))
'''

IMPORTING_SCRIPT = REPORT + '''
import mylib
report = mylib.app.ensure_ready()
show(report, mylib.square.call(3))
'''

PYTEST_FILE = REPORT + '''
import mylib

def test_square_on_a_worker():
    report = mylib.app.ensure_ready()
    show(report, mylib.square.call(3))
    assert mylib.square.call(3) == 120
'''

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/helpers.py": "from .consts import BASE\n\n\ndef scale(x):\n    return BASE * x\n",
    "pkg/consts.py": "BASE = 2\n",
    "pkg/app.py": '''
import dataclasses
import json

from vast_magic import Deployment

from .helpers import scale

app = Deployment(name="pkgapp")
app.configure_autoscaling(max_workers=1)


@app.remote(benchmark_dataset=[{"x": 1}], benchmark_runs=1)
def double(x):
    return scale(x)


if __name__ == "__main__":
    report = app.ensure_ready()
    print("RESULT " + json.dumps({"tier": report.tier, "reasons": list(report.reasons),
                                  "fingerprint": dataclasses.asdict(report.fingerprint), "square": double.call(21)}))
''',
}


def write(folder: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def run(cwd: Path, *argv: str) -> str:
    """A real process in ``cwd`` (no PYTHONPATH: it finds the app the way a user's shell does)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def notebook(cwd: Path, *cells: str) -> list[str]:
    """Run cells in a real kernel started in ``cwd``; what each cell printed."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return ["".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream") +
            "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs if o["output_type"] == "execute_result")
            for cell in nb.cells]


def cli_tier(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("tier ") and "; endpoint" in line)
    return int(line.split()[1].rstrip(";"))


@pytest.mark.slow
def test_one_module_every_load_style_same_fingerprint(tmp_path, engine_home):
    project = write(tmp_path / "project", {"mylib.py": MYLIB, "run.py": IMPORTING_SCRIPT,
                                           "test_mylib.py": PYTEST_FILE})
    first = result_of(run(project, sys.executable, "run.py"))                      # import mylib in a script
    assert (first["tier"], first["reasons"], first["square"]) == (4, ["new deployment"], 120)
    fingerprint = first["fingerprint"]

    as_script = result_of(run(project, sys.executable, "mylib.py"))               # python mylib.py (__main__)
    kernel = notebook(project, "%load_ext vast_magic\nfrom mylib import app, square",
                      REPORT + "report = %vast_deploy --app app\nshow(report, await square(3))",
                      "%run mylib.py", "print(await square(3))")
    in_pytest = result_of(run(project, sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "test_mylib.py"))
    for name, seen in (("script", as_script), ("notebook import", result_of(kernel[1])), ("%run", result_of(kernel[2])),
                       ("pytest", in_pytest)):
        assert (seen["tier"], seen["fingerprint"], seen["square"]) == (0, fingerprint, 120), name
    assert kernel[3].strip() == "120"

    vast_magic = [sys.executable, "-m", "vast_magic"]
    for target in ("mylib.py", "mylib:app", str(project / "mylib.py") + ":app"):
        assert cli_tier(run(project, *vast_magic, "deploy", target)) == 0, target
    bundles = [run(project, *vast_magic, "bundle", target, "-o", f"b{i}.tar.gz")
               for i, target in enumerate(("mylib.py", "mylib:app"))]
    assert all(f"code {fingerprint['code'][:12]}" in out for out in bundles)
    assert (project / "b0.tar.gz").read_bytes() == (project / "b1.tar.gz").read_bytes()
    engine_home.collect()


@pytest.mark.slow
def test_package_with_relative_imports_runs_as_python_m(tmp_path, engine_home):
    project = write(tmp_path / "project", PACKAGE)
    first = result_of(run(project, sys.executable, "-m", "pkg.app"))
    assert (first["tier"], first["square"]) == (4, 42)
    vast_magic = [sys.executable, "-m", "vast_magic"]
    for target in ("pkg.app:app", "pkg.app", "pkg/app.py"):
        assert cli_tier(run(project, *vast_magic, "deploy", target)) == 0, target
    imported = result_of(run(project, sys.executable, "-c", REPORT + "import pkg.app as m\n"
                                                                  "show(m.app.ensure_ready(), m.double.call(21))"))
    assert (imported["tier"], imported["fingerprint"], imported["square"]) == (0, first["fingerprint"], 42)
    out = run(project, *vast_magic, "bundle", "pkg/app.py", "-o", "pkg.tar.gz")
    assert f"code {first['fingerprint']['code'][:12]}" in out
    engine_home.collect()


RELOAD_SCRIPT = REPORT + '''
import importlib, pathlib, mylib
first = mylib.app.ensure_ready()
show(first, mylib.square.call(3))
path = pathlib.Path(mylib.__file__)
path.write_text(path.read_text().replace("return x + OFFSET", "return x + OFFSET + 1"))
importlib.reload(mylib)
show(mylib.app.ensure_ready(), mylib.square.call(3))
'''


@pytest.mark.slow
def test_edit_and_reload_is_tier_2_naming_module_and_function(tmp_path, engine_home):
    project = write(tmp_path / "project", {"mylib.py": MYLIB, "reload_it.py": RELOAD_SCRIPT})
    output = run(project, sys.executable, "reload_it.py")
    lines = [json.loads(line[len("RESULT "):]) for line in output.splitlines() if line.startswith("RESULT ")]
    assert [(r["tier"], r["square"]) for r in lines] == [(4, 120), (2, 150)]
    assert lines[1]["reasons"] == ["code: mylib.helper changed"]
    engine_home.collect()


@pytest.mark.slow
def test_autoreload_in_a_notebook_is_tier_2_naming_module_and_function(tmp_path, engine_home):
    project = write(tmp_path / "project", {"mylib.py": MYLIB})
    edit = ('import pathlib, time\ntime.sleep(1.1)  # a new mtime, as an editor save gives\n'
            'path = pathlib.Path("mylib.py")\n'
            'path.write_text(path.read_text().replace("return x + OFFSET", "return x + 2 * OFFSET"))')
    cells = notebook(project, "%load_ext autoreload\n%autoreload 2\n%load_ext vast_magic\nfrom mylib import app, square",
                     REPORT + "report = %vast_deploy --app app\nshow(report, await square(3))", edit,
                     "report = %vast_deploy --app app\nshow(report, await square(3))")
    first, second = result_of(cells[1]), result_of(cells[3])
    assert (first["tier"], first["square"]) == (4, 120)
    assert (second["tier"], second["reasons"], second["square"]) == (2, ["code: mylib.helper changed"], 150)
    engine_home.collect()


WARNED = '''
from vast_magic import Deployment
import numpy as np

app = Deployment(name="warned")
app.image("vastai/base-image:@vastai-automatic-tag").pip_install("numpy>=1.24")


@app.remote(benchmark_dataset=[{"text": "2024-01-02"}])
def parse(text):
    import dateutil.parser          # installed here, not in the image
    return str(dateutil.parser.parse(text)), float(np.sum([1]))


report = app.ensure_ready(dry_run=True)
print("RESULT", report.tier, report.dry_run)
'''


def test_a_package_missing_from_the_image_is_a_deploy_warning(tmp_path, engine_home):
    project = write(tmp_path / "project", {"warned.py": WARNED})
    output = run(project, sys.executable, "warned.py")
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: remote code imports 'dateutil', which the image does not pip-install: add "
                        ".pip_install('python-dateutil') to app.image(...). Local workers use this machine's Python "
                        "environment, so it works here; Vast workers get only what the image installs."]
    assert "RESULT 4 True" in output


def test_an_unnamed_deployment_is_named_after_its_file_however_it_is_loaded(tmp_path):
    project = write(tmp_path / "project", {
        "unnamed.py": "from vast_magic import Deployment\napp = Deployment()\n"
                      "if __name__ == '__main__':\n    print('NAME', app.effective_name)\n",
        "pkg/__init__.py": "", "pkg/__main__.py": "from vast_magic import Deployment\nprint('NAME', Deployment().effective_name)\n",
        "elsewhere.py": "import unnamed\nprint('NAME', unnamed.app.effective_name)\n"})
    names = [run(project, sys.executable, *argv).split()[-1]
             for argv in (["unnamed.py"], ["elsewhere.py"], ["-m", "unnamed"], ["-m", "pkg"])]
    assert names == ["unnamed", "unnamed", "unnamed", "pkg"]
