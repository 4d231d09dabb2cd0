"""Shared-memory files used again: a freed big buffer's file carries the next big buffer this process sends.

Writing 100 MiB into a fresh ``/dev/shm`` file costs about three times a
memory copy: tmpfs allocates (and later frees) 25,600 small pages, while the
same write into a file whose pages already exist is a plain copy. So a
receiver does not unlink the file it maps: it renames it ``held-<name>``
(a name of its own, which says who holds it), and when the last array using
the mapping is gone, ``keep-<name>``; its next export of a big buffer renames a
kept file to a fresh segment name and overwrites it instead of creating one.

What keeps this safe:
- only the process that mapped a file reuses it, and only after its mapping
  is gone (a weak-reference finalizer on the ``mmap``), so no live array ever
  sees its bytes change;
- a process that forked after mapping a file never reuses it (the child may
  still map it): it is unlinked when the parent releases it, and a child never
  reuses its parent's files;
- at most ``KEEP_FILES`` files and ``KEEP_BYTES`` bytes wait, each at most
  ``KEEP_SECONDS`` (older ones are unlinked at the next export, and by the
  engine's sweep, which also removes every held or kept file of a dead
  process); a normal exit unlinks them all;
- a file is kept only while ``/dev/shm`` has room for ``ROOM_FACTOR`` more
  of its size (a container's is often 64 MiB), and when shared memory is
  full an export drops the kept files and tries once more.
Standard library only: this module ships in every bundle.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Callable

__all__ = ["HELD", "KEPT", "KEEP_FILES", "KEEP_BYTES", "KEEP_SECONDS", "ROOM_FACTOR", "Reuse", "unlink_quietly"]

HELD, KEPT = "held-", "keep-"
KEEP_FILES = 4
KEEP_BYTES = 1 << 30
KEEP_SECONDS = 20.0
ROOM_FACTOR = 4                             # a file is kept only while /dev/shm has room for 4 more like it

_forks = 0                                  # fork() calls made by this process so far
_all: "weakref.WeakSet[Reuse]" = weakref.WeakSet()


class Reuse:
    """The held and kept files of one segment folder in this process."""

    def __init__(self, directory: str, new_name: Callable[[], str]):
        self.directory = directory
        self._new_name = new_name             # a fresh name that says who made the file (shm.segment_name)
        self._lock = threading.RLock()      # a finalizer may run inside a locked section (GC), same thread
        self._pid = os.getpid()
        self._free: list[tuple[str, int, float]] = []   # (path, size, freed at), oldest first
        self._held: set[str] = set()
        _all.add(self)

    def hold(self, path: str, mapped, size: int) -> None:
        """``path`` is now mapped as ``mapped``: hold it under a name of ours, kept for reuse once
        ``mapped`` is gone (or unlink it now when it is too big to keep)."""
        held = self._name(HELD)
        if size > KEEP_BYTES or not _rename(path, held):
            unlink_quietly(path)
            return
        with self._lock:
            self._held.add(held)
        release = weakref.finalize(mapped, self._released, held, size, _forks, os.getpid())
        release.atexit = False

    def take(self, nbytes: int) -> tuple[int, str] | None:
        """A kept file renamed to a fresh segment name, open for writing and cut to ``nbytes``:
        (fd, name); None when none is kept."""
        while True:
            with self._lock:
                self._expire(time.monotonic())
                if not self._free:
                    return None
                best = min(self._free, key=lambda f: (-min(f[1], nbytes), f[1]))
                self._free.remove(best)
            name = self._new_name()
            path = os.path.join(self.directory, name)
            if not _rename(best[0], path):
                continue                     # swept meanwhile: try another
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                unlink_quietly(path)
                continue
            try:
                os.ftruncate(fd, nbytes)
            except OSError:
                os.close(fd)
                unlink_quietly(path)
                continue
            return fd, name

    def drop(self) -> int:
        """Unlink every kept file (shared memory is full, or the process ends); how many went."""
        with self._lock:
            free, self._free = self._free, []
        for path, _, _ in free:
            unlink_quietly(path)
        return len(free)

    def kept(self) -> list[str]:
        with self._lock:
            return [path for path, _, _ in self._free]

    def _released(self, held: str, size: int, forks: int, pid: int) -> None:
        if os.getpid() != pid:
            return                           # a forked child's copy of the mapping: the parent owns the file
        with self._lock:
            self._held.discard(held)
        if forks != _forks or not self._room_after(size):   # a child forked since may still map it, or
            unlink_quietly(held)                                     # /dev/shm is small (64 MiB in a container)
            return
        kept = self._name(KEPT)
        try:
            os.utime(held)                   # the sweep ages kept files from their release
        except OSError:
            return
        if not _rename(held, kept):
            unlink_quietly(held)
            return
        with self._lock:
            self._free.append((kept, size, time.monotonic()))
            self._trim()

    def _room_after(self, size: int) -> bool:
        """Whether keeping ``size`` bytes leaves room for ``ROOM_FACTOR`` more such buffers (a kept file must
        not make the peer's next big buffer fall back to the socket)."""
        try:
            info = os.statvfs(self.directory)
        except OSError:
            return False
        return info.f_bavail * info.f_frsize >= ROOM_FACTOR * size

    def _trim(self) -> None:
        while len(self._free) > KEEP_FILES or sum(f[1] for f in self._free) > KEEP_BYTES:
            unlink_quietly(self._free.pop(0)[0])

    def _expire(self, now: float) -> None:
        while self._free and now - self._free[0][2] > KEEP_SECONDS:
            unlink_quietly(self._free.pop(0)[0])

    def _name(self, prefix: str) -> str:
        return os.path.join(self.directory, prefix + self._new_name())

    def _forked(self) -> None:
        """In a forked child: the parent's files are not ours to reuse or remove."""
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._free, self._held = [], set()

    def _exit(self) -> None:
        if self._pid == os.getpid():
            with self._lock:
                held, self._held = self._held, set()
            for path in held:
                unlink_quietly(path)
            self.drop()


def _before_fork() -> None:
    global _forks
    _forks += 1


def _after_fork_in_child() -> None:
    for reuse in list(_all):
        reuse._forked()


def _at_exit() -> None:
    for reuse in list(_all):
        reuse._exit()


def _rename(source: str, target: str) -> bool:
    try:
        os.rename(source, target)
        return True
    except OSError:
        return False


def unlink_quietly(path: str) -> None:
    """Remove a segment file that another process (its holder, the sweep) may already have removed."""
    try:
        os.unlink(path)
    except OSError:
        pass


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
