"""Writing and reading the bundle: a reproducible tar.gz (docs/internals.md "Bundle layout").

Same inputs give the same bytes whatever the output path or the clock:
members sorted, mtime 0, root/root, modes 0644/0755, and a gzip header with no
file name and mtime 0. The file appears atomically (temp file + rename), so a
reader never sees half a bundle. Secrets never enter it: ``config.json`` holds
plain env values only; secrets reach workers through the backend.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..capture.model import SourceDef, location
from ..errors import BundleError
from ..reports import Bundle
from ..runtime import wire
from ..runtime._compat import cloudpickle
from .codegen import generated_files
from .manifest import Manifest
from .registry_spec import ContextSpec, RemoteSpec
from .vast_entry import ENTRY_FILE, deployment_source

__all__ = [
    "REGISTRY_FILE", "MANIFEST_FILE", "CONFIG_FILE", "RUNTIME_PACKAGE", "write_bundle", "bundle_files",
    "config_json", "registry_bytes", "runtime_files", "copy_files", "tar_bytes", "read_bundle_manifest"
]

REGISTRY_FILE = "vast_magic_registry.pkl"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
RUNTIME_PACKAGE = "vast_magic_runtime"
_RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"


def write_bundle(path: str | Path, *, manifest: Manifest, code: Any, remotes: tuple[RemoteSpec, ...],
                 contexts: tuple[ContextSpec, ...], image: Any, backend: str = "local") -> Bundle:
    """Build the bundle for ``manifest`` at ``path`` and describe it."""
    files = bundle_files(manifest=manifest, code=code, remotes=remotes, contexts=contexts, image=image, backend=backend)
    target = Path(path)
    data = tar_bytes(files)
    _write_atomically(target, data)
    return Bundle(str(target), manifest.fingerprint(), tuple(sorted(files)))


def bundle_files(*, manifest: Manifest, code: Any, remotes: tuple[RemoteSpec, ...], contexts: tuple[ContextSpec, ...],
                 image: Any, backend: str) -> dict[str, bytes]:
    """Member name (relative, or absolute for a Vast copy) -> content."""
    files: dict[str, bytes] = {
        CONFIG_FILE: config_json(manifest.name, image).encode(),
        ENTRY_FILE: deployment_source(manifest.name, code, remotes, contexts, manifest.fingerprint().code).encode(),
        MANIFEST_FILE: manifest.to_json().encode(),
        REGISTRY_FILE: registry_bytes(code, remotes, contexts),
    }
    extra = dict(runtime_files())
    for path, content in generated_files(manifest.name, code).items():
        extra[_relative(path, f"generated module {path}")] = content
    for module in code.file_modules:
        extra[_relative(module.relpath, f"local module {module.module}")] = module.content
    for src, dst in image.copies:
        extra.update(copy_files(src, dst, backend))
    clashes = sorted(set(files) & set(extra))
    if clashes:
        raise BundleError(f"bundle paths {clashes} are used by vast_magic itself; copy or name your files (or "
                          "modules) elsewhere.")
    files.update(extra)
    return files


def config_json(name: str, image: Any) -> str:
    """The official ``Config`` record, key order and separators exactly as the SDK writes it."""
    record = {"name": name, "pip_installs": list(image.pip), "apt_gets": list(image.apt),
              "envs": [[key, value] for key, value in image.plain_env()],
              "runs": [run if isinstance(run, str) else list(run) for run in image.runs]}
    return json.dumps(record)


class _RegistryPickler(cloudpickle.CloudPickler):
    """Shipped classes inside benchmark data travel by reference, as on the call wire."""

    def __init__(self, file, class_refs: dict):
        super().__init__(file, protocol=wire.PROTOCOL)
        self._class_refs = class_refs

    def persistent_id(self, obj):
        if isinstance(obj, type) and obj in self._class_refs:
            return (wire.CLASS_REF, self._class_refs[obj])
        return None


def registry_bytes(code: Any, remotes: tuple[RemoteSpec, ...], contexts: tuple[ContextSpec, ...]) -> bytes:
    """What the worker loads: the generated modules to import, and each registered name's location."""
    registry = {"modules": [module.name for module in code.source_modules],
                "remotes": [spec.to_dict() for spec in remotes], "contexts": [spec.to_dict() for spec in contexts],
                "classes": [location(module.name, item.name) for module in code.source_modules for item in module.items
                            if isinstance(item, SourceDef) and item.kind == "class"]}
    class_refs = {obj: where for where, obj in code.class_objects}
    out = io.BytesIO()
    try:
        _RegistryPickler(out, class_refs).dump(registry)
    except Exception as exc:
        raise BundleError(f"the benchmark data or context arguments cannot be pickled ({exc}); "
                          "use plain values (numbers, strings, lists, dicts, arrays).") from exc
    return out.getvalue()


def runtime_files() -> list[tuple[str, bytes]]:
    """The worker runtime as ``vast_magic_runtime/`` with cloudpickle vendored under ``_vendor/``."""
    found = _python_files(_RUNTIME_DIR, RUNTIME_PACKAGE)
    vendored = Path(cloudpickle.__file__).resolve().parent
    return found + _python_files(vendored, f"{RUNTIME_PACKAGE}/_vendor/cloudpickle")


def _python_files(root: Path, prefix: str) -> list[tuple[str, bytes]]:
    if not root.is_dir():
        raise BundleError(f"{root} is missing: the vast_magic installation is incomplete; reinstall it.")
    return [(f"{prefix}/{p.relative_to(root).as_posix()}", p.read_bytes())
            for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts]


def copy_files(src: str, dst: str, backend: str) -> dict[str, bytes]:
    """One ``Image.copy``: a file, or a directory walked to ``dst/relative``."""
    if dst.startswith("/"):
        if backend != "vast":
            raise BundleError(f"copy destination {dst!r} is absolute: absolute destinations are Vast-only "
                              f"(backend='vast'); use a relative dst such as {dst.lstrip('/')!r}.")
        base = posixpath.normpath(dst)
    else:
        base = _relative(dst, f"copy destination {dst!r}")
    source = Path(src)
    if source.is_file():
        return {base: source.read_bytes()}
    if not source.is_dir():
        raise BundleError(f"copy source {src!r} does not exist; fix image.copy(...) and build again.")
    return {posixpath.join(base, p.relative_to(source).as_posix()): p.read_bytes()
            for p in sorted(source.rglob("*")) if p.is_file()}


def _relative(name: str, what: str) -> str:
    clean = posixpath.normpath(name.replace(os.sep, "/"))
    if clean in (".", "") or clean.startswith("../") or clean == "..":
        raise BundleError(f"{what} must stay inside the bundle (no '..'); use a path like 'data/file'.")
    return clean


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """The reproducible tar.gz of ``files`` (directories added for every parent)."""
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(set(files) | _parents(files), key=_member_name):
                content = files.get(name)
                info = tarfile.TarInfo(_member_name(name))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
                if content is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.mode, info.size = 0o644, len(content)
                    tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def _member_name(name: str) -> str:
    return name if name.startswith("/") else f"./{name}"


def _parents(files: dict[str, bytes]) -> set[str]:
    parents = set()
    for name in files:
        if name.startswith("/"):
            continue  # never a directory entry for /opt or /: extracting one would reset its mode
        parent = posixpath.dirname(name)
        while parent not in ("", "/"):
            parents.add(parent)
            parent = posixpath.dirname(parent)
    return parents


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bundle_manifest(path: str | Path) -> Manifest:
    """The Manifest stored in a bundle's ``manifest.json``."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.extractfile(f"./{MANIFEST_FILE}")
            text = member.read().decode() if member else None
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise BundleError(f"{path} is not a vast_magic bundle with a manifest ({exc}); rebuild it.") from None
    if text is None:
        raise BundleError(f"{path}: manifest.json is not a regular file; rebuild the bundle.")
    return Manifest.from_json(text)
