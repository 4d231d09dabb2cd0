"""capture_code on code defined in a real IPython shell: what ships, in which order, and that it runs."""
from __future__ import annotations

import sys

import pytest

from tests.capture.shipping import run_cells, run_shipped
from vast_magic.capture import capture_code, source_digest

STAND_IN_APP = """
class StandInDeployment:
    __vast_magic_deployment__ = True
    def remote(self, **options):
        return lambda fn: fn
    def context(self, *args, **kwargs):
        return lambda cls: cls
app = StandInDeployment()
"""


def by_name(items) -> dict:
    return {item.name: item for item in items}


def test_sync_function_with_helpers_classes_and_values_runs_elsewhere(shell, tmp_path):
    run_cells(shell, """
        import numpy as np
        from os import path as p
        WEIGHTS = np.array([1.5, 2.0, 4.0])
        LABELS = {"b": 2, "a": 1}
        UNUSED = object()
        """, """
        class Scaler:
            def __init__(self, k):
                self.k = k
            def apply(self, v):
                return v * self.k
        def helper(v):
            return Scaler(2).apply(v) + LABELS["a"]
        """, """
        def compute(n):
            return float(np.dot(WEIGHTS, [n, n, n])) + helper(n) + len(p.join("a", "b"))
        """)
    live = shell.user_ns["compute"](3)
    code = capture_code([shell.user_ns["compute"]])
    assert [s.name for s in code.sources] == ["Scaler", "compute", "helper"]
    assert by_name(code.sources)["Scaler"].kind == "class"
    assert {i.name: i.line for i in code.imports} == {"np": "import numpy as np", "p": "import posixpath as p"}
    assert [v.name for v in code.values] == ["LABELS", "WEIGHTS"]  # UNUSED never ships
    assert not any(v.by_value_code for v in code.values)
    assert [name for name, _ in code.class_objects] == ["vast_magic_app:Scaler"]
    assert run_shipped(code, "compute", (3,), tmp_path) == live


def test_async_function_ships_and_runs(shell, tmp_path):
    run_cells(shell, """
        import asyncio
        async def fetch(x):
            await asyncio.sleep(0)
            return [x, x * 2]
        """)
    code = capture_code([shell.user_ns["fetch"]])
    assert code.sources[0].source.startswith("async def fetch(x):")
    assert run_shipped(code, "fetch", (21,), tmp_path) == [21, 42]


def test_dataclass_and_enum_from_cells(shell, tmp_path):
    run_cells(shell, """
        from dataclasses import dataclass
        import enum
        @dataclass
        class Point:
            x: int
            y: int = 2
        class Color(enum.Enum):
            RED = 1
            BLUE = 3
        """, """
        @dataclass(frozen=True)
        class Box:
            corner: Point
            def area(self):
                return self.corner.x * self.corner.y
        def paint(n):
            return Box(Point(n)).area() + Color.BLUE.value
        """)
    code = capture_code([shell.user_ns["paint"]])
    sources = by_name(code.sources)
    assert sources["Point"].source.startswith("@dataclass\nclass Point:")
    assert sources["Color"].source.startswith("class Color(enum.Enum):")
    assert [s.name for s in code.sources].index("Point") < [s.name for s in code.sources].index("Box")
    assert dict(code.class_objects)["vast_magic_app:Box"] is shell.user_ns["Box"]
    assert run_shipped(code, "paint", (5,), tmp_path) == shell.user_ns["paint"](5) == 13


def test_context_class_with_methods_is_found_through_its_cell(shell):
    run_cells(shell, STAND_IN_APP, """
        x = 1
        @app.context(model="small")
        class Model:
            async def __aenter__(self):
                return self
            async def __aexit__(self, *exc):
                return None
        """)
    code = capture_code([shell.user_ns["Model"]])
    assert code.sources[0].source == ("class Model:\n    async def __aenter__(self):\n        return self\n"
                                      "    async def __aexit__(self, *exc):\n        return None\n")
    assert code.deployment_names == ()


def test_local_module_and_package_ship_as_files(shell, tmp_path, monkeypatch):
    (tmp_path / "helpers.py").write_text("SCALE = 3\n\ndef area(r):\n    return SCALE * r * r\n")
    (tmp_path / "geo").mkdir()
    (tmp_path / "geo" / "__init__.py").write_text("")
    (tmp_path / "geo" / "shapes.py").write_text("def side(a):\n    return a + 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        run_cells(shell, """
            import helpers
            from helpers import area
            from geo.shapes import side
            def measure(r):
                return area(r) + helpers.SCALE + side(r)
            """)
        code = capture_code([shell.user_ns["measure"]])
    finally:
        for name in ("helpers", "geo", "geo.shapes"):
            sys.modules.pop(name, None)
    assert {i.name: i.line for i in code.imports} == {
        "area": "from helpers import area", "helpers": "import helpers", "side": "from geo.shapes import side"}
    assert [(m.module, m.relpath) for m in code.file_modules] == [
        ("geo", "geo/__init__.py"), ("geo.shapes", "geo/shapes.py"), ("helpers", "helpers.py")]
    assert run_shipped(code, "measure", (2,), tmp_path) == 12 + 3 + 3


def test_closures_and_lambdas_go_by_value_locally(shell, tmp_path):
    run_cells(shell, """
        OFFSET = 10
        def make_adder(k):
            def add(v):
                return v + k + OFFSET
            return add
        add3 = make_adder(3)
        double = lambda v: v * 2
        def use(v):
            return add3(double(v))
        """)
    code = capture_code([shell.user_ns["use"]])
    assert {v.name: v.by_value_code for v in code.values} == {"add3": True, "double": True}
    assert [s.name for s in code.sources] == ["use"]
    assert run_shipped(code, "use", (4,), tmp_path) == 21


def test_newest_definition_wins(shell, tmp_path):
    run_cells(shell, "def helper():\n    return 'old'\n",
              "def run():\n    return helper()\n",
              "def helper():\n    return 'new'\n")
    code = capture_code([shell.user_ns["run"]])
    assert "new" in by_name(code.sources)["helper"].source
    assert run_shipped(code, "run", (), tmp_path) == "new"


def test_user_decorators_kept_deployment_decorator_stripped(shell, tmp_path):
    run_cells(shell, STAND_IN_APP, """
        import functools
        def twice(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return 2 * fn(*args)
            return wrapper
        """, """
        @app.remote(timeout=5)
        @functools.lru_cache(maxsize=8)
        @twice
        def square(x):
            return x * x
        def uses_app():
            return type(app).__name__
        """)
    code = capture_code([shell.user_ns["square"], shell.user_ns["uses_app"]])
    assert by_name(code.sources)["square"].source == (
        "@functools.lru_cache(maxsize=8)\n@twice\ndef square(x):\n    return x * x\n")
    assert [s.name for s in code.sources] == ["twice", "square", "uses_app"]
    assert code.deployment_names == ("app",)
    assert "app" not in by_name(code.values) and "StandInDeployment" not in by_name(code.sources)
    assert run_shipped(code, "square", (3,), tmp_path) == 18
    assert run_shipped(code, "uses_app", (), tmp_path) == "WorkerApp"   # the worker's registry app


def test_remote_function_proxy_ships_the_wrapped_function_under_its_name(shell, tmp_path):
    run_cells(shell, """
        class Proxy:
            def __init__(self, fn):
                self.__vast_magic_wrapped__ = fn
                self.__name__ = fn.__name__
            def __call__(self, *args):
                raise RuntimeError("the proxy must not be called on the worker")
        def cube(x):
            return x ** 3
        cube = Proxy(cube)
        def total(x):
            return cube(x) + 1
        """)
    code = capture_code([shell.user_ns["cube"], shell.user_ns["total"]])
    assert [s.name for s in code.sources] == ["cube", "total"]
    assert "Proxy" not in by_name(code.sources)
    assert run_shipped(code, "total", (2,), tmp_path) == 9


def test_comment_only_edit_and_ignored_lines_keep_the_digest(shell):
    run_cells(shell, "def f(x):\n    return x + 1\n")
    before = capture_code([shell.user_ns["f"]]).sources[0].digest
    run_cells(shell, "def f(x):  # a comment\n    # another\n    DEBUG = 1  # !VAST_IGNORE_CHANGES\n"
                     "    return x + 1\n")
    after = capture_code([shell.user_ns["f"]]).sources[0]
    assert after.digest == before == source_digest("def f(x):\n    return x + 1\n")
    assert "DEBUG = 1" in after.source  # ignored lines still ship
    run_cells(shell, "def f(x):\n    return x + 2\n")
    assert capture_code([shell.user_ns["f"]]).sources[0].digest != before


INDEPENDENT_CELLS = [
    "import math\nfrom functools import reduce\nTABLE = {'x': [1, 2], 'y': {3, 4}}\n",
    "class Base:\n    def size(self):\n        return 1\n",
    "class Child(Base):\n    def size(self):\n        return 2 + helper()\n",
    "def helper():\n    return int(math.sqrt(16))\n",
    "def main(n):\n    return reduce(lambda a, b: a + b, TABLE['x']) + Child().size() + n\n",
]


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (3, 0, 1, 2, 4), (0, 3, 1, 2, 4)])
def test_cell_order_does_not_change_the_capture(shell, order):
    run_cells(shell, *(INDEPENDENT_CELLS[i] for i in order))
    code = capture_code([shell.user_ns["main"]])
    shell.reset(new_session=False)
    run_cells(shell, *INDEPENDENT_CELLS)
    reference = capture_code([shell.user_ns["main"]])
    assert code == reference
    assert [s.name for s in code.sources] == ["Base", "Child", "helper", "main"]


def test_capture_does_not_modify_the_namespace(shell):
    run_cells(shell, "N = 2\ndef f():\n    return N\n")
    before = dict(shell.user_ns)
    capture_code([shell.user_ns["f"]])
    assert shell.user_ns.keys() == before.keys()


def test_value_digest_of_a_notebook_class_instance_follows_the_class_source(shell, tmp_path):
    from vast_magic.capture import value_digest

    run_cells(shell, "from dataclasses import dataclass\n@dataclass\nclass Cfg:\n    n: int\n"
                     "    def twice(self):\n        return 2 * self.n\nCFG = Cfg(1)\n")
    before = value_digest(shell.user_ns["CFG"])
    run_cells(shell, "@dataclass\nclass Cfg:\n    n: int\n    def twice(self):\n        return 3 * self.n\n"
                     "CFG = Cfg(1)\ndef f():\n    return [CFG.twice(), type(CFG).__name__]\n")
    assert value_digest(shell.user_ns["CFG"]) != before
    code = capture_code([shell.user_ns["f"]])
    # the instance refers to the shipped class (no copy of the class by value), so the class ships as source
    assert code.values[0].name == "CFG" and not code.values[0].by_value_code
    assert [s.name for s in code.sources] == ["Cfg", "f"] and not code.warnings
    assert run_shipped(code, "f", (), tmp_path) == [3, "Cfg"]


def test_instances_of_shipped_classes_keep_isinstance_on_the_worker(shell, tmp_path):
    run_cells(shell, """
        class Point:
            def __init__(self, x):
                self.x = x
        ORIGIN = Point(0)
        TABLE = {"unit": Point(1)}
        def check():
            return [isinstance(ORIGIN, Point), isinstance(TABLE["unit"], Point), TABLE["unit"].x]
        """)
    code = capture_code([shell.user_ns["check"]])
    module = code.module("vast_magic_app")
    order = [item.name for item in module.items]
    assert order.index("Point") < order.index("ORIGIN") and order.index("Point") < order.index("TABLE")
    assert not any(v.by_value_code for v in code.values)
    assert run_shipped(code, "check", (), tmp_path) == [True, True, 1]
