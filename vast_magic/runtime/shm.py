"""Big buffers through shared memory between a client and a worker of the same machine.

A 100 MiB numpy argument sent over a loopback socket is copied into the
kernel, out again, and through asyncio's stream buffers on each side. Local
workers share ``/dev/shm`` with their client, so a buffer of at least
``MIN_BYTES`` instead goes into a fresh file there (one ``write``), and the
frame carries only the file's name; the receiver maps the file copy-on-write
(``MAP_PRIVATE``: writable arrays, nothing copied until written) and takes it
out of the sender's reach by renaming it; when the last array using it goes
away the file carries this process's next big buffer (``shm_reuse``: a fresh
tmpfs file costs three memory copies, a reused one one) or is removed.

The segment folder is private to one engine home. Its name is predictable, so
before use it must be a real folder (not a link) owned by this user with mode
0700, else ``SegmentDirError`` says why and callers send bytes inline instead.
``attach`` opens only regular files owned by this user, without following
links. When ``/dev/shm`` is missing or full, ``export`` returns None and the
frame carries the bytes inline as before.

Nothing may outlive a crash for long. A segment's name starts with its
creator's pid and start time (then random digits), so ``sweep`` removes those
of dead processes; each connection's ``SegmentLink`` removes what it exported
and its peer never attached when the peer goes away (a SIGKILLed worker or
client); and segments nobody attached for ``older_than`` seconds go too. Held
and kept files (``held-``/``keep-`` and a name of their holder) go when their
holder is dead, kept ones also after ``shm_reuse.KEEP_SECONDS``.
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

from . import procinfo
from .shm_reuse import HELD, KEEP_SECONDS, KEPT, Reuse, unlink_quietly

__all__ = [
    "MIN_BYTES", "NAME_BYTES", "segment_dir", "SegmentDirError", "prepare_dir", "segment_name", "creator_gone",
    "Segments", "SegmentLink", "sweep", "sweep_dead_holders", "remove_dir"
]

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


class SegmentDirError(OSError):
    """The segment folder is not a private folder of this user; nothing is shared through it."""


def prepare_dir(directory: str) -> None:
    """Create the folder (0700) if missing; raise SegmentDirError unless it is a real folder of ours, 0700."""
    try:
        os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)              # whatever the umask
    except FileExistsError:
        pass
    info = os.lstat(directory)
    problem = None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is a link or not a folder"
    elif info.st_uid != os.getuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    elif stat.S_IMODE(info.st_mode) != 0o700:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, not 0700"
    if problem:
        raise SegmentDirError(f"the shared-memory folder {directory} {problem}: another user could read, remove "
                              "or swap big arguments and results there, so it is not used and they travel through "
                              f"the socket instead. Remove it (rm -r {directory}) to use shared memory again.")


def segment_name() -> str:
    """``<pid:8 hex><start time:16 hex><8 random hex>``: 32 hex digits that say who made the segment."""
    pid, started = procinfo.own_identity()
    return f"{pid & 0xFFFFFFFF:08x}{started & 0xFFFFFFFFFFFFFFFF:016x}{secrets.token_hex(4)}"


def creator_gone(name: str) -> bool:
    """True when the process that made segment ``name`` is known to have exited (never when unsure)."""
    pid, started = int(name[:8], 16), int(name[8:24], 16)
    return procinfo.liveness(pid, started or None) is False


class Segments:
    """Export and attach shared-memory buffers in one private folder."""

    def __init__(self, directory: str):
        self.directory = directory
        self._ready = False
        self.reuse = Reuse(directory, segment_name)

    @classmethod
    def open(cls, directory: str) -> "Segments":
        """Segments in ``directory``, checked (and created) now; SegmentDirError when it is not private."""
        segments = cls(directory)
        prepare_dir(directory)
        segments._ready = True
        return segments

    def link(self) -> "SegmentLink":
        """A view for one connection, which remembers what it exported (see ``SegmentLink``)."""
        return SegmentLink(self)

    def export(self, view: memoryview) -> bytes | None:
        """Copy ``view`` into a segment (a kept file when there is one); its name, or None when shared
        memory cannot take it."""
        taken = self.reuse.take(view.nbytes)
        name = self._write(view, taken)
        if name is None and (self.reuse.drop() or taken is not None):
            name = self._write(view, None)         # /dev/shm full: room freed (kept files gone), once more
        return name

    def _write(self, view: memoryview, taken: tuple[int, str] | None) -> bytes | None:
        try:
            fd, name = taken or self._create()
        except OSError:                            # includes SegmentDirError: inline it is
            return None
        path = os.path.join(self.directory, name)
        try:
            written = 0
            while written < view.nbytes:
                written += os.write(fd, view[written:])
        except OSError:                            # /dev/shm full: send the bytes inline instead
            unlink_quietly(path)
            return None
        finally:
            os.close(fd)
        return name.encode()

    def _create(self) -> tuple[int, str]:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(4):
            if not self._ready:
                prepare_dir(self.directory)
                self._ready = True
            name = segment_name()
            try:
                return os.open(os.path.join(self.directory, name), flags, 0o600), name
            except FileNotFoundError:              # the engine stopped and removed the folder: check it again
                self._ready = False
            except FileExistsError:                # 32 random bits collided: take another name
                pass
        raise OSError("cannot create a shared-memory segment")

    def attach(self, name: bytes, size: int) -> memoryview:
        """Map segment ``name`` (which must hold exactly ``size`` bytes) and remove its file."""
        if not _NAME.match(name):
            raise ValueError(f"bad shared-memory segment name {name[:40]!r}")
        if not self._ready:
            prepare_dir(self.directory)
            self._ready = True
        path = os.path.join(self.directory, name.decode())
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_size != size or size <= 0:
                unlink_quietly(path)
                raise ValueError(f"shared-memory segment {name.decode()} is not the announced {size}-byte file")
            try:
                mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                unlink_quietly(path)
                raise
        finally:
            os.close(fd)
        self.reuse.hold(path, mapped, size)        # renamed out of the sender's reach at once
        return memoryview(mapped)

    def discard(self, name: bytes) -> None:
        """Remove a segment whose frame never left (the receiver will not attach it)."""
        if _NAME.match(name):
            unlink_quietly(os.path.join(self.directory, name.decode()))


class SegmentLink:
    """``Segments`` for one connection: remembers what it exported, so that ``close`` can remove what the
    peer never attached (attaching unlinks at once, so the rest is exactly what a dead peer left)."""

    KEEP = 256                                  # names remembered before the attached ones are forgotten

    def __init__(self, segments: Segments):
        self.segments = segments
        self.directory = segments.directory
        self._sent: list[bytes] = []

    def export(self, view: memoryview) -> bytes | None:
        name = self.segments.export(view)
        if name is not None:
            if len(self._sent) >= self.KEEP:
                self._sent = [n for n in self._sent if os.path.lexists(os.path.join(self.directory, n.decode()))]
            self._sent.append(name)
        return name

    def attach(self, name: bytes, size: int) -> memoryview:
        return self.segments.attach(name, size)

    def discard(self, name: bytes) -> None:
        self.segments.discard(name)

    def close(self) -> None:
        """The peer is gone: remove every segment we sent it that it did not attach."""
        sent, self._sent = self._sent, []
        for name in sent:
            self.segments.discard(name)


def sweep(directory: str | None, older_than: float, dead_after: float = 0.0, keep_for: float = KEEP_SECONDS) -> int:
    """Remove segments nobody will attach; returns how many: those of a creator known to be dead (older
    than ``dead_after`` s, so a receiver reading its frame right now still finds it) and any older than
    ``older_than`` s (a receiver died first); held and kept files of a dead holder, and kept files
    unused for ``keep_for`` s."""
    if not directory or not _private(directory):
        return 0
    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if _gone(entry, now - entry.stat(follow_symlinks=False).st_mtime, older_than, dead_after, keep_for):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def sweep_dead_holders(directory: str | None) -> int:
    """When a worker is seen to end: remove the held and kept files of holders that are gone now (the big
    buffers it mapped or kept for reuse), at once rather than at the next periodic sweep; nothing else."""
    return sweep(directory, older_than=float("inf"), dead_after=float("inf"), keep_for=float("inf"))


def _gone(entry: os.DirEntry, age: float, older_than: float, dead_after: float, keep_for: float) -> bool:
    """Whether ``sweep`` removes this file, by the kind its name says."""
    name = entry.name
    if _NAME.match(name.encode()):
        return age >= older_than or (age >= dead_after and creator_gone(name))
    prefix, holder = name[:len(HELD)], name[len(HELD):]
    if prefix not in (HELD, KEPT) or not _NAME.match(holder.encode()):
        return False
    return (prefix == KEPT and age >= keep_for) or creator_gone(holder)


def remove_dir(directory: str | None) -> None:
    """Remove the folder and what is in it, only when it is ours (never through a link, never another's)."""
    if directory and _private(directory):
        shutil.rmtree(directory, ignore_errors=True)


def _private(directory: str) -> bool:
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()

