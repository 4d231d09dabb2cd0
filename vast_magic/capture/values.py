"""Values reached by the walk: refusing what must not travel, pickling what may.

Refusals come before pickling so the user reads *why* (a lock is process
state, a Secret goes through ``image.env``) rather than a pickling error, and
they look inside containers and closures because ``CONFIG = {"key": API_KEY}``
leaks a key just as well as ``API_KEY`` does.
"""
from __future__ import annotations

import asyncio
import io
import socket
import threading
import types
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from ..errors import CaptureError
from ..runtime.wire import CLASS_REF
from ..secret import Secret
from .names import code_globals

__all__ = ["check_value", "describe", "pickle_value", "modules_used_by"]

_LOCKS = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
          threading.Semaphore, threading.Barrier, asyncio.Lock, asyncio.Event, asyncio.Condition,
          asyncio.Semaphore)
_ITERATORS = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_MAX_SCANNED = 10_000  # items looked at inside one value; big arrays are not containers we walk


def check_value(name: str, value: Any, forbidden: Sequence[str], used_by: str | None) -> None:
    """Raise CaptureError if ``value`` (or something it holds) must not be shipped."""
    for path, item in _reachable(name, value):
        reason = _refusal(item, forbidden)
        if reason:
            raise CaptureError(f"{describe(path, used_by)} {reason}")


def describe(path: str, used_by: str | None) -> str:
    """``Variable 'lock' (used by 'work')``: how every capture error names what it refuses."""
    return f"Variable {path!r}" + (f" (used by {used_by!r})" if used_by else "")


def _refusal(item: Any, forbidden: Sequence[str]) -> str | None:
    """Why ``item`` cannot travel, or None."""
    if isinstance(item, Secret):
        return ("is a Secret: secrets never travel with code. Pass it with image.env(NAME=secret) "
                "and read os.environ['NAME'] inside the function.")
    if isinstance(item, str) and item and item in forbidden:
        return ("holds your Vast API key, which must never be shipped with code. Remove the reference; "
                "if the worker needs a credential, pass it with image.env(NAME=Secret(...)).")
    if isinstance(item, io.IOBase):
        return "is an open file: it cannot move to another machine. Open the file inside the function instead."
    if isinstance(item, socket.socket):
        return ("is a socket: it cannot move to another machine. Connect inside the function, "
                "or in a context class's __aenter__.")
    if isinstance(item, _LOCKS):
        return (f"is a {type(item).__name__}: locks and events belong to one process. Create it inside "
                "the function, or in a context class's __aenter__.")
    if isinstance(item, threading.Thread):
        return "is a thread: threads cannot be shipped. Start it inside the function or a context class."
    if isinstance(item, _ITERATORS):
        return (f"is a {type(item).__name__} (a one-shot iterator that cannot be shipped). Ship the "
                "function that creates it, or materialise it, e.g. list(...).")
    return None


def _reachable(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(path, item)`` for the value and what its builtin containers and closures hold."""
    pending, seen = [(name, value)], set()
    while pending and len(seen) < _MAX_SCANNED:
        path, item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield path, item
        pending.extend(_children(path, item))


def _children(path: str, item: Any) -> list[tuple[str, Any]]:
    if isinstance(item, dict):
        return [(f"{path}[{key!r}]", child) for key, child in item.items()] + \
               [(f"{path} (a key)", key) for key in item]
    if isinstance(item, (list, tuple)):
        return [(f"{path}[{index}]", child) for index, child in enumerate(item)]
    if isinstance(item, (set, frozenset)):
        return [(f"{path} (an item)", child) for child in item]
    if isinstance(item, types.FunctionType):
        cells = [c.cell_contents for c in item.__closure__ or () if _cell_is_set(c)]
        names = sorted(code_globals(item.__code__) & item.__globals__.keys())
        return [(f"{path} (captured)", c) for c in cells] + [(n, item.__globals__[n]) for n in names]
    return []


def _cell_is_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


class _ShippingPickler(cloudpickle.CloudPickler):
    """cloudpickle that refers to shipped classes by location and notes whether code went by value."""

    def __init__(self, file: io.BytesIO, class_ref: Callable[[type], str | None]):
        super().__init__(file, protocol=5)
        self.class_ref = class_ref
        self.code_by_value = False
        self.refs: set[str] = set()

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type):
            where = self.class_ref(obj)
            if where is not None:
                self.refs.add(where)
                return (CLASS_REF, where)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            self.code_by_value = True
        return super().reducer_override(obj)


def pickle_value(name: str, value: Any, used_by: str | None,
                 class_ref: Callable[[type], str | None] = lambda cls: None) -> tuple[bytes, bool, frozenset[str]]:
    """cloudpickle protocol 5, in-band; returns (payload, whether code went by value, class locations referred to).

    ``class_ref`` gives the location of a class that ships as source (else
    None): its instances unpickle on the worker as instances of *that* class,
    so ``isinstance`` holds for values exactly as for call arguments.
    """
    buffer = io.BytesIO()
    pickler = _ShippingPickler(buffer, class_ref)
    try:
        pickler.dump(value)
    except Exception as exc:
        raise CaptureError(f"{describe(name, used_by)} cannot be pickled ({type(exc).__name__}: {exc}). Create it "
                           "inside the function, or in a context class's __aenter__, instead of "
                           "referencing it from the notebook.") from None
    return buffer.getvalue(), pickler.code_by_value, frozenset(pickler.refs)


def modules_used_by(name: str, value: Any) -> set[str]:
    """Modules whose classes or functions a value holds: unpickling it imports them on the worker."""
    found = set()
    for _, item in _reachable(name, value):
        for obj in (item, type(item)):
            module = getattr(obj, "__module__", None) if isinstance(obj, (type, types.FunctionType)) else None
            if isinstance(module, str):
                found.add(module)
    return found
