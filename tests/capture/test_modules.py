"""Capture of code that lives in modules: how each origin module travels, and that the result runs elsewhere.

Modules are real files imported in this process (each test gets its own folder
and module names, and forgets them afterwards); what ships is imported in a
fresh interpreter by ``run_shipped``, with the real generated modules and the
real worker runtime.
"""
from __future__ import annotations

import importlib
import sys
import textwrap
import types
from pathlib import Path

import pytest

from tests.capture.shipping import run_cells, run_shipped
from vast_magic.bundle import build_manifest, decide_tier
from vast_magic.capture import CELLS_MODULE, LinkDef, capture_code, requirement_warnings
from vast_magic.capture.origins import FILES, INSTALLED, SOURCE, Classifier, logical_name, module_name_for_file
from vast_magic.capture.requirements import missing_packages, requirement_name
from vast_magic.errors import CaptureError

APP = "from vast_magic import Deployment\napp = Deployment(name='m')\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Write files under a fresh folder on sys.path; modules imported from it are forgotten afterwards."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)

    def write(files: dict[str, str]) -> Path:
        for relpath, text in files.items():
            path = folder / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        importlib.invalidate_caches()
        return folder

    yield write
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(folder)):
            del sys.modules[name]


# -- where code comes from -------------------------------------------------------------------------
def test_module_name_of_a_file_follows_its_packages(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for init in ("pkg/__init__.py", "pkg/sub/__init__.py"):
        (tmp_path / init).write_text("")
    cases = {"app.py": "app", "pkg/app.py": "pkg.app", "pkg/sub/deep.py": "pkg.sub.deep", "pkg/__init__.py": "pkg",
             "pkg/__main__.py": "pkg.__main__"}
    assert {path: module_name_for_file(tmp_path / path) for path in cases} == cases


# (what the namespace holds, its logical name): one name whatever the load style
LOGICAL = [
    ({"__name__": "pkg.app"}, "pkg.app"),                                                  # import pkg.app
    ({"__name__": "__main__", "__spec__": types.SimpleNamespace(name="pkg.app")}, "pkg.app"),   # python -m pkg.app
    ({"__name__": "__main__", "__spec__": None, "__file__": "/x/app.py"}, "app"),          # python app.py
    ({"__spec__": None, "__file__": "/x/app.py"}, "app"),                                  # %run app.py
    ({"__name__": "__main__"}, CELLS_MODULE),                                               # notebook cells
]


@pytest.mark.parametrize("namespace, name", LOGICAL, ids=[n for _, n in LOGICAL])
def test_logical_name_is_the_same_however_the_code_was_loaded(namespace, name):
    assert logical_name(namespace) == name


def test_each_origin_module_is_classified_by_what_it_is(project, shell):
    project({"with_app.py": APP + "def f():\n    return 1\n", "plain_local.py": "def g():\n    return 2\n",
             "defines_remote.py": "import with_app\n@with_app.app.remote\ndef h():\n    return 3\n"})
    import defines_remote
    import json
    import plain_local
    import with_app
    run_cells(shell, "def cell_fn():\n    return 4\n")
    classify = Classifier()
    seen = {name: (origin.kind, origin.module) for name, origin in (
        ("cells", classify.origin(shell.user_ns["cell_fn"])), ("with_app", classify.origin(with_app.f)),
        ("proxy module", classify.origin(defines_remote.h)), ("plain", classify.origin(plain_local.g)),
        ("stdlib", classify.origin(json.dumps)))}
    assert seen == {"cells": (SOURCE, CELLS_MODULE), "with_app": (SOURCE, "with_app"),
                    "proxy module": (SOURCE, "defines_remote"), "plain": (FILES, "plain_local"),
                    "stdlib": (INSTALLED, "json")}
    assert classify.origin(__import__("numpy").mean).kind == INSTALLED
    assert classify.origin(42) is None and classify.origin(len) is None


# -- what ships, and that it runs -----------------------------------------------------------------
def test_a_module_with_a_deployment_ships_as_its_own_module(project, tmp_path):
    project({"mylib_a.py": APP + textwrap.dedent("""
        import math
        OFFSET = 2
        UNUSED = object()
        def helper(x):
            return x + OFFSET
        @app.remote(benchmark_dataset=[{"x": 1}])
        def square(x):
            return math.floor(helper(x)) * x
        """)})
    import mylib_a
    code = capture_code([mylib_a.square])
    assert code.entries == ("mylib_a:square",)
    [module] = code.source_modules
    assert (module.name, module.path) == ("mylib_a", "mylib_a.py")
    assert [item.name for item in module.items] == ["math", "OFFSET", "helper", "square"]   # UNUSED, app stay home
    assert "@app.remote" not in module.get("square").source and not code.file_modules
    assert run_shipped(code, "mylib_a:square", (3,), tmp_path) == 15


def test_cells_and_a_module_keep_their_own_globals(project, shell, tmp_path):
    project({"mylib_b.py": APP + "def helper():\n    return 'module'\ndef from_module():\n    return helper()\n"})
    run_cells(shell, "from mylib_b import from_module\n"
                     "def helper():\n    return 'cells'\n"
                     "def both():\n    return [helper(), from_module()]\n")
    code = capture_code([shell.user_ns["both"]])
    assert [m.name for m in code.source_modules] == ["mylib_b", CELLS_MODULE]
    assert code.module(CELLS_MODULE).links == (LinkDef("from_module", "mylib_b", "from_module"),)
    assert run_shipped(code, "both", (), tmp_path) == ["cells", "module"]


def test_a_package_with_relative_imports(project, tmp_path):
    project({"pkg_c/__init__.py": "", "pkg_c/consts.py": "BASE = 2\n",
             "pkg_c/helpers.py": "from .consts import BASE\n\ndef scale(x):\n    return BASE * x\n",
             "pkg_c/app.py": APP + "from .helpers import scale\n@app.remote\ndef double(x):\n    return scale(x)\n"})
    app_module = importlib.import_module("pkg_c.app")
    code = capture_code([app_module.double])
    assert [(m.name, m.path) for m in code.source_modules] == [("pkg_c.app", "pkg_c/app.py")]
    assert [i.line for i in code.imports] == ["from pkg_c.helpers import scale"]
    # the package travels as files, except the module whose generated version takes its place
    assert [f.relpath for f in code.file_modules] == ["pkg_c/__init__.py", "pkg_c/consts.py", "pkg_c/helpers.py"]
    assert run_shipped(code, "pkg_c.app:double", (21,), tmp_path) == 42


def test_a_package_that_holds_the_deployment_is_generated_too(project, tmp_path):
    project({"pkg_d/__init__.py": "from .app import app, triple\n",
             "pkg_d/app.py": APP + "@app.remote\ndef triple(x):\n    return 3 * x\n"})
    import pkg_d
    code = capture_code([pkg_d.triple])
    # pkg_d/__init__.py holds the Deployment: its real file would run Deployment(...) on the worker
    assert [(m.name, m.path, m.items) for m in code.source_modules][0] == ("pkg_d", "pkg_d/__init__.py", ())
    assert not code.file_modules
    assert run_shipped(code, "pkg_d.app:triple", (5,), tmp_path) == 15


@pytest.mark.parametrize("order", [("mod_e1", "mod_e2"), ("mod_e2", "mod_e1")])
def test_modules_that_call_each_other_load_in_any_order(project, tmp_path, order):
    project({"mod_e1.py": APP + "def base(x):\n    return 10 * x\nimport mod_e2\n"
                                "def first(x):\n    return mod_e2.second(x) + 1\n",
             "mod_e2.py": APP + "from mod_e1 import base\ndef second(x):\n    return base(x) + 5\n"})
    import mod_e1
    code = capture_code([mod_e1.first])
    assert {m.name: [link.name for link in m.links] for m in code.source_modules} == \
        {"mod_e1": ["mod_e2"], "mod_e2": ["base"]}
    assert run_shipped(code, "mod_e1:first", (2,), tmp_path, modules=order) == 26


def test_attributes_read_from_a_shipped_module_ship_with_it(project, shell, tmp_path):
    project({"mylib_f.py": APP + "def helper(x):\n    return x * 7\ndef unrelated():\n    return open\n"})
    run_cells(shell, "import mylib_f\ndef use(x):\n    return mylib_f.helper(x)\n")
    code = capture_code([shell.user_ns["use"]])
    assert [item.name for item in code.module("mylib_f").items] == ["helper"]
    assert run_shipped(code, "use", (3,), tmp_path) == 21


def test_instances_of_module_classes_keep_isinstance(project, tmp_path):
    project({"mylib_g.py": APP + textwrap.dedent("""
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
        ORIGIN = Point(0)
        @app.remote
        def check():
            return [isinstance(ORIGIN, Point), ORIGIN.x, type(ORIGIN).__module__]
        """)})
    import mylib_g
    code = capture_code([mylib_g.check])
    assert dict(code.class_objects) == {"mylib_g:Point": mylib_g.Point} and not code.warnings
    assert run_shipped(code, "mylib_g:check", (), tmp_path) == [True, 0, "mylib_g"]


def test_run_file_classes_without_methods_are_found(project, shell, tmp_path):
    folder = project({"runme.py": "from dataclasses import dataclass\n@dataclass\nclass Pair:\n    a: int\n    b: int\n"
                                  "def add(p):\n    return p.a + p.b\n"})
    run_cells(shell, f"%run {folder / 'runme.py'}\n")
    run_cells(shell, "def use():\n    return add(Pair(2, 3))\n")
    code = capture_code([shell.user_ns["use"]])
    assert [m.name for m in code.source_modules] == ["runme", CELLS_MODULE]
    assert [item.name for item in code.module("runme").items] == ["dataclass", "Pair", "add"]
    assert run_shipped(code, "use", (), tmp_path) == 5


# -- what cannot ship, and says why ---------------------------------------------------------------
REGISTERED_REFUSALS = [
    ("closure", "def make():\n    k = 1\n    def inner():\n        return k\n    return inner\nroot = make()\n",
     ["function 'root'", "closure", "top level"]),
    ("nested", "def make():\n    def inner():\n        return 1\n    return inner\nroot = make()\n",
     ["function 'root'", "defined inside another function"]),
    ("wrapped by a call", "import functools\ndef deco(f):\n    @functools.wraps(f)\n    def w(*a):\n        return f(*a)\n"
                          "    return w\ndef plain(x):\n    return x\nroot = deco(plain)\n",
     ["'root'", "wrapped by a call", "decorators written with @ are fine"]),
    ("exec", "ns = {}\nexec('def made():\\n    return 1', ns)\nroot = ns['made']\n",
     ["'made'", "Cannot find the source", "exec"]),
    ("builtin", "root = len\n", ["remote function 'len'", "not defined in Python source"]),
    ("lambda", "root = lambda: 1\n", ["no usable name", "not a lambda"]),
]


@pytest.mark.parametrize("setup, words", [c[1:] for c in REGISTERED_REFUSALS], ids=[c[0] for c in REGISTERED_REFUSALS])
def test_a_registered_function_that_cannot_ship_as_source_says_why(shell, setup, words):
    run_cells(shell, setup)
    with pytest.raises(CaptureError) as caught:
        capture_code([shell.user_ns["root"]])
    for word in words:
        assert word in str(caught.value)


def test_a_module_edited_after_import_is_refused_until_reloaded(project):
    folder = project({"mylib_h.py": APP + "@app.remote\ndef f(x):\n    return x + 1\n"})
    import mylib_h
    (folder / "mylib_h.py").write_text(APP + "@app.remote\ndef f(x):\n    return x + 2\n")
    with pytest.raises(CaptureError, match=r"'f' in .*mylib_h\.py no longer matches the code that runs.*importlib\.reload"):
        capture_code([mylib_h.f])
    importlib.reload(mylib_h)
    assert "x + 2" in capture_code([mylib_h.f]).sources[0].source


def test_roots_registered_before_a_reload_ship_the_module_as_it_is_now(project, tmp_path):
    text = APP + "class Model:\n    def size(self):\n        return 1\n@app.remote\ndef f():\n    return Model().size()\n"
    folder = project({"mylib_k.py": text})
    import mylib_k
    registered = [mylib_k.f, mylib_k.Model]          # what a Deployment held from before the reload lists
    (folder / "mylib_k.py").write_text(text.replace("return 1", "return 2"))
    importlib.reload(mylib_k)
    code = capture_code(registered)
    assert code.entries == ("mylib_k:f", "mylib_k:Model")
    assert "return 2" in code.module("mylib_k").get("Model").source
    assert run_shipped(code, "mylib_k:f", (), tmp_path) == 2


# -- what a change is called ----------------------------------------------------------------------
def test_tier_reasons_name_the_module_and_the_function(project):
    folder = project({"helpers_i.py": "def scale(x):\n    return 2 * x\ndef other():\n    return 0\n",
                      "mylib_i.py": APP + "from helpers_i import scale\nOFFSET = 1\ndef helper(x):\n    return x + OFFSET\n"
                                    "@app.remote\ndef f(x):\n    return scale(helper(x))\n"})
    import mylib_i

    def manifest():
        from tests.bundle.sample_inputs import make_autoscaling, make_image
        from vast_magic.bundle.registry_spec import RemoteSpec
        code = capture_code([mylib_i.f])
        return build_manifest(name="m", tag="default", image=make_image(), autoscaling=make_autoscaling(),
                              code=code, remotes=(RemoteSpec("f", False, at=code.entries[0]),), contexts=(),
                              secret_key=b"k" * 32)

    before = manifest()
    (folder / "helpers_i.py").write_text("def scale(x):\n    return 3 * x\ndef other():\n    return 0\n")
    (folder / "mylib_i.py").write_text((folder / "mylib_i.py").read_text().replace("x + OFFSET", "x - OFFSET"))
    importlib.reload(sys.modules["helpers_i"])
    importlib.reload(mylib_i)
    assert decide_tier(before, manifest()).reasons == ("code: helpers_i.scale changed", "code: mylib_i.helper changed")


# -- packages the image lacks ---------------------------------------------------------------------
def test_capture_lists_the_third_party_packages_the_code_imports(project, shell):
    project({"helpers_j.py": "import dateutil.parser\n\ndef load(text):\n    return dateutil.parser.parse(text)\n"})
    run_cells(shell, "import numpy as np\nimport json\nfrom helpers_j import load\n"
                     "def work(x):\n    import not_installed_anywhere, os.path\n    from . import nothing\n"
                     "    return np.mean([x]), json.dumps(str(load('2024-01-02'))), not_installed_anywhere\n")
    code = capture_code([shell.user_ns["work"]])
    # not json/os (stdlib), not helpers_j (shipped); a package imported only inside a function counts too
    assert code.packages == ("dateutil", "not_installed_anywhere", "numpy")


# (import names, pip entries, (import name, distribution) of what is missing)
MISSING = [
    (["numpy"], ["numpy>=1.24"], []),
    (["numpy"], ["NumPy"], []),
    (["dateutil"], ["python_dateutil==2.9"], []),                    # distribution python-dateutil provides it
    (["dateutil"], [], [("dateutil", "python-dateutil")]),
    (["sklearn_not_installed"], ["torch"], [("sklearn_not_installed", "sklearn_not_installed")]),
    (["mypkg"], ["git+https://example.invalid/x.git#egg=mypkg"], []),
    (["numpy", "dateutil"], ["numpy"], [("dateutil", "python-dateutil")]),
]


@pytest.mark.parametrize("packages, pip, missing", MISSING)
def test_missing_packages(packages, pip, missing):
    assert missing_packages(packages, pip) == missing


def test_requirement_names():
    assert [requirement_name(e) for e in ("numpy>=2", "Py_YAML", "./local", "-r req.txt", "https://x/y.whl")] == \
        ["numpy", "py-yaml", None, None, None]


def test_requirement_warnings_name_the_package_and_the_line_to_add():
    [local] = requirement_warnings(["dateutil"], [], "local")
    [vast] = requirement_warnings(["dateutil"], ["numpy"], "vast")
    assert "'dateutil'" in local and ".pip_install('python-dateutil')" in local
    assert "this machine's Python environment" in local
    assert ".pip_install('python-dateutil')" in vast and "base image already has it" in vast
    assert requirement_warnings(["dateutil"], ["python-dateutil>=2"], "vast") == ()
