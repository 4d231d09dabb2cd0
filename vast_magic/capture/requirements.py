"""Third-party packages the shipped code imports, and the ones the image does not install.

Capture collects the top-level names of every import the shipped code can run
(import lines, imports inside function bodies, the imports of local module
files, the modules unpickling a value needs) that are neither stdlib nor shipped
with the bundle. At deploy, each one that no ``pip_install`` entry provides gets
a warning naming the package and the line to add. A warning, not an error: a
base image may already have it. Import names map to distribution names through
``importlib.metadata.packages_distributions`` (``yaml`` -> ``PyYAML``).
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from typing import Iterable, Sequence

__all__ = [
    "imported_names", "third_party", "normalize", "requirement_name", "distribution_for", "missing_packages",
    "requirement_warnings"
]

_NOT_THIRD_PARTY = frozenset({"__future__", "__main__", "vast_magic", "vast_magic_runtime"})
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


@functools.lru_cache(maxsize=4096)
def imported_names(source: str) -> frozenset[str]:
    """Top-level names of the absolute imports anywhere in ``source`` (relative ones stay in their package)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return frozenset(found)


def third_party(names: Iterable[str], shipped: Iterable[str]) -> tuple[str, ...]:
    """The names that are neither stdlib, nor ours, nor top-level modules shipped in the bundle."""
    local = set(shipped) | _NOT_THIRD_PARTY
    return tuple(sorted(n for n in set(names) if n and n not in sys.stdlib_module_names and n not in local))


def normalize(name: str) -> str:
    """PEP 503 name: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(entry: str) -> str | None:
    """The distribution a ``pip_install`` entry installs (``numpy>=2`` -> numpy), if it says."""
    egg = _EGG.search(entry)
    if egg:
        return normalize(egg.group(1))
    if "://" in entry or entry.lstrip().startswith(("-", ".", "/")):
        return None
    match = _REQUIREMENT_NAME.match(entry)
    return normalize(match.group(1)) if match else None


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, tuple[str, ...]]:
    try:
        return {name: tuple(dists) for name, dists in importlib.metadata.packages_distributions().items()}
    except Exception:  # a broken installed distribution must not stop a deploy
        return {}


def distribution_for(import_name: str) -> str:
    """The distribution that provides ``import_name`` here (the import name itself when unknown)."""
    dists = sorted(set(_distributions().get(import_name, ())))
    return dists[0] if dists else import_name


def missing_packages(packages: Iterable[str], pip: Sequence[str]) -> list[tuple[str, str]]:
    """``(import name, distribution)`` of each package no pip entry provides."""
    installed = {name for name in map(requirement_name, pip) if name}
    missing = []
    for package in sorted(set(packages)):
        candidates = {normalize(package)} | {normalize(d) for d in _distributions().get(package, ())}
        if not candidates & installed:
            missing.append((package, distribution_for(package)))
    return missing


def requirement_warnings(packages: Iterable[str], pip: Sequence[str], backend: str) -> tuple[str, ...]:
    """One warning per package the image does not install, with the line that fixes it."""
    where = ("Local workers use this machine's Python environment, so it works here; Vast workers get only "
             "what the image installs." if backend == "local" else
             "Ignore this if the base image already has it.")
    return tuple(f"remote code imports {package!r}, which the image does not pip-install: add "
                 f".pip_install({dist!r}) to app.image(...). {where}" for package, dist in missing_packages(packages, pip))
