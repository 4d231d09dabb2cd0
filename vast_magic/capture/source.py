"""Source text of live functions and classes, notebook cells included.

``inspect`` finds functions defined in cells (IPython registers every cell in
``linecache``) but not classes: ``inspect.getsource(cls)`` looks for the file
of ``cls.__module__``, and ``__main__`` has none in a kernel. For classes we
go through a method's code object to the cell, else through the file of the
namespace the class ran in (``%run``), else through the ``In`` history.
Everything found is checked against the live object (a function's compiled
code, a class's members), so a file edited after import or a stale cell is
never shipped in place of the code that runs.
"""
from __future__ import annotations

import __future__
import ast
import functools
import importlib.machinery
import inspect
import linecache
import os
import textwrap
import types
from typing import Any, Callable, Iterator, Mapping

from ..errors import CaptureError

__all__ = ["function_source", "class_source", "strip_decorators", "own_methods"]

_WHERE = "Define it in a notebook cell or a module file (code made with exec/eval has no source)."


def function_source(fn: Callable, name: str) -> str:
    """Dedented source of a (possibly decorated) function, decorators included, checked against its code.

    The source is looked up where the code object says it starts; when that is
    not the function any more (the file changed, or IPython 9's autoreload
    patched the code from a snippet, so its line numbers start at 1), the
    function's definition is looked up by name in the file as it is now and
    taken only if it compiles to the code that runs.
    """
    target = inspect.unwrap(fn)
    try:
        lines, _ = inspect.getsourcelines(target)
    except (OSError, TypeError) as exc:
        raise CaptureError(f"Cannot find the source of function {name!r} ({exc}). {_WHERE}") from None
    source = _at_its_line(target, textwrap.dedent("".join(lines))) or _by_its_name(target)
    if source is None:
        raise CaptureError(
            f"The source of function {name!r} in {target.__code__.co_filename} no longer matches the code that "
            "runs: the file changed after it was imported. Reload the module (importlib.reload(module), or "
            "%autoreload in IPython) or restart, then deploy again.")
    return _checked(source, name)


def _at_its_line(target: Any, source: str) -> str | None:
    """``source`` if it defines ``target`` as the file on disk compiles it, else None."""
    code = target.__code__
    try:
        if _first_definition(source).name != code.co_name:
            return None
    except SyntaxError:
        return None
    if not _compiled_by_the_import_system(target) or not os.path.isfile(code.co_filename):
        return source           # a cell (its text never changes), or code an import hook rewrote (pytest)
    module = _compile_text("".join(linecache.getlines(code.co_filename)), code.co_flags & _FUTURE_FLAGS)
    found = _find_code(module, code.co_name, code.co_firstlineno)
    return source if found is not None and _same_code(found, code) else None


def _by_its_name(target: Any) -> str | None:
    """The top-level definition named like ``target`` in its file now, if it compiles to ``target``'s code."""
    code = target.__code__
    text = "".join(linecache.getlines(code.co_filename))
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name:
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            source = textwrap.dedent("".join(text.splitlines(keepends=True)[start - 1:node.end_lineno]))
            found = _find_code(_compile_text(source, code.co_flags & _FUTURE_FLAGS), code.co_name, None)
            if found is not None and _same_code(found, code):
                return source
    return None


def _compiled_by_the_import_system(target: Any) -> bool:
    """Plain source files (not cells) whose code no import hook rewrote (pytest rewrites asserts)."""
    loader = target.__globals__.get("__loader__")
    return loader is None or type(loader) is importlib.machinery.SourceFileLoader


_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


@functools.lru_cache(maxsize=64)
def _compile_text(text: str, flags: int) -> types.CodeType | None:
    try:
        return compile(text, "<vast_magic check>", "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


def _find_code(module: types.CodeType | None, name: str, line: int | None) -> types.CodeType | None:
    """The code object named ``name`` (first defined on ``line``, if given) anywhere in ``module``."""
    pending = [module] if module is not None else []
    while pending:
        code = pending.pop()
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                if const.co_name == name and line in (None, const.co_firstlineno):
                    return const
                pending.append(const)
    return None


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Same bytecode, names and constants (nested code compared the same way); line numbers aside."""
    if (a.co_code, a.co_names, a.co_varnames, a.co_freevars) != (b.co_code, b.co_names, b.co_varnames, b.co_freevars):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            if not _same_code(x, y):
                return False
        elif type(x) is not type(y) or not (x == y or repr(x) == repr(y)):
            return False
    return True


def class_source(cls: type, name: str, namespace: Mapping[str, Any] | None = None) -> str:
    """Dedented source of a class: from its module file, its cell, the file it was ``%run`` from, or ``In[...]``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        if _matches_class(_first_definition(source), cls):
            return _checked(source, name)
    except (OSError, TypeError, SyntaxError):
        pass  # defined in a cell: inspect cannot see it
    for text, node in _class_candidates(cls, namespace or {}):
        if _matches_class(node, cls):
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            block = "\n".join(text.splitlines()[start - 1:node.end_lineno]) + "\n"
            return _checked(textwrap.dedent(block), name)
    raise CaptureError(f"Cannot find the source of class {name!r}: no notebook cell or module defines "
                       f"`class {cls.__name__}` as it is now. Define it (again) in a cell or a module file, "
                       "and re-run that cell.")


def strip_decorators(source: str, namespace: dict[str, Any], drop: Callable[[Any], bool]) -> str:
    """Remove the decorators whose root name resolves in ``namespace`` to an object ``drop`` accepts.

    Our own ``@app.remote(...)`` / ``@app.context(...)`` register the function
    in the client; on the worker the registry does that, so they must not run.
    Other decorators stay (and their names become dependencies).
    """
    node = _first_definition(source)
    kept = [d for d in node.decorator_list if not _drops(d, namespace, drop)]
    if len(kept) == len(node.decorator_list):
        return source
    lines = source.splitlines(keepends=True)
    header = "".join(f"@{ast.get_source_segment(source, d)}\n" for d in kept)
    return header + "".join(lines[node.lineno - 1:node.end_lineno])


def _drops(decorator: ast.expr, namespace: dict[str, Any], drop: Callable[[Any], bool]) -> bool:
    root = decorator
    while not isinstance(root, ast.Name):
        if isinstance(root, ast.Call):
            root = root.func
        elif isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        else:
            return False
    return root.id in namespace and drop(namespace[root.id])


def _first_definition(source: str) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    body = ast.parse(source).body
    if not body or not isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        raise SyntaxError("source does not start with a def or class statement")
    return body[0]


def _checked(source: str, name: str) -> str:
    """The shipped text must parse on its own as one top-level definition."""
    try:
        _first_definition(source)
    except SyntaxError as exc:
        raise CaptureError(f"The source found for {name!r} does not parse on its own ({exc}). "
                           "Define it at the top level of a cell or module.") from None
    return source


# -- classes defined in cells -------------------------------------------------
def own_methods(cls: type) -> Iterator[tuple[str, Any]]:
    """``(qualname, function)`` of the methods written in the class body, not generated (dataclass, Enum)
    nor wrapped by a library (dataclass's ``__repr__`` wrapper lives in dataclasses.py)."""
    prefix = cls.__qualname__ + "."
    for member in vars(cls).values():
        for fn in (getattr(member, "__func__", None), getattr(member, "fget", None),
                   getattr(member, "func", None), member):
            function = inspect.unwrap(fn) if callable(fn) else fn
            code = getattr(function, "__code__", None)
            if code is None:
                continue
            qualname = _compiled_qualname(code) or ""
            if qualname.startswith(prefix):
                yield qualname, function
                break


def _compiled_qualname(code: Any) -> str | None:
    """The qualified name the compiler gave ``code``, whatever a decorator renamed since.

    That is ``co_qualname`` on Python 3.11+. Python 3.10 has no such attribute and a
    function's ``__qualname__`` is no substitute (dataclass renames the ``__init__`` it
    generates to ``Cls.__init__``), so there the name comes from the def statement at
    ``co_firstlineno`` in the code's source; generated code without source has none.
    """
    qualname = getattr(code, "co_qualname", None)
    if qualname is not None:
        return qualname
    text = "".join(linecache.getlines(code.co_filename))
    return _def_qualnames(text).get((code.co_firstlineno, code.co_name))


@functools.lru_cache(maxsize=32)
def _def_qualnames(text: str) -> dict[tuple[int, str], str]:
    """``{(first line, name): qualname}`` of every def in ``text`` (first line = first decorator's)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    found: dict[tuple[int, str], str] = {}
    pending: list[tuple[ast.AST, str]] = [(tree, "")]
    while pending:
        node, prefix = pending.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                found[(first, child.name)] = prefix + child.name
                pending.append((child, f"{prefix}{child.name}.<locals>."))
            elif isinstance(child, ast.ClassDef):
                pending.append((child, f"{prefix}{child.name}."))
            else:
                pending.append((child, prefix))
    return found


def _user_codes(cls: type) -> Iterator[tuple[str, Any]]:
    """``(method qualname, code)`` of the methods written in the class body."""
    for qualname, function in own_methods(cls):
        yield qualname, function.__code__


def _class_candidates(cls: type, namespace: Mapping[str, Any]) -> Iterator[tuple[str, ast.ClassDef]]:
    """Class statements named like ``cls``: in the cells or files its methods come from, the file of
    the namespace it ran in, then ``In``."""
    for _, code in _user_codes(cls):
        text = "".join(linecache.getlines(code.co_filename))
        for node in _parsed_classes(text, cls.__name__, nested=True):
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if start <= code.co_firstlineno <= node.end_lineno:
                yield text, node
    file = namespace.get("__file__")
    if isinstance(file, str) and file.endswith(".py"):
        text = "".join(linecache.getlines(file))
        for node in _parsed_classes(text, cls.__name__, nested=False):
            yield text, node
    for text in reversed(_input_history()):
        for node in _parsed_classes(text, cls.__name__, nested=False):
            yield text, node


def _parsed_classes(text: str, name: str, nested: bool) -> list[ast.ClassDef]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    nodes = ast.walk(tree) if nested else iter(tree.body)
    return [n for n in nodes if isinstance(n, ast.ClassDef) and n.name == name]


def _input_history() -> list[str]:
    """The ``In`` list of the running IPython shell (transformed cell sources), or nothing."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return []
    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell is not None else []
    return [text for text in history if isinstance(text, str)]


def _matches_class(node: ast.ClassDef, cls: type) -> bool:
    """The class statement defines the same methods, attributes and annotations as the live class.

    Generated members (dataclass ``__init__``, Enum ``_member_map_``) are
    dunder or sunder names, which only the live side has, so they are skipped.
    """
    if not isinstance(node, ast.ClassDef) or node.name != cls.__name__:
        return False
    body = _body_names(node, cls)
    live = {name for name in vars(cls) if not _generated_name(name)}
    live_methods = {qualname[len(cls.__qualname__) + 1:] for qualname, _ in _user_codes(cls)}
    annotated = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return (live <= body and live_methods <= body and {n for n in body if not _generated_name(n)} <= live | annotated
            and annotated == set(vars(cls).get("__annotations__", {})))


def _body_names(node: ast.ClassDef, cls: type) -> set[str]:
    """Names the class body binds (private names mangled as Python does)."""
    names: set[str] = set()
    for statement in node.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    prefix = "_" + cls.__name__.lstrip("_")
    return {prefix + n if n.startswith("__") and not n.endswith("__") else n for n in names}


def _generated_name(name: str) -> bool:
    return len(name) > 2 and name[0] == name[-1] == "_"
