"""Canonical digests: what changes them and what must not."""
from __future__ import annotations

import enum
import math
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, strategies as st

from vast_magic.capture import filter_ignored_lines, source_digest, value_digest

BASE = 'import os\n\ndef f():\n    return os.sep\n'


@pytest.mark.parametrize("text, kept", [
    ('DEBUG = True  # !VAST_IGNORE_CHANGES\nx = 1\n', 'x = 1\n'),
    ('DEBUG = True  #!VAST_IGNORE_CHANGES\nx = 1\n', 'x = 1\n'),
    ('DEBUG = True  #   !VAST_IGNORE_CHANGES   \nx = 1\n', 'x = 1\n'),
    ('    # !VAST_IGNORE_CHANGES\nx = 1', 'x = 1'),
    ('DEBUG = True  # !VAST_IGNORE_CHANGES please\n', 'DEBUG = True  # !VAST_IGNORE_CHANGES please\n'),
    ('DEBUG = True  # !vast_ignore_changes\n', 'DEBUG = True  # !vast_ignore_changes\n'),
    ('s = "# !VAST_IGNORE_CHANGES"\n', 's = "# !VAST_IGNORE_CHANGES"\n'),
    ('s = """\n# !VAST_IGNORE_CHANGES\n"""\n', 's = """\n# !VAST_IGNORE_CHANGES\n"""\n'),
    ("s = '''a\n  b # !VAST_IGNORE_CHANGES\n'''  # !VAST_IGNORE_CHANGES\ny = 2\n",
     "s = '''a\n  b # !VAST_IGNORE_CHANGES\ny = 2\n"),
    ('a = 1  # !VAST_IGNORE_CHANGES\r\nb = 2\r\n', 'b = 2\r\n'),
    ('def f(:\n  x = 1  # !VAST_IGNORE_CHANGES\n', 'def f(:\n'),
])
def test_filter_ignored_lines(text, kept):
    assert filter_ignored_lines(text) == kept


@pytest.mark.parametrize("edited, same", [
    (BASE.replace("    return", "    # explain\n    return"), True),
    (BASE + "\n\n# trailing comment\n", True),
    (BASE + "LIMIT = 5  # !VAST_IGNORE_CHANGES\n", True),  # the whole marked line goes, code included
    (BASE + "LIMIT = 5\n", False),
    (BASE.replace("def f():", "def f():\n    DEBUG = 2  # !VAST_IGNORE_CHANGES"), True),
    ("    " + BASE.replace("\n", "\n    "), True),  # indentation (a method-level def) is dedented
    (BASE.replace("os.sep", "os.pathsep"), False),
    (BASE.replace("def f", "async def f"), False),
    (BASE.replace("return os.sep", "return os.sep  # !VAST_IGNORE_CHANGES extra"), True),
])
def test_source_digest_ignores_comments_only(edited, same):
    assert (source_digest(edited) == source_digest(BASE)) is same


@dataclass
class Point:
    x: int
    y: float


class Mode(enum.Enum):
    FAST = 1
    SLOW = 2


Pair = namedtuple("Pair", "a b")


@pytest.mark.parametrize("left, right", [
    ({"b", "a", "c"}, {"c", "a", "b"}),
    ({"x": 1, "y": [1, 2]}, {"y": [1, 2], "x": 1}),
    (frozenset({1, 2, 3}), frozenset({3, 2, 1})),
    (np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(6, dtype=np.int32).reshape(2, 3)),
    (np.asfortranarray(np.ones((2, 3))), np.ones((2, 3))),  # C-order bytes, whatever the layout
    (Point(1, 2.0), Point(1, 2.0)),
    (float("nan"), float("nan")),
])
def test_value_digest_equal(left, right):
    assert value_digest(left) == value_digest(right)


@pytest.mark.parametrize("left, right", [
    (1, 1.0), (1, True), (0, False), (0.0, -0.0), ("1", 1), (b"a", "a"), (None, "None"),
    ([1, 2], (1, 2)), ([1, 2], [2, 1]), ({1, 2}, frozenset({1, 2})), ({"a": 1}, {"a": 2}),
    ({1: "a"}, {"1": "a"}),
    (np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.float64)),
    (np.zeros((2, 3)), np.zeros((3, 2))),
    (np.array([1, 2]), np.array([1, 3])),
    (Point(1, 2.0), Point(1, 2.5)),
    (Mode.FAST, Mode.SLOW), (Mode.FAST, 1),
    (Pair(1, 2), (1, 2)),
    (math.inf, -math.inf),
])
def test_value_digest_differs(left, right):
    assert value_digest(left) != value_digest(right)


def test_value_digest_of_functions_follows_source_and_captured_values():
    def make(k):
        def add(v):
            return v + k
        return add
    assert value_digest(make(1)) == value_digest(make(1))
    assert value_digest(make(1)) != value_digest(make(2))


def test_value_digest_handles_cycles_and_arbitrary_objects():
    loop: list = [1]
    loop.append(loop)
    assert value_digest(loop) == value_digest(loop)
    assert len(value_digest(range(3))) == 64 and value_digest(range(3)) != value_digest(range(4))


FACTOR = 2
scaled = lambda v: v * FACTOR  # noqa: E731 - a lambda is the case under test


def test_value_digest_of_a_lambda_follows_the_globals_it_reads(monkeypatch):
    before = value_digest(scaled)
    monkeypatch.setitem(globals(), "FACTOR", 3)
    assert value_digest(scaled) != before


def test_value_digest_of_cached_functions_uses_the_wrapped_function():
    import functools

    def make(k):
        @functools.lru_cache
        def cached(v):
            return v + k
        return cached
    assert value_digest(make(1)) == value_digest(make(1)) != value_digest(make(2))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=6), JSONISH, max_size=6), st.frozensets(st.text(max_size=6), max_size=8))
def test_value_digest_ignores_insertion_order(mapping, items):
    reordered = dict(reversed(list(mapping.items())))
    assert value_digest(mapping) == value_digest(reordered)
    assert value_digest(set(items)) == value_digest(set(sorted(items, reverse=True)))
