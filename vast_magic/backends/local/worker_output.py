"""What a worker writes to its stdout and stderr, read by the engine through pipes.

A worker's file descriptors 1 and 2 are pipes to the engine rather than a
file the worker appends to, so the engine is the only writer of the log and
can rotate it by size while the worker runs (``logfiles``). Everything lands
there: prints outside calls, ``runs`` scripts, C extensions and subprocesses
writing to the descriptors, a crash's last words (a dead writer's bytes stay
readable in the pipe). Prints inside calls come through the engine link
instead, tagged with their function (runtime ``output``), and are not written
to the descriptors, so nothing is logged twice.

Reading never starves the engine's loop: one wake-up reads at most
``READS_PER_WAKEUP`` chunks; a chatty worker then waits on its full pipe
(the kernel's back-pressure) instead of the engine waiting on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from typing import IO, Callable

from .logfiles import MAX_LINE_CHARS

__all__ = ["READ_SIZE", "READS_PER_WAKEUP", "OutputPipe"]

READ_SIZE = 64 << 10
READS_PER_WAKEUP = 16
_MAX_PARTIAL = MAX_LINE_CHARS * 4   # a "line" without a newline is cut here (the record cuts it further)

OnLines = Callable[[str, list], None]   # (stream, texts)


class OutputPipe:
    """The read end of one of a worker's output pipes, on the engine's loop."""

    def __init__(self, pipe: IO[bytes], stream: str, on_lines: OnLines):
        self.stream, self._pipe, self._on_lines = stream, pipe, on_lines
        self._fd = pipe.fileno()
        self._partial = b""
        self.closed = False
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self.drain, READS_PER_WAKEUP)

    def drain(self, reads: int = 1 << 30) -> None:
        """Read what is there now (up to ``reads`` chunks) and hand over its complete lines; at end of
        file the last partial line too, then close."""
        for _ in range(reads):
            if self.closed:
                return
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAX_PARTIAL:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            self._on_lines(self.stream, [line.decode("utf-8", "replace") for line in lines])

    def close(self) -> None:
        """Stop reading; a partial last line is still handed over."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(OSError):
            self._pipe.close()
        if self._partial:
            partial, self._partial = self._partial, b""
            self._on_lines(self.stream, [partial.decode("utf-8", "replace")])
