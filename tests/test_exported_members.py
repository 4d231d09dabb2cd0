"""The public surface is pinned: what ``vast_magic`` exports, and that every internal module says what it exports.

As httpx's tests/test_exported_members.py: the public names cannot grow (or
shrink) by accident. Internal modules are private (a leading underscore) or
list their names in ``__all__``, and a name one module imports from another
is one of those listed names.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types

import vast_magic
from tests.package_modules import module_files

EXPORTED = [
    "BackendError", "Bundle", "BundleError", "CallCancelledError", "CallTimeoutError", "CaptureError", "ConfigError",
    "DeployError", "Deployment", "DeploymentStatus", "DeployReport", "EngineConnectionLostError",
    "EngineUnavailableError", "Fingerprint", "Image", "load_ipython_extension", "LogLine", "OverloadedError",
    "RemoteError", "Secret", "unload_ipython_extension", "UntrustedTypeError", "VastAPIError", "VastAuthError",
    "VastMagicError", "VastNotFoundError", "VastRateLimitedError", "VastRejectedError", "VastUnavailableError",
    "VastUploadError", "WorkerInfo", "WorkerLostError",
]
FILES = module_files()


def test_exports_are_pinned_and_sorted():
    assert vast_magic.__all__ == EXPORTED == sorted(EXPORTED, key=str.casefold)


def test_every_public_member_is_exported_and_every_export_resolves():
    """In a fresh interpreter: the public attributes after ``import vast_magic`` (submodules aside) plus the
    lazily imported ones are exactly ``__all__``."""
    code = ("import __future__, types, vast_magic as m\n"
            "print(sorted(n for n, v in vars(m).items() if not n.startswith('_') and not isinstance(v, types.ModuleType)"
            " and v is not __future__.annotations))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    eager = set(ast.literal_eval(done.stdout))
    lazy = {"Deployment", "Image"}
    assert eager | lazy == set(EXPORTED) and not eager & lazy
    for name in EXPORTED:
        assert getattr(vast_magic, name) is not None
        assert not isinstance(getattr(vast_magic, name), types.ModuleType)


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and part not in ("__main__",) for part in module.split("."))


def _top_level(tree: ast.Module) -> tuple[set[str], list[str] | None]:
    """Names a module defines or imports at top level, and its ``__all__`` (None if it has none)."""
    names, exported = set(), None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}     # ``A, B = ...`` too
                if isinstance(target, ast.Name) and target.id == "__all__":
                    literal = _literal_or_none(node.value)
                    exported = ["<computed>"] if literal is None else literal
    return names, exported


def _literal_or_none(node: ast.expr) -> list[str] | None:
    try:
        return list(ast.literal_eval(node))
    except ValueError:
        return None


def exported_names(module: str) -> list[str] | None:
    """A module's ``__all__``: read from its source, or imported when it is computed (vast_magic.query)."""
    exported = _top_level(TREES[module])[1]
    if exported == ["<computed>"]:
        return list(importlib.import_module(module).__all__)
    return exported


TREES = {name: ast.parse(path.read_text()) for name, path in FILES.items()}


def test_internal_modules_are_private_or_set_all():
    missing = sorted(name for name, tree in TREES.items()
                     if not _is_private(name) and _top_level(tree)[1] is None)
    assert missing == []
    for name, tree in TREES.items():
        defined, exported = _top_level(tree)
        if exported == ["<computed>"] or "__getattr__" in defined:      # computed, or lazily imported names
            module = importlib.import_module(name)
            assert all(hasattr(module, item) for item in module.__all__), name
        else:
            assert set(exported or ()) <= defined, (name, set(exported or ()) - defined)


def test_modules_import_only_what_others_export():
    """``from a.b import name`` inside the package names a submodule or something in a.b's ``__all__``."""
    wrong = []
    for name, tree in TREES.items():
        package = name if FILES[name].name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            if source not in TREES or _is_private(source):
                continue
            exported = exported_names(source)
            if exported is None:
                continue
            wrong += [f"{name}: from {source} import {alias.name}" for alias in node.names
                      if alias.name not in exported and f"{source}.{alias.name}" not in TREES]
    assert wrong == []
