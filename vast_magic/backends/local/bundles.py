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

__all__ = [
    "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "EXTRACT_FILTER", "is_disk_error", "DISK_HINT", "resolve_inside",
    "safe_extract", "bundle_digest", "extracted_bundle", "worker_dir"
]

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


def _check_member(member: tarfile.TarInfo, max_member: int) -> None:
    """Raise BundleError for a member that is not a plain file/dir/link, too big, or has an escaping name."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
        raise BundleError(f"bundle member {member.name!r} has an absolute or '..' path; rebuild the bundle.")
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise BundleError(f"bundle member {member.name!r} is a device, fifo or special file; only files, folders and links are allowed.")
    if member.size > max_member:
        raise BundleError(f"bundle member {member.name!r} is {member.size} bytes, above the {max_member}-byte limit.")
    if (member.issym() or member.islnk()) and PurePosixPath(member.linkname).is_absolute():
        raise BundleError(f"bundle member {member.name!r} links to {member.linkname!r}, outside the bundle.")


def resolve_inside(path: str, links: dict[str, str], what: str) -> tuple[str, ...]:
    """Where ``path`` (relative to the bundle root) leads in the *final* tree, following the bundle's own
    symlinks (``links``: member name -> target) like the kernel would; BundleError when any step of the
    way leaves the bundle, or the links loop. Checking each link against the finished tree, not in
    archive order, is what catches ``s1 -> x/..`` listed before ``x -> .``."""
    resolved: list[str] = []
    pending = list(PurePosixPath(path).parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise BundleError(f"bundle member {what} leads outside the bundle (through its links).")
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is not None:
            hops += 1
            if hops > 40:
                raise BundleError(f"bundle member {what} is part of a symlink loop.")
            resolved.pop()                       # the link itself is replaced by where it points
            pending = list(PurePosixPath(target).parts) + pending
    return tuple(resolved)


def _check_tree(members: list[tarfile.TarInfo]) -> None:
    """Every name appears once, and every member, link target and hard-link source stays inside the
    bundle once all links exist (whatever their order in the archive)."""
    seen: set[str] = set()
    for member in members:
        key = PurePosixPath(member.name).as_posix()
        if key in seen:
            raise BundleError(f"bundle member {member.name!r} appears twice; rebuild the bundle.")
        seen.add(key)
    links = {PurePosixPath(m.name).as_posix(): m.linkname for m in members if m.issym()}
    for member in members:
        name = PurePosixPath(member.name)
        resolve_inside(str(name.parent), links, repr(member.name))     # no writing through a link that leaves
        if member.issym():
            resolve_inside(str(name.parent / member.linkname), links, f"{member.name!r} -> {member.linkname!r}")
        elif member.islnk():
            resolve_inside(member.linkname, links, f"{member.name!r} (hard link to {member.linkname!r})")



def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike, *, max_member: int = MAX_MEMBER_BYTES,
                 max_total: int = MAX_TOTAL_BYTES) -> Path:
    """Extract ``tar_path`` into ``dest`` after checking every member; nothing is written on refusal."""
    root = Path(dest).absolute()
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, max_member)
            _check_tree(members)
            total = sum(m.size for m in members)
            if total > max_total:
                raise BundleError(f"bundle unpacks to {total} bytes, above the {max_total}-byte limit.")
            if not EXTRACT_FILTER:
                for member in members:                      # what the data filter would do: no setuid, no
                    member.mode &= 0o755                    # group/other write (old 3.10/3.11 patch releases)
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
