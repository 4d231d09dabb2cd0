"""Frames parsed in the read callback (runtime/frame_protocol.py): the same frames as ``framing``, whatever
the bytes' split into reads, big parts received whole, and broken frames closing the connection with why."""
from __future__ import annotations

import asyncio
import struct

import pytest

from vast_magic.runtime import deadlines, framing
from vast_magic.runtime.frame_protocol import FrameProtocol


def _frame(main: bytes, buffers=()) -> bytes:
    head = framing.HEADER.pack(len(buffers), len(main)) + b"".join(framing.LENGTH.pack(len(b)) for b in buffers)
    return head + main + b"".join(buffers)


class _Transport:
    def __init__(self):
        self.aborted = False

    def abort(self):
        self.aborted = True

    def close(self):
        pass


def _parse(data: bytes, chunk: int, **limits):
    frames, closed = [], []
    protocol = FrameProtocol(lambda main, buffers: frames.append((bytes(main), [bytes(b) for b in buffers])),
                             closed.append, **limits)
    protocol.connection_made(_Transport())
    for start in range(0, len(data), chunk):
        protocol.feed(data[start:start + chunk])
    return frames, closed, protocol


@pytest.mark.parametrize("chunk", [1, 7, 13, 4096, 1 << 20])
def test_frames_come_out_whole_however_the_bytes_are_split(chunk):
    big = bytes(range(256)) * 1024                           # 256 KiB: received into its own buffer
    sent = [(b"a", []), (b"", []), (b"main" * 50, [b"x" * 10, big]), (big, [])]
    frames, closed, _ = _parse(b"".join(_frame(m, b) for m, b in sent), chunk)
    assert frames == sent and closed == []


@pytest.mark.parametrize("data, limits, message", [
    (framing.HEADER.pack(5000, 1), {}, "announces 5000 buffers (limit 4096)"),
    (framing.HEADER.pack(0, 2000), {"max_bytes": 1000}, "announces 2000 bytes (limit 1000)"),
    (framing.HEADER.pack(1, 1) + struct.pack("!Q", 10 | framing.SHARED), {},
     "shared-memory buffer on a connection that does not take them"),
])
def test_a_broken_frame_closes_the_connection_and_says_why(data, limits, message):
    frames, closed, protocol = _parse(data, 64, **limits)
    assert frames == [] and len(closed) == 1
    assert isinstance(closed[0], framing.FrameError) and message in str(closed[0])
    assert protocol.transport.aborted


def test_one_timer_expires_each_limit_once_and_only_when_due():
    async def scenario():
        limits, fired = deadlines.on_loop(asyncio.get_running_loop()), []
        late = limits.add(0.05, lambda: fired.append("late"))
        kept = limits.add(10.0, lambda: fired.append("kept"))
        early = limits.add(0.01, lambda: fired.append("early"))
        gone = limits.add(0.01, lambda: fired.append("gone"))
        limits.remove(gone)
        await asyncio.sleep(0.2)
        limits.remove(kept)
        return fired, (early.expired, late.expired, kept.expired, gone.expired), len(limits)

    fired, expired, left = asyncio.run(scenario())
    assert fired == ["early", "late"] and expired == (True, True, False, False) and left == 0
