"""Canonical digests of shipped code and values (hex SHA-256).

The Manifest compares these to decide whether a deployment changed, so they
must be identical across kernels, ``PYTHONHASHSEED`` values and cell order,
and blind to edits that do not change behaviour (comments, ``!VAST_IGNORE_CHANGES``
lines). That rules out hashing pickle bytes whenever a canonical form exists:
pickles of sets and dicts follow hash order, and cloudpickle embeds file names.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import enum
import hashlib
import inspect
import io
import json
import pickle
import sys
import textwrap
import tokenize
import types
from typing import Any

from .names import code_globals
from .origins import defines_deployment_code, logical_name, namespace_of
from .source import class_source

__all__ = ["IGNORE_MARKER", "sha256_text", "filter_ignored_lines", "source_digest", "value_digest"]

IGNORE_MARKER = "!VAST_IGNORE_CHANGES"


def sha256_text(text: str | bytes) -> str:
    """Hex SHA-256 of UTF-8 text (or raw bytes)."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def filter_ignored_lines(text: str) -> str:
    """Drop every line whose comment, stripped, is exactly ``!VAST_IGNORE_CHANGES``.

    Same rule as the official SDK's ``filter_ignored_lines`` so our digests and
    its ``file_hash`` agree on what counts as a change: lines are split on
    ``\\n`` and rejoined with ``\\n``; a ``#`` inside a string (triple-quoted
    strings included, across lines) is not a comment, which ``tokenize`` gets
    right where a regex would not.
    """
    lines = text.split("\n")
    drop = {row for row, comment in _comments(text) if comment[1:].strip() == IGNORE_MARKER}
    return "\n".join(line for number, line in enumerate(lines, start=1) if number not in drop)


def _comments(text: str) -> list[tuple[int, str]]:
    """(line number, comment text) of every comment token; stops quietly at a tokenize error."""
    found: list[tuple[int, str]] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text, newline="").readline):
            if token.type == tokenize.COMMENT:
                found.append((token.start[0], token.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # incomplete source: the comments seen so far are still real comments
    return found


@functools.lru_cache(maxsize=4096)
def source_digest(source: str) -> str:
    """Digest of the code's syntax tree: comment-only and formatting edits keep it (cached by text)."""
    tree = ast.parse(filter_ignored_lines(textwrap.dedent(source)))
    return sha256_text(ast.dump(tree))


def value_digest(obj: Any) -> str:
    """Canonical digest of a shipped value.

    JSON-like values (None, bool, int, float, str, bytes, lists, tuples, dicts,
    sets) are encoded as tagged, sorted JSON; numpy arrays as dtype, shape and
    C-order bytes; dataclass instances and Enum members by class and fields;
    functions by source, defaults and captured values. Anything else falls back
    to the bytes of ``cloudpickle.dumps`` (or ``pickle.dumps`` when cloudpickle
    fails), protocol 5: such a digest can vary between processes when the
    object's pickle contains hash-ordered sets, memory addresses or file paths,
    which at worst makes an unchanged value look changed (a redeploy), never
    the reverse.
    """
    encoded = json.dumps(_canonical(obj, ()), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return sha256_text(encoded)


def _canonical(obj: Any, path: tuple[int, ...]) -> Any:
    """A JSON-encodable, process-independent description of ``obj`` (``path`` guards cycles)."""
    kind = type(obj)
    if obj is None or kind in (bool, str):
        return [kind.__name__, obj]
    if kind is int:
        return ["int", str(obj)]
    if kind is float:
        return ["float", obj.hex()]
    if kind is complex:
        return ["complex", obj.real.hex(), obj.imag.hex()]
    if kind in (bytes, bytearray):
        return [kind.__name__, obj.hex()]
    if id(obj) in path:
        return ["cycle", path.index(id(obj))]
    inner = path + (id(obj),)
    if kind in (list, tuple):
        return [kind.__name__, [_canonical(item, inner) for item in obj]]
    if kind in (set, frozenset):
        return [kind.__name__, sorted((_canonical(item, inner) for item in obj), key=_order_key)]
    if kind is dict:
        pairs = [[_canonical(k, inner), _canonical(v, inner)] for k, v in obj.items()]
        return ["dict", sorted(pairs, key=lambda pair: _order_key(pair[0]))]
    return _canonical_object(obj, inner)


def _canonical_object(obj: Any, path: tuple[int, ...]) -> Any:
    """Non-builtin values: enums, dataclasses, arrays, functions, types, then the pickle fallback."""
    if isinstance(obj, enum.Enum):
        return ["enum", _type_id(type(obj)), obj.name, _canonical(obj.value, path)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = [[f.name, _canonical(getattr(obj, f.name), path)] for f in dataclasses.fields(obj)]
        return ["dataclass", _type_id(type(obj)), fields]
    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
        return ["namedtuple", _type_id(type(obj)), [_canonical(item, path) for item in obj]]
    if isinstance(obj, types.ModuleType):
        return ["module", obj.__name__]
    if isinstance(obj, type):
        return ["type", _type_id(obj)]
    array = _numpy_array(obj)
    if array is not None:
        return array
    if isinstance(obj, types.FunctionType):
        described = _canonical_function(obj, path)
        if described is not None:
            return described
    wrapped = getattr(obj, "__wrapped__", None)
    if callable(wrapped) and not isinstance(obj, type):  # functools.lru_cache & co: the function they wrap
        return ["wrapped", _qualified(type(obj)), _canonical(wrapped, path)]
    return ["pickle", _type_id(type(obj)), _pickle_digest(obj)]


def _numpy_array(obj: Any) -> list | None:
    """dtype + shape + C-order bytes for numpy arrays and scalars (numpy is never imported here)."""
    module = type(obj).__module__ or ""
    if not module.startswith("numpy") or not hasattr(obj, "dtype") or not hasattr(obj, "tobytes"):
        return None
    import numpy  # already imported: obj is a numpy object

    array = numpy.asarray(obj)
    if array.dtype.hasobject:  # object arrays hold pointers: describe their items instead
        return ["ndarray-object", list(array.shape), _canonical(array.ravel().tolist(), ())]
    data = numpy.ascontiguousarray(array).tobytes()
    return ["ndarray" if isinstance(obj, numpy.ndarray) else "numpy-scalar",
            array.dtype.str, list(array.shape), sha256_text(data)]


def _canonical_function(fn: types.FunctionType, path: tuple[int, ...]) -> list | None:
    """A function shipped by value (lambda, closure): its source, defaults and captured values."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_canonical(cell.cell_contents, path))
        except ValueError:  # an empty cell: the variable was never assigned
            cells.append(["empty-cell"])
    try:
        code_digest = source_digest(source)
    except SyntaxError:  # a lambda cut out of a multi-line expression
        code_digest = sha256_text(textwrap.dedent(source).strip())
    # the pickled function carries the globals it reads, so their values are part of it
    names = sorted(code_globals(fn.__code__) & fn.__globals__.keys())
    used = [[name, _canonical(fn.__globals__[name], path)] for name in names]
    return ["function", fn.__qualname__, code_digest,
            _canonical(fn.__defaults__, path), _canonical(fn.__kwdefaults__, path), cells, used]


def _pickle_digest(obj: Any) -> str:
    try:
        import cloudpickle

        data = cloudpickle.dumps(obj, protocol=5)
    except Exception:
        try:
            data = pickle.dumps(obj, protocol=5)
        except Exception as exc:  # unpicklable values are refused by capture before they get here
            return sha256_text(f"unpicklable:{_qualified(type(obj))}:{exc}")
    return sha256_text(data)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.lru_cache(maxsize=256)
def _type_id(cls: type) -> str:
    """Qualified name; for a class that ships as source its logical name and source digest (the class travels too)."""
    module = sys.modules.get(cls.__module__)
    if module is not None and cls.__module__ != "__main__" and not defines_deployment_code(vars(module)):
        return _qualified(cls)
    name = f"{logical_name(namespace_of(cls))}.{cls.__qualname__}"
    try:
        return f"{name}:{source_digest(class_source(cls, cls.__qualname__))}"
    except Exception:  # no source to be found: the name is all we have
        return name


def _order_key(canonical: Any) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))
