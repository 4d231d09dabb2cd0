"""Which global names a piece of shipped source needs, and which it needs at definition time.

We compile the exact source we ship and read its bytecode instead of the live
function's: that covers decorators, default arguments, annotations, class
bases and class bodies (which have no code object on the live class) with one
rule, and it describes the code the worker will actually run.
"""
from __future__ import annotations

import ast
import dis
import functools
import inspect
import types
from dataclasses import dataclass

__all__ = ["UsedNames", "used_names", "code_globals", "attribute_uses"]

# Module attributes every namespace has; the worker's generated module has its own.
_MODULE_DUNDERS = frozenset({"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__",
                             "__builtins__", "__cached__", "__annotations__", "__path__"})
_INLINE_SCOPES = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_GLOBAL_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})


@dataclass(frozen=True)
class UsedNames:
    """Global names read by shipped source.

    ``all``: every global read anywhere (function bodies included).
    ``at_definition``: those read while the ``def``/``class`` statement itself
    runs (decorators, defaults, annotations, bases, class bodies): the items
    bound to them must be defined first.
    ``assigned``: names the code declares ``global`` and assigns, so their
    absence from the namespace right now is not an error.
    """

    all: frozenset[str]
    at_definition: frozenset[str]
    assigned: frozenset[str]


@functools.lru_cache(maxsize=4096)
def used_names(source: str, filename: str = "<vast_magic capture>") -> UsedNames:
    """Compile ``source`` (one top-level def or class) and collect the global names it reads.

    Cached by text (the result is immutable): a redeploy re-captures mostly unchanged functions.
    """
    everything: set[str] = set()
    at_definition: set[str] = set()
    assigned: set[str] = set()
    pending: list[tuple[types.CodeType, bool]] = [(compile(source, filename, "exec", dont_inherit=True), True)]
    while pending:
        code, definition_time = pending.pop()
        local_names = _names_stored_locally(code)
        for instruction in dis.get_instructions(code):
            name = instruction.argval
            if instruction.opname in _GLOBAL_STORES:
                assigned.add(name)
            elif instruction.opname in _LOADS and name not in _MODULE_DUNDERS:
                if instruction.opname == "LOAD_NAME" and name in local_names:
                    continue  # e.g. an Enum member used later in the same class body
                everything.add(name)
                if definition_time:
                    at_definition.add(name)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                pending.append((const, definition_time and _runs_immediately(const)))
    return UsedNames(frozenset(everything), frozenset(at_definition), frozenset(assigned))


def _names_stored_locally(code: types.CodeType) -> set[str]:
    """Names a module or class body binds itself (``STORE_NAME``); function scopes use fast locals."""
    if code.co_flags & inspect.CO_OPTIMIZED:
        return set()
    return {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_NAME"}


def _runs_immediately(code: types.CodeType) -> bool:
    """Class bodies and comprehensions run when their enclosing statement runs; function bodies later."""
    return code.co_name in _INLINE_SCOPES or not code.co_flags & inspect.CO_OPTIMIZED


def code_globals(code: types.CodeType) -> frozenset[str]:
    """Global names a live code object (and the code nested in it) reads: used to vet closures."""
    found: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        found.update(i.argval for i in dis.get_instructions(current) if i.opname in _LOADS)
        pending.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def attribute_uses(source: str) -> frozenset[tuple[str, str]]:
    """``(name, attr)`` for every ``name.attr`` read in ``source``.

    A global bound to a module that ships as source (``import mylib`` then
    ``mylib.helper(x)``) brings along exactly the attributes read from it.
    """
    return frozenset((node.value.id, node.attr) for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name))
