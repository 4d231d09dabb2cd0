"""Process identity from ``/proc``: a pid plus its start time, with "cannot tell" kept apart from "gone".

A pid alone is not an identity (numbers are reused), so processes are recorded
with field 22 of ``/proc/<pid>/stat``. Reading that file needs a free file
descriptor: under a descriptor flood it fails with EMFILE, which says nothing
about the process. Only "no such file" (or a zombie) means gone; any other
failure raises ``Unknown`` so that callers never declare a live process dead.
Standard library only: the worker runtime uses it too.
"""
from __future__ import annotations

import errno
import os

__all__ = ['Unknown', 'liveness', 'own_identity', 'start_time']

_GONE = {errno.ENOENT, errno.ESRCH}


class Unknown(OSError):
    """``/proc`` could not be read for a reason other than the process being gone (e.g. EMFILE)."""


def start_time(pid: int | None) -> int | None:
    """Clock ticks since boot at which ``pid`` started; None when it is gone or a zombie; ``Unknown`` otherwise."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise Unknown(exc.errno, f"cannot read /proc/{pid}/stat ({exc.strerror})") from exc
    try:
        fields = raw[raw.rindex(b")") + 2:].split()
        if fields[0] == b"Z":       # a zombie has finished: nothing left to stop
            return None
        return int(fields[19])
    except (ValueError, IndexError) as exc:
        raise Unknown(errno.EIO, f"unreadable /proc/{pid}/stat ({exc})") from exc


def liveness(pid: int | None, recorded_start: int | None) -> bool | None:
    """True: ``pid`` is the process recorded with ``recorded_start``; False: it is gone; None: cannot tell."""
    try:
        current = start_time(pid)
    except Unknown:
        return None
    return current is not None and (recorded_start is None or current == recorded_start)


_own: tuple[int, int] | None = None


def own_identity() -> tuple[int, int]:
    """(pid, start time) of this process, read once per process (a fork re-reads it)."""
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        try:
            started = start_time(pid) or 0
        except Unknown:
            started = 0
        _own = (pid, started)
    return _own
