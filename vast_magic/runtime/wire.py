"""Values on the wire: cloudpickle protocol 5 with out-of-band buffers, and error envelopes.

Out-of-band buffers keep a big numpy array out of the pickle (it travels as a
frame buffer, see ``framing``). Classes shipped in the bundle travel *by
reference* (``persistent_id`` -> ``("vast_magic_class", name)``) so an instance
of a cell class is rebuilt with the receiving side's class and ``isinstance``
holds on both sides. Exceptions cross as envelopes of plain strings, because an
exception object may not unpickle on the other side and its message must never
be lost.
"""
from __future__ import annotations

import io
import pickle
import traceback
from typing import Any, Mapping

from ._compat import cloudpickle

__all__ = ["PROTOCOL", "CLASS_REF", "dumps", "loads", "qualified_name", "error_envelope"]

PROTOCOL = 5
CLASS_REF = "vast_magic_class"


class _RefPickler(cloudpickle.CloudPickler):
    def __init__(self, file, class_refs: Mapping[type, str], buffer_callback):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self._class_refs = class_refs

    def persistent_id(self, obj):
        if isinstance(obj, type) and self._class_refs:
            name = self._class_refs.get(obj)
            if name is not None:
                return (CLASS_REF, name)
        return None


class RefUnpickler(pickle.Unpickler):
    def __init__(self, file, buffers, resolve_class: Mapping[str, type]):
        super().__init__(file, buffers=buffers)
        self._resolve_class = resolve_class

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == CLASS_REF:
            try:
                return self._resolve_class[pid[1]]
            except KeyError:
                raise pickle.UnpicklingError(f"unknown shipped class {pid[1]!r}") from None
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")


_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_PLAIN_LIMIT = 64                  # items looked at before giving up on the fast path


def _plain(obj: Any, budget: list[int]) -> bool:
    """Only builtin scalars in builtin containers (a call request, a small answer): pickle's own
    result is then exactly cloudpickle's, at a fifth of its cost. Gives up after ``_PLAIN_LIMIT`` containers."""
    kind = type(obj)
    if kind in _PLAIN_SCALARS:
        return True
    budget[0] -= 1
    if budget[0] < 0:
        return False
    if kind is tuple or kind is list:
        for item in obj:
            if type(item) not in _PLAIN_SCALARS and not _plain(item, budget):
                return False
        return True
    if kind is dict:
        for key, value in obj.items():
            if type(key) is not str or (type(value) not in _PLAIN_SCALARS and not _plain(value, budget)):
                return False
        return True
    return False


def dumps(obj: Any, class_refs: Mapping[type, str] | None = None, *,
          unchecked: Any = None) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; big contiguous buffers come back separately, uncopied.

    ``unchecked``: the parts of ``obj`` that may hold more than plain values, when the caller built the
    rest from plain ones (a request's arguments): only they are looked at for the fast path."""
    if _plain(obj if unchecked is None else unchecked, [_PLAIN_LIMIT]):
        return pickle.dumps(obj, PROTOCOL), []
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    if class_refs:
        _RefPickler(out, class_refs, buffers.append).dump(obj)
    else:                          # no persistent_id: pickle would call it (Python) for every object
        cloudpickle.CloudPickler(out, protocol=PROTOCOL, buffer_callback=buffers.append).dump(obj)
    return out.getvalue(), [b.raw() for b in buffers]


def loads(main: bytes, buffers=(), resolve_class: Mapping[str, type] | None = None) -> Any:
    """Inverse of ``dumps``; ``resolve_class`` maps shipped class names to local classes."""
    if not resolve_class and not buffers:      # nothing to resolve: the C unpickler alone, no Python subclass
        try:
            return pickle.loads(main)
        except pickle.UnpicklingError as exc:
            if "persistent" in str(exc):
                raise pickle.UnpicklingError("unknown shipped class: this side knows none") from None
            raise
    return RefUnpickler(io.BytesIO(main), list(buffers), resolve_class or {}).load()


def qualified_name(cls: type) -> str:
    return f"{getattr(cls, '__module__', None) or 'builtins'}.{getattr(cls, '__qualname__', cls.__name__)}"


def error_envelope(exc: BaseException) -> dict[str, str]:
    """Type, message and traceback of ``exc`` as strings; never raises, whatever ``exc`` does."""
    return {"type": _safe(lambda: qualified_name(type(exc)), "builtins.BaseException"),
            "message": _safe(lambda: str(exc), None) or _message_fallback(exc),
            "traceback": _safe(lambda: "".join(traceback.format_exception(exc)),
                               "(traceback unavailable)")}


def _message_fallback(exc: BaseException) -> str:
    if _safe(lambda: str(exc), None) == "":
        return ""
    return _safe(lambda: repr(exc), f"<unprintable {type(exc).__name__} object>")


def _safe(make, fallback):
    try:
        return make()
    except Exception:
        return fallback
