"""Which methods a class body wrote: the compiler's qualified name on every Python from 3.10.

Python 3.10 has no ``code.co_qualname``; capture then reads the name from the def
statement at the code's first line. These tests hold both ways to the same answer.
"""
from __future__ import annotations

import sys
import textwrap

from tests.capture.shipping import run_cells
from vast_magic.capture import capture_code
from vast_magic.capture.source import _compiled_qualname, _def_qualnames

SAMPLE = textwrap.dedent('''
    import functools

    def top():
        def inner():
            pass
        class Local:
            def method(self):
                pass
        return inner, Local.method

    class Outer:
        @staticmethod
        @functools.lru_cache
        def cached():
            pass

        class Nested:
            async def deep(self):
                pass

        @property
        def prop(self):
            return 1
''')


def _functions(namespace: dict) -> list:
    inner, local_method = namespace["top"]()
    outer = namespace["Outer"]
    return [namespace["top"], inner, local_method, outer.cached.__wrapped__,
            outer.Nested.deep, outer.__dict__["prop"].fget]


def test_def_statements_give_the_compiler_qualnames():
    assert sorted(_def_qualnames(SAMPLE).values()) == sorted([
        "top", "top.<locals>.inner", "top.<locals>.Local.method", "Outer.cached",
        "Outer.Nested.deep", "Outer.prop"])


def test_compiled_qualname_matches_the_functions_own(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    namespace: dict = {}
    exec(compile(SAMPLE, str(path), "exec"), namespace)
    for fn in _functions(namespace):
        assert _compiled_qualname(fn.__code__) == fn.__qualname__
        if sys.version_info >= (3, 11):
            assert _compiled_qualname(fn.__code__) == fn.__code__.co_qualname


def test_generated_code_without_source_has_no_compiled_qualname():
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int

    assert Point.__init__.__qualname__.endswith("Point.__init__")        # renamed by dataclass
    assert not (_compiled_qualname(Point.__init__.__code__) or "").endswith("Point.__init__")


def test_cell_class_with_generated_methods_ships(shell):
    definition = ("@dataclass(order=True)\nclass Pair:\n    a: int\n    b: int\n"
                  "    def total(self):\n        return self.a + self.b\n")
    run_cells(shell, "from dataclasses import dataclass\n", definition,
              "def use(n):\n    return Pair(n, 1).total()\n")
    code = capture_code([shell.user_ns["use"]])
    shipped = {s.name: s.source for s in code.sources}
    assert shipped["Pair"] == definition
