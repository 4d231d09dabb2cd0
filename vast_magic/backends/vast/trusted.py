"""What an answer from a Vast worker may contain: an allow-list of types for a restricted unpickler.

A Vast host is a third party on a marketplace, and a pickle can name any
callable (``os.system``, ``builtins.exec``, ``subprocess.Popen``) to run while
it is loaded. So answers from Vast are unpickled with ``find_class`` limited to:

- plain values: the builtin scalars and containers, ``Ellipsis``; builtin
  exceptions; ``datetime``, ``decimal``, ``fractions``, ``uuid``,
  ``collections`` and ``pathlib`` value types;
- numpy arrays, scalars and dtypes (and the reconstruct functions they need);
- exception classes of modules already imported here (no import is ever
  triggered by a name the worker sent);
- the deployment's own shipped classes (they travel by reference, never by name);
- what the user trusts: ``Deployment(trusted_types=[SomeClass, "package"])``,
  a class, or a module name that trusts that module and its submodules.

Anything else raises ``UntrustedTypeError`` naming it and saying how to trust
it; nothing of that answer is used. The local engine keeps full pickle: its
workers are this user's own processes behind the token.
"""
from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ...errors import ConfigError, UntrustedTypeError
from ...runtime import wire

__all__ = ['RestrictedUnpickler', 'TypePolicy', 'loads', 'normalize']

_PATHS = frozenset({"PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath"})
SAFE_NAMES: Mapping[str, frozenset[str]] = {
    "builtins": frozenset({"int", "float", "complex", "bool", "str", "list", "tuple", "dict", "set", "frozenset",
                           "slice", "range", "Ellipsis", "NotImplemented"}),
    "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "deque", "Counter"}),
    "pathlib": _PATHS,
    "pathlib._local": _PATHS,                                 # where Python 3.13 defines them
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),    # numpy 1.x
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),   # numpy 2.x
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "vast_magic.errors": frozenset({"_rebuild_remote_error"}),         # a RemoteError: built from strings
}
_DTYPE_CLASS = re.compile(r"[A-Za-z0-9]+DType\Z")                     # numpy.dtypes.Float64DType & co
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def normalize(trusted_types: Any) -> tuple[str, ...]:
    """``trusted_types`` as given to ``Deployment`` -> ``("module:Qualname", "package", ...)``; ConfigError if bad."""
    if trusted_types is None:
        return ()
    if isinstance(trusted_types, (str, bytes, type)) or not isinstance(trusted_types, Iterable):
        raise ConfigError(f"trusted_types must be a list of classes or module names, e.g. "
                          f"trusted_types=[pandas.DataFrame] or trusted_types=['pandas']; got {trusted_types!r}.")
    found = []
    for item in trusted_types:
        if isinstance(item, type):
            found.append(f"{item.__module__}:{item.__qualname__}")
        elif isinstance(item, str) and _MODULE.match(item):
            found.append(item)
        else:
            raise ConfigError(f"trusted_types: {item!r} is neither a class nor a module name like 'pandas' or "
                              "'mypkg.models'; pass the class itself (trusted_types=[MyClass]) or its module name.")
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class TypePolicy:
    """The allow-list for one call: the fixed safe names plus what the user trusted."""

    trusted: tuple[str, ...] = ()

    def allows(self, module: str, name: str) -> bool:
        if name in SAFE_NAMES.get(module, ()) or (module == "numpy.dtypes" and _DTYPE_CLASS.match(name)):
            return True
        if f"{module}:{name}" in self.trusted:
            return True
        if any(module == m or module.startswith(m + ".") for m in self.trusted if ":" not in m):
            return True
        return _is_loaded_exception(module, name)


def _is_loaded_exception(module: str, name: str) -> bool:
    """An exception class of a module already imported here (looked up without importing anything)."""
    obj: Any = sys.modules.get(module)
    for part in name.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return isinstance(obj, type) and issubclass(obj, BaseException)


class RestrictedUnpickler(wire.RefUnpickler):
    """``wire``'s unpickler (shipped classes by reference, out-of-band buffers) with ``find_class`` limited."""

    def __init__(self, file, buffers, resolve_class: Mapping[str, type], policy: TypePolicy):
        super().__init__(file, buffers, resolve_class)
        self._policy = policy

    def find_class(self, module: str, name: str):
        if not self._policy.allows(module, name):
            shown = f"{module}.{name}"
            raise UntrustedTypeError(
                f"the Vast worker's answer contains {shown}, which answers from Vast may not carry: a Vast host is "
                "a third party and unpickling it could run code on this machine. Nothing of this answer was used. "
                f"If you trust it, allow it: Deployment(..., trusted_types=[{shown}]) (the class itself), or "
                f"trusted_types=[{module.split('.')[0]!r}] for its whole package.", shown)
        return super().find_class(module, name)


def loads(main: bytes, buffers=(), resolve_class: Mapping[str, type] | None = None,
          policy: TypePolicy = TypePolicy()) -> Any:
    """``wire.loads`` for an answer from a third party."""
    return RestrictedUnpickler(io.BytesIO(main), list(buffers), resolve_class or {}, policy).load()
