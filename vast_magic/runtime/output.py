"""Per-call capture of stdout/stderr, so each call's prints come back with its own result.

``redirect_stdout`` swaps a process-wide object and mixes concurrent calls; here
``sys.stdout``/``sys.stderr`` are replaced once by proxies that look up the
current call in a ``ContextVar``. Tasks and ``asyncio.to_thread`` copy the
context, so prints from a call's own threads land in that call's output. Writes
outside any call go to the real stream only (on the local engine a pipe the
engine logs); writes inside a call are also offered to an optional log sink
(``set_log_sink``), tagged with the function name, so they reach the log once.
A real stream that broke (the engine is gone) never fails the print.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from typing import Callable, Iterator

__all__ = ["MAX_CAPTURE_CHARS", "LogSink", "CallOutput", "install", "set_log_sink", "capture", "Capture"]

MAX_CAPTURE_CHARS = 8 << 20        # per call; more is truncated, not kept in memory forever
_TRUNCATED = "\n[vast_magic: output truncated]\n"

LogSink = Callable[[str, str, "str | None", object], None]   # (stream, text, function, owner)


class CallOutput:
    """The output of one call: ``[(stream, text), ...]`` with consecutive writes merged."""

    def __init__(self, function: str | None = None):
        self.function = function
        self._chunks: list[list[str]] = []
        self._size = 0
        self._lock = threading.Lock()   # to_thread workers write concurrently with the loop

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            if self._size >= MAX_CAPTURE_CHARS:
                return
            if self._size + len(text) >= MAX_CAPTURE_CHARS:
                text = text[:MAX_CAPTURE_CHARS - self._size] + _TRUNCATED
            self._size += len(text)
            if self._chunks and self._chunks[-1][0] == stream:
                self._chunks[-1][1] += text
            else:
                self._chunks.append([stream, text])

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(stream, text) for stream, text in self._chunks]


_current: contextvars.ContextVar[CallOutput | None] = contextvars.ContextVar("vast_magic_call_output", default=None)
_sink: list[LogSink | None] = [None]


class _StreamProxy(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr; routes each write by the current call."""

    def __init__(self, name: str, real):
        self._name = name
        self._real = real

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture = _current.get()
        if capture is None:
            try:
                self._real.write(text)
            except (OSError, ValueError):         # a broken pipe or closed stream: the output has nowhere to go
                pass
            return len(text)
        capture.write(self._name, text)
        sink = _sink[0]
        if sink is not None:
            sink(self._name, text, capture.function, capture)
        return len(text)

    def flush(self) -> None:
        try:
            self._real.flush()
        except (OSError, ValueError):
            pass

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):            # encoding, fileno, isatty, buffer... of the real stream
        if name.startswith("_"):            # before __init__ ran, _real itself is looked up here
            raise AttributeError(name)
        return getattr(self._real, name)


def install() -> None:
    """Replace sys.stdout/sys.stderr with the routing proxies (idempotent)."""
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), _StreamProxy):
            setattr(sys, name, _StreamProxy(name, getattr(sys, name)))


def set_log_sink(sink: LogSink | None) -> None:
    """Also hand every write to ``sink`` (the worker's log shipper); ``None`` to stop."""
    _sink[0] = sink


@contextlib.contextmanager
def capture(function: str | None = None) -> Iterator[CallOutput]:
    """Within this block (and tasks/threads started from it) output goes to the yielded CallOutput."""
    install()
    out = CallOutput(function)
    token = _current.set(out)
    try:
        yield out
    finally:
        _current.reset(token)


class Capture:
    """``capture`` as a class: the same block, without a generator's cost on every call the worker answers."""

    __slots__ = ("out", "_token")

    def __init__(self, function: str | None = None):
        self.out = CallOutput(function)

    def __enter__(self) -> CallOutput:
        install()
        self._token = _current.set(self.out)
        return self.out

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)
