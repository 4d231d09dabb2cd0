"""The runtime ships alone inside bundles: stdlib + its own modules + cloudpickle via _compat only."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "vast_magic" / "runtime"
FILES = sorted(p for p in RUNTIME.rglob("*.py") if "_vendor" not in p.parts)


def _violations(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if not _stdlib(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and not _stdlib(node.module):
                bad.append(f"from {node.module} import ...")
            elif node.level > 1:
                bad.append(f"from {'.' * node.level}{node.module or ''} import ... (leaves the package)")
            elif node.level == 1 and "cloudpickle" in [a.name for a in node.names] and node.module != "_compat":
                bad.append(f"cloudpickle from .{node.module} (only via ._compat)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("vast_magic."):
            bad.append(f"string {node.value!r} (dynamic import of vast_magic?)")
    return bad


def _stdlib(module: str | None) -> bool:
    return (module or "").split(".")[0] in sys.stdlib_module_names


def test_there_are_runtime_files():
    assert {p.name for p in FILES} >= {"serve.py", "framing.py", "wire.py", "_compat.py"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_runtime_imports_only_stdlib_itself_and_cloudpickle_via_compat(path):
    assert _violations(path) == []


@pytest.mark.parametrize("source, expected", [
    ("import numpy", ["import numpy"]),
    ("import cloudpickle", ["import cloudpickle"]),
    ("from vast_magic import errors", ["from vast_magic import ..."]),
    ("from .. import errors", ["from .. import ... (leaves the package)"]),
    ("from .wire import cloudpickle", ["cloudpickle from .wire (only via ._compat)"]),
    ("from ._compat import cloudpickle\nimport os, json\nfrom . import wire", []),
])
def test_the_checker_itself(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _violations(path) == expected


def test_vendored_cloudpickle_is_used_without_site_packages(tmp_path):
    """python -S: neither vast_magic nor the installed cloudpickle is importable."""
    package = tmp_path / "vast_magic_runtime"
    shutil.copytree(RUNTIME, package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(cloudpickle.__file__).parent, package / "_vendor" / "cloudpickle",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys; from vast_magic_runtime import wire, serve; from vast_magic_runtime._compat import cloudpickle\n"
            "assert 'vast_magic' not in sys.modules\n"
            "f = wire.loads(*wire.dumps(lambda x: x * 3)); assert f(2) == 6\n"
            "print(cloudpickle.__file__); print(sys.modules['cloudpickle.cloudpickle'].__file__)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    vendored = str(package / "_vendor" / "cloudpickle")
    assert [line.startswith(vendored) for line in done.stdout.splitlines()] == [True, True]
