"""Worker log files: one set per worker, rotated by size while it runs, read back across rotations.

A worker that prints without end must not fill the disk, so the engine (the
only writer) rotates each worker's log by size: ``<worker>.log`` is the
current file, ``<worker>.log.1`` the one before, and so on up to ``files - 1``;
the oldest is dropped. A worker's logs therefore never exceed
``max_bytes * files`` (defaults: 10 MiB x 3, settings ``worker_log_bytes`` and
``worker_log_files``, read when the engine starts).

Layout: ``home/logs/<name>/<tag>/<worker>.log[.N]``, so a deployment's logs
are found (and listed) without the engine's memory, also after a teardown or
a restart. One record per line: ``<unix time> <stream> <function or -> <text>``;
a text longer than ``MAX_LINE_CHARS`` is cut (the file bound holds whatever
a worker prints). Logs of stopped workers are kept for post-mortems, at most
``KEEP_STOPPED_LOGS`` workers and ``KEEP_STOPPED_WORKERS`` worth of bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ...reports import LogLine
from .loops import log

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_FILES", "MAX_LINE_CHARS", "KEEP_STOPPED_LOGS",
    "KEEP_STOPPED_WORKERS", "LogLimits", "encode", "decode", "log_dir", "worker_log_path", "rotated_paths",
    "logged_deployments", "find_worker_log", "WorkerLog", "tail", "deployment_tail", "LogSet", "logs_to_prune",
    "prune",
]

DEFAULT_MAX_BYTES = 10 << 20       # one file
DEFAULT_FILES = 3                  # the current file and two rotated ones
MAX_LINE_CHARS = 16 << 10          # a longer line is cut, so a single record always fits a file
KEEP_STOPPED_LOGS = 200            # stopped workers whose logs stay for `vast-magic logs` and post-mortems ...
KEEP_STOPPED_WORKERS = 8           # ... within 8 workers' worth of bytes (8 x max_bytes x files)
_CUT = " [vast_magic: line cut]"
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_ROTATION = threading.Lock()       # a reader opens a worker's files as one snapshot, never mid-rotation


@dataclass(frozen=True)
class LogLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    files: int = DEFAULT_FILES

    @property
    def per_worker(self) -> int:
        return self.max_bytes * self.files


# -- records -----------------------------------------------------------------------------------
def encode(line: LogLine) -> bytes:
    text = line.text.replace("\r", "").replace("\n", " ")
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + _CUT
    stream = line.stream if _SAFE.fullmatch(line.stream or "") else "stdout"
    function = line.function if line.function and _SAFE.fullmatch(line.function) else "-"
    return f"{line.time:.6f} {stream} {function} {text}\n".encode("utf-8", "replace")


def decode(raw: bytes, worker: str) -> LogLine | None:
    """A record back into a LogLine; None for a line that is not one (e.g. cut by a crash mid-write)."""
    parts = raw.decode("utf-8", "replace").rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return None
    try:
        when = float(parts[0])
    except ValueError:
        return None
    function = None if parts[2] == "-" else parts[2]
    return LogLine(when, worker, parts[1], parts[3] if len(parts) == 4 else "", function)


# -- paths ---------------------------------------------------------------------------------------
def _component(text: str) -> str:
    """A folder name for ``text``; one that needed changes gets a digest, so two names never share one."""
    if _SAFE.fullmatch(text) and text not in (".", ".."):
        return text
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60].strip(".") or "_"
    return f"{safe}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def log_dir(home: Path, name: str, tag: str) -> Path:
    return Path(home) / "logs" / _component(name) / _component(tag)


def worker_log_path(home: Path, name: str, tag: str, worker: str) -> Path:
    return log_dir(home, name, tag) / f"{worker}.log"


def rotated_paths(path: Path) -> list[Path]:
    """The existing files of one worker's log, newest first."""
    found = [path] if path.exists() else []
    index = 1
    while (older := path.with_name(f"{path.name}.{index}")).exists():
        found.append(older)
        index += 1
    return found


def logged_deployments(home: Path) -> list[tuple[str, str]]:
    """(name, tag) of every deployment with worker logs on disk (names that needed a digest aside)."""
    root = Path(home) / "logs"
    try:
        return sorted((n.name, t.name) for n in root.iterdir() if n.is_dir() and "~" not in n.name
                      for t in n.iterdir() if t.is_dir() and "~" not in t.name and any(t.glob("*.log*")))
    except OSError:
        return []


def find_worker_log(home: Path, worker: str) -> Path | None:
    """The current log file of worker id ``worker`` (live or stopped), wherever its deployment put it."""
    if "/" in worker or worker.startswith(".") or not worker:
        return None
    return next(iter(sorted((Path(home) / "logs").glob(f"*/*/{worker}.log"))), None)


# -- writing -------------------------------------------------------------------------------------
class WorkerLog:
    """The writer of one worker's log (the engine's loop is its only caller)."""

    def __init__(self, path: Path, limits: LogLimits):
        self.path, self.limits = Path(path), limits
        self._fd: int | None = None
        self._size = 0
        self.failed_writes = 0

    def _open(self) -> int:
        if self._fd is None:
            for folder in (self.path.parent.parent.parent, self.path.parent.parent, self.path.parent):
                folder.mkdir(mode=0o700, exist_ok=True)     # each level private; pruning removes empty ones
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def write(self, lines: Iterable[LogLine]) -> None:
        """Append the records, rotating first whenever the next one would pass ``max_bytes``. A full or
        read-only home loses lines (engine.log says so), never the worker."""
        try:
            self._write(lines)
        except OSError as exc:
            self.close()
            self.failed_writes += 1
            if self.failed_writes <= 3 or self.failed_writes % 1000 == 0:
                log(f"cannot write {self.path} ({self.failed_writes} failed writes): {exc}")

    def _write(self, lines: Iterable[LogLine]) -> None:
        pending: list[bytes] = []
        size = self._size if self._fd is not None else None
        for line in lines:
            record = encode(line)
            if size is None:
                self._open()
                size = self._size
            if size + len(record) > self.limits.max_bytes and size > 0:
                self._flush(pending)
                self.rotate()
                pending, size = [], 0
            pending.append(record)
            size += len(record)
        self._flush(pending)

    def _flush(self, records: list[bytes]) -> None:
        if records:
            data = b"".join(records)
            fd = self._open()
            while data:
                written = os.write(fd, data)
                data = data[written:]
                self._size += written

    def rotate(self) -> None:
        """current -> .1 -> .2 ...; what would be number ``files`` (or more) is deleted."""
        self.close()
        keep = self.limits.files - 1
        with _ROTATION:
            for path in rotated_paths(self.path)[keep:][::-1]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for index in range(keep - 1, -1, -1):
                source = self.path if index == 0 else self.path.with_name(f"{self.path.name}.{index}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- reading -------------------------------------------------------------------------------------
def _lines_backwards(fd: int, size: int, block: int = 64 << 10) -> Iterator[bytes]:
    """The lines of the first ``size`` bytes of ``fd``, last first."""
    end, carry = size, b""
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start) + carry
        lines = chunk.split(b"\n")
        carry = lines[0]
        for line in reversed(lines[1:]):
            if line:
                yield line
        end = start
    if carry:
        yield carry


def tail(path: Path, count: int, function: str | None = None) -> list[LogLine]:
    """The last ``count`` records of one worker's log (its rotated files too), oldest first."""
    worker = Path(path).name[:-len(".log")]
    with _ROTATION:                               # open every file before any rotation can move them
        fds = []
        for file in rotated_paths(Path(path)):
            with contextlib.suppress(OSError):
                fd = os.open(file, os.O_RDONLY)
                fds.append((fd, os.fstat(fd).st_size))
    found: list[LogLine] = []
    try:
        for fd, size in fds:
            for raw in _lines_backwards(fd, size):
                line = decode(raw, worker)
                if line is not None and (function is None or line.function == function):
                    found.append(line)
                    if len(found) >= count:
                        return found[::-1]
    finally:
        for fd, _ in fds:
            os.close(fd)
    return found[::-1]


def deployment_tail(home: Path, name: str, tag: str, count: int, function: str | None = None) -> list[LogLine]:
    """The last ``count`` records of every worker of (name, tag), merged by time."""
    if count <= 0:
        return []
    merged: list[LogLine] = []
    for path in sorted(log_dir(home, name, tag).glob("*.log")):
        merged += tail(path, count, function)
    merged.sort(key=lambda line: line.time)
    return merged[-count:]


# -- pruning -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogSet:
    """One worker's files, as pruning sees them."""

    worker: str
    mtime: float
    size: int


def logs_to_prune(sets: list[LogSet], live: set[str], keep: int, keep_bytes: int) -> list[str]:
    """The workers whose logs go: stopped ones beyond the ``keep`` newest, or beyond ``keep_bytes`` in all."""
    stopped = sorted((s for s in sets if s.worker not in live), key=lambda s: s.mtime, reverse=True)
    kept_bytes, doomed = 0, []
    for index, entry in enumerate(stopped):
        kept_bytes += entry.size
        if index >= keep or kept_bytes > keep_bytes:
            doomed.append(entry.worker)
    return doomed


def _log_sets(root: Path) -> dict[str, tuple[LogSet, list[Path]]]:
    sets: dict[str, tuple[LogSet, list[Path]]] = {}
    for current in root.glob("*/*/*.log"):
        files = rotated_paths(current)
        stats = [f.stat() for f in files]
        worker = current.name[:-len(".log")]
        sets[worker] = (LogSet(worker, max(s.st_mtime for s in stats), sum(s.st_size for s in stats)), files)
    return sets


def prune(home: Path, live: set[str], limits: LogLimits) -> list[str]:
    """Delete the logs ``logs_to_prune`` picks (and folders left empty); returns the workers pruned."""
    root = Path(home) / "logs"
    try:
        sets = _log_sets(root)
    except OSError:
        return []
    doomed = logs_to_prune([entry for entry, _ in sets.values()], live, KEEP_STOPPED_LOGS,
                           KEEP_STOPPED_WORKERS * limits.per_worker)
    for worker in doomed:
        for path in sets[worker][1]:
            with contextlib.suppress(OSError):
                path.unlink()
    for folder in sorted(root.glob("*/*"), reverse=True) + sorted(root.glob("*")):
        with contextlib.suppress(OSError):
            folder.rmdir()                      # only empty ones go
    return doomed
