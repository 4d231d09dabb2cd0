"""Big buffers through shared memory between a client and a worker of the same machine.

A 100 MiB numpy argument sent over a loopback socket is copied into the
kernel, out again, and through asyncio's stream buffers on each side. Local
workers share ``/dev/shm`` with their client, so a buffer of at least
``MIN_BYTES`` instead goes into a fresh file there (one ``write``), and the
frame carries only the file's name; the receiver maps the file copy-on-write
(``MAP_PRIVATE``: writable arrays, nothing copied until written), unlinks it at
once, and the memory is freed when the last array using it goes away.

The segment folder is private to one engine home (0700), names are 32 random
hex digits, and ``attach`` opens only regular files owned by this user in that
folder, without following links. When ``/dev/shm`` is missing or full,
``export`` returns None and the frame carries the bytes inline as before.
Standard library only: this module ships in every bundle.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import re
import secrets
import shutil
import stat
import time

MIN_BYTES = 1 << 20
NAME_BYTES = 32
_NAME = re.compile(rb"[0-9a-f]{32}\Z")
_SHM_ROOT = "/dev/shm"


def segment_dir(home: str | os.PathLike) -> str | None:
    """The segment folder of one engine home, or None where there is no /dev/shm (not Linux)."""
    if not os.path.isdir(_SHM_ROOT):
        return None
    digest = hashlib.sha256(os.fsencode(os.path.abspath(home))).hexdigest()[:16]
    return os.path.join(_SHM_ROOT, f"vast-magic-{os.getuid()}-{digest}")


class Segments:
    """Export and attach shared-memory buffers in one private folder."""

    def __init__(self, directory: str):
        self.directory = directory

    def export(self, view: memoryview) -> bytes | None:
        """Copy ``view`` into a new segment; its name, or None when shared memory cannot take it."""
        name = secrets.token_hex(NAME_BYTES // 2)
        path = os.path.join(self.directory, name)
        try:
            fd = self._create(path)
        except OSError:
            return None
        try:
            written = 0
            while written < view.nbytes:
                written += os.write(fd, view[written:])
        except OSError:                            # /dev/shm full: send the bytes inline instead
            _unlink(path)
            return None
        finally:
            os.close(fd)
        return name.encode()

    def _create(self, path: str) -> int:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            return os.open(path, flags, 0o600)

    def attach(self, name: bytes, size: int) -> memoryview:
        """Map segment ``name`` (which must hold exactly ``size`` bytes) and remove its file."""
        if not _NAME.match(name):
            raise ValueError(f"bad shared-memory segment name {name[:40]!r}")
        path = os.path.join(self.directory, name.decode())
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _unlink(path)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_size != size or size <= 0:
                raise ValueError(f"shared-memory segment {name.decode()} is not the announced {size}-byte file")
            mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return memoryview(mapped)

    def discard(self, name: bytes) -> None:
        """Remove a segment whose frame never left (the receiver will not attach it)."""
        if _NAME.match(name):
            _unlink(os.path.join(self.directory, name.decode()))


def sweep(directory: str | None, older_than: float) -> int:
    """Remove segments left by a receiver that died before attaching; returns how many."""
    if not directory:
        return 0
    removed, limit = 0, time.time() - older_than
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if _NAME.match(entry.name.encode()) and entry.stat(follow_symlinks=False).st_mtime <= limit:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def remove_dir(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
