"""Local modules shipped as files: Python files of the user's project that workers cannot pip-install.

A module counts as local when its file lies outside the standard library,
site-packages and the vast_magic package (``origins.is_local_module``). It
ships as files (a package as all its ``.py`` files, so relative imports work)
at the path its dotted name implies, so the generated module's plain
``import helpers`` works on the worker unchanged. Files of modules that ship
as source are left out by capture: their generated module takes that path.
"""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

from ..errors import CaptureError
from .digests import filter_ignored_lines, sha256_text, source_digest
from .model import ModuleFile
from .origins import is_local_module

__all__ = ["top_level", "module_files", "file_parts", "local_dependencies"]


def top_level(module_name: str) -> types.ModuleType | None:
    """The already-imported top-level module or package of a dotted name."""
    return sys.modules.get(module_name.partition(".")[0])


def module_files(module: types.ModuleType) -> list[ModuleFile]:
    """The files shipping ``module``: its top-level package's ``.py`` files, or the single file."""
    top = top_level(module.__name__) or module
    file = Path(top.__file__).resolve()
    if getattr(top, "__path__", None) is None:
        return [_module_file(top.__name__, f"{top.__name__}.py", file)]
    package_dir = file.parent
    files = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        dotted = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        files.append(_module_file(dotted, relative.as_posix(), path))
    return files


def _module_file(dotted: str, relpath: str, path: Path) -> ModuleFile:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"Cannot read local module {dotted!r} from {path} ({exc}); it must stay on disk "
                           "while the deployment is built.") from None
    return ModuleFile(module=dotted, relpath=relpath, content=content, digest=_file_digest(content),
                      parts=file_parts(content))


def _file_digest(content: bytes) -> str:
    """Syntax-tree digest like cell code (comments do not count), raw bytes if it does not parse."""
    try:
        return source_digest(content.decode("utf-8"))
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return sha256_text(content)


def file_parts(content: bytes) -> tuple[tuple[str, str], ...]:
    """``(name, digest)`` per top-level def/class, then ``("", digest)`` of the rest and of the order.

    The Manifest stores these instead of one digest per file so a tier reason
    can say *which* function of a module changed. A file that does not parse
    is one part.
    """
    try:
        tree = ast.parse(filter_ignored_lines(content.decode("utf-8")))
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return (("", sha256_text(content)),)
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    named: dict[str, str] = {}
    rest: list = []
    for node in tree.body:
        if isinstance(node, definitions):
            named[node.name] = sha256_text(ast.dump(node))  # a later definition of the same name wins, as at run time
            rest.append(["def", node.name])
        else:
            rest.append(ast.dump(node))
    return tuple(sorted(named.items())) + (("", sha256_text(repr(rest))),)


def local_dependencies(module: types.ModuleType) -> list[types.ModuleType]:
    """Other local modules that ``module`` uses at its top level (imports of modules or their objects)."""
    found: dict[str, types.ModuleType] = {}
    own_top = module.__name__.partition(".")[0]
    for value in list(vars(module).values()):
        target = value if isinstance(value, types.ModuleType) else sys.modules.get(_module_name_of(value))
        if target is None or target.__name__.partition(".")[0] == own_top:
            continue
        if is_local_module(target):
            found[target.__name__] = target
    return [found[name] for name in sorted(found)]


def _module_name_of(value: object) -> str:
    name = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None
    return name if isinstance(name, str) else ""
