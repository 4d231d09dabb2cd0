"""Big buffers through shared memory: zero socket copies, writable results, nothing left behind, nothing foreign attached."""
from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from vast_magic.runtime import framing, shm, wire


@pytest.fixture
def segments(tmp_path):
    directory = shm.segment_dir(tmp_path)
    if directory is None:
        pytest.skip("no /dev/shm on this system: frames carry big buffers inline")
    yield shm.Segments(directory)
    shm.remove_dir(directory)


def _frame_round_trip(value, writer_segments, reader_segments):
    async def scenario():
        got = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            try:
                got.set_result(await framing.read_frame(reader, segments=reader_segments))
            except Exception as exc:
                got.set_exception(exc)
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        main, buffers = wire.dumps(value)
        await framing.write_frame(writer, main, buffers, writer_segments)
        try:
            rmain, rbuffers = await asyncio.wait_for(got, 30)
        finally:
            writer.close()
            server.close()
        return wire.loads(rmain, rbuffers), rbuffers

    return asyncio.run(scenario())


def test_a_big_array_travels_as_a_segment_and_comes_out_writable(segments):
    array = np.arange(3 * shm.MIN_BYTES // 8, dtype=np.float64)
    small = np.arange(100, dtype=np.int64)
    value, buffers = _frame_round_trip({"big": array, "small": small}, segments, segments)
    assert np.array_equal(value["big"], array) and np.array_equal(value["small"], small)
    assert sorted(type(b).__name__ for b in buffers) == ["bytearray", "memoryview"]   # only the big one mapped
    value["big"][0] = -1.0                         # copy-on-write: the caller may modify its result
    assert value["big"][0] == -1.0 and array[0] == 0.0
    assert os.listdir(segments.directory) == []   # the receiver unlinked it at once


def test_without_segments_on_either_side_big_buffers_go_inline(segments):
    array = np.ones(2 * shm.MIN_BYTES // 8)
    value, buffers = _frame_round_trip(array, None, segments)
    assert np.array_equal(value, array) and isinstance(buffers[0], bytearray)


def test_a_connection_without_segments_refuses_a_shared_buffer(segments):
    with pytest.raises(framing.FrameError, match="does not take them"):
        _frame_round_trip(np.ones(shm.MIN_BYTES // 8), segments, None)


def test_export_falls_back_to_inline_when_shared_memory_cannot_take_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert shm.Segments(str(blocker / "segments")).export(memoryview(b"x" * 10)) is None


@pytest.mark.parametrize("make, name, size, message", [
    (None, b"../../etc/passwd".ljust(32, b"x"), 10, "bad shared-memory segment name"),
    (None, b"ABCDEF" * 5 + b"AB", 10, "bad shared-memory segment name"),
    ("file", None, 999, "is not the announced 999-byte file"),
    ("symlink", None, 10, "Too many levels of symbolic links"),
    ("folder", None, 10, "is not the announced"),
    (None, b"0" * 32, 10, "No such file"),
])
def test_attach_refuses_what_it_was_not_sent(segments, tmp_path, make, name, size, message):
    os.makedirs(segments.directory, mode=0o700, exist_ok=True)
    if make == "file":
        name = segments.export(memoryview(b"y" * 10))
    elif make == "symlink":
        target = tmp_path / "outside"
        target.write_bytes(b"z" * 10)
        name = b"a" * 32
        os.symlink(target, os.path.join(segments.directory, name.decode()))
    elif make == "folder":
        name = b"b" * 32
        os.mkdir(os.path.join(segments.directory, name.decode()))
    with pytest.raises((OSError, ValueError), match=message):
        segments.attach(name, size)


def test_sweep_removes_only_old_unattached_segments(segments):
    old, new = segments.export(memoryview(b"o" * 10)), segments.export(memoryview(b"n" * 10))
    past = time.time() - 600
    os.utime(os.path.join(segments.directory, old.decode()), (past, past))
    open(os.path.join(segments.directory, "not-a-segment"), "w").close()
    assert shm.sweep(segments.directory, older_than=300) == 1
    assert sorted(os.listdir(segments.directory)) == sorted([new.decode(), "not-a-segment"])
    assert shm.sweep(None, 0) == 0 and shm.sweep(segments.directory + "-missing", 0) == 0


def test_a_failed_send_removes_its_segments(segments):
    class BrokenWriter:
        def is_closing(self):
            return False

        def writelines(self, parts):
            raise ConnectionResetError("peer gone")

    main, buffers = wire.dumps(np.ones(shm.MIN_BYTES // 8))
    with pytest.raises(ConnectionResetError):
        asyncio.run(framing.write_frame(BrokenWriter(), main, buffers, segments))
    assert os.listdir(segments.directory) == []
