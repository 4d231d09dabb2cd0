"""Bundles on disk: checked extraction once per version, one copy per worker.

A bundle is extracted once into ``home/bundles/<digest>/`` where digest is the
SHA-256 of the tar.gz bytes (two bundles with the same code fingerprint may
still differ in ``config.json`` or ``manifest.json``, so the bytes are the
safe key). Each worker then runs in its own *copy* of that folder: ``runs``
scripts and user code may write next to themselves, and a hardlinked tree
would let an in-place write through one worker's link change every other
worker's (and the cached) file. Bundles are small, so a real copy is cheap.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from ...errors import BundleError

MAX_MEMBER_BYTES = 2 * 1024**3
MAX_TOTAL_BYTES = 8 * 1024**3
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# Extraction filters (PEP 706) came with 3.12 and the 3.10.12 / 3.11.4 security releases. Every
# member is checked here before extraction; the "data" filter is a second guard where it exists.
EXTRACT_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def is_disk_error(exc: BaseException) -> bool:
    """A full, read-only or forbidden disk (the user fixes the home), not a broken bundle."""
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


DISK_HINT = "free some space in VAST_MAGIC_HOME or point VAST_MAGIC_HOME at a writable folder"


def _check_member(member: tarfile.TarInfo, root: Path, max_member: int) -> None:
    """Raise BundleError for a member that could escape ``root`` or is not a plain file/dir/link."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
        raise BundleError(f"bundle member {member.name!r} has an absolute or '..' path; rebuild the bundle.")
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise BundleError(f"bundle member {member.name!r} is a device, fifo or special file; only files, folders and links are allowed.")
    if member.size > max_member:
        raise BundleError(f"bundle member {member.name!r} is {member.size} bytes, above the {max_member}-byte limit.")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = root / name.parent if member.issym() else root
        resolved = Path(os.path.normpath(base / target))
        if target.is_absolute() or not (resolved == root or root in resolved.parents):
            raise BundleError(f"bundle member {member.name!r} links to {member.linkname!r}, outside the bundle.")


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike, *, max_member: int = MAX_MEMBER_BYTES,
                 max_total: int = MAX_TOTAL_BYTES) -> Path:
    """Extract ``tar_path`` into ``dest`` after checking every member; nothing is written on refusal."""
    root = Path(dest).absolute()
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, root, max_member)
            total = sum(m.size for m in members)
            if total > max_total:
                raise BundleError(f"bundle unpacks to {total} bytes, above the {max_total}-byte limit.")
            root.mkdir(parents=True, exist_ok=True)
            tar.extractall(root, members=members, **EXTRACT_FILTER)
    except OSError as exc:
        if is_disk_error(exc):
            raise BundleError(f"cannot unpack the bundle into {root}: {exc.strerror}; {DISK_HINT}. "
                              "The previous version keeps serving.") from exc
        raise BundleError(f"cannot read bundle {tar_path}: {exc}; rebuild it with app.build_bundle().") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"cannot read bundle {tar_path}: {exc}; rebuild it with app.build_bundle().") from exc
    return root


def bundle_digest(tar_path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(tar_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def extracted_bundle(home: Path, tar_path: str | os.PathLike) -> Path:
    """The cached extraction of ``tar_path`` (made once; atomic rename so a crash leaves no half tree)."""
    final = Path(home) / "bundles" / bundle_digest(tar_path)
    if final.is_dir():
        return final
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=final.parent))
    try:
        safe_extract(tar_path, staging)
        try:
            staging.rename(final)
        except OSError:          # another apply extracted it first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def worker_dir(source: Path, dest: Path) -> Path:
    """A private, writable copy of an extracted bundle for one worker."""
    shutil.copytree(source, dest, symlinks=True)
    for folder, dirs, files in os.walk(dest):
        for item in dirs + files:
            path = os.path.join(folder, item)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    return dest
