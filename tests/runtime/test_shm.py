"""Big buffers through shared memory: zero socket copies, writable results, nothing left behind, nothing foreign attached.

A folder someone else prepared (open mode, a link, another owner) is refused
with a clear error and never written to; segment names carry their creator so
that sweeps remove what dead processes left (the end-to-end SIGKILL cases live
in backends/local/test_segments.py).
"""
from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from vast_magic.runtime import framing, procinfo, shm, shm_reuse, wire


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
    held = os.listdir(segments.directory)         # the receiver took it out of the sender's reach at once
    assert len(held) == 1 and held[0].startswith(shm_reuse.HELD)
    del value, buffers
    kept = os.listdir(segments.directory)         # and keeps it for its own next big buffer
    assert len(kept) == 1 and kept[0].startswith(shm_reuse.KEPT)


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


def _hostile_folder(kind: str, directory: str, tmp_path) -> None:
    if kind == "mode 0777":
        os.mkdir(directory)
        os.chmod(directory, 0o777)
    elif kind == "a link to a folder of ours":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        os.symlink(target, directory)
    elif kind == "another user's folder":
        if os.getuid() != 0:
            pytest.skip("only root can make a folder owned by another user")
        os.mkdir(directory, 0o700)
        os.chown(directory, 65534, 65534)
    elif kind == "a file":
        open(directory, "w").close()


@pytest.mark.parametrize("kind, message", [
    ("mode 0777", "has mode 0777, not 0700"),
    ("a link to a folder of ours", "is a link or not a folder"),
    ("another user's folder", "belongs to uid 65534"),
    ("a file", "is a link or not a folder"),
])
def test_a_folder_someone_else_prepared_is_refused(tmp_path, kind, message):
    directory = shm.segment_dir(tmp_path / "home")
    if directory is None:
        pytest.skip("no /dev/shm on this system")
    _hostile_folder(kind, directory, tmp_path)
    try:
        with pytest.raises(shm.SegmentDirError, match=message) as info:
            shm.Segments.open(directory)
        assert f"rm -r {directory}" in str(info.value)         # says what to do
        segments = shm.Segments(directory)
        assert segments.export(memoryview(b"x" * 100)) is None   # the bytes go inline instead
        with pytest.raises(OSError, match=message):
            segments.attach(b"0" * 32, 10)
        if os.path.isdir(directory):
            assert os.listdir(directory) == []                 # nothing was written into it
        shm.remove_dir(directory)
        if kind != "mode 0777":                                # ours, only open to others: may go
            assert os.path.lexists(directory)                  # never removed through a link or from another
    finally:
        if os.path.islink(directory) or os.path.isfile(directory):
            os.unlink(directory)
        elif os.path.isdir(directory):
            os.rmdir(directory)


def test_a_fresh_folder_is_0700_whatever_the_umask(tmp_path):
    directory = shm.segment_dir(tmp_path / "home")
    if directory is None:
        pytest.skip("no /dev/shm on this system")
    old = os.umask(0)
    try:
        shm.Segments.open(directory)
    finally:
        os.umask(old)
        mode = os.stat(directory).st_mode & 0o777
        shm.remove_dir(directory)
    assert mode == 0o700


def test_segment_names_say_which_process_made_them(segments):
    name = segments.export(memoryview(b"n" * 10)).decode()
    pid, started = procinfo.own_identity()
    assert int(name[:8], 16) == os.getpid() == pid and int(name[8:24], 16) == started
    assert not shm.creator_gone(name)


def _name(pid: int, started: int) -> str:
    return f"{pid:08x}{started:016x}{'ab' * 4}"


def test_sweep_removes_segments_of_dead_creators_and_old_ones_only(segments):
    pid, started = procinfo.own_identity()
    cases = {                                   # name -> (age in s, expected to be removed with dead_after=10)
        _name(0x3FFFFFF0, 12345): (60, True),   # no such process
        _name(pid, started + 1): (60, True),    # our pid, another start time: a reused pid, the creator died
        _name(0x3FFFFFF1, 1): (2, False),       # dead, but a receiver may be reading its frame right now
        _name(pid, started): (60, False),       # alive and young: its receiver may attach it
        _name(pid, started)[:24] + "cd" * 4: (600, True),    # alive but nobody attached it in 5 minutes
        "held-" + _name(pid, started): (9999, False),         # an array of a live process still maps it
        "held-" + _name(0x3FFFFFF2, 7): (1, True),            # its holder died
        "keep-" + _name(pid, started)[:24] + "01" * 4: (5, False),    # freed 5 s ago: may carry the next one
        "keep-" + _name(pid, started)[:24] + "02" * 4: (60, True),    # unused for a minute
        "keep-" + _name(0x3FFFFFF3, 7): (1, True),            # its holder died
        "keep-x" + _name(pid, started)[1:]: (9999, False),    # not a name we make: never touched
    }
    os.makedirs(segments.directory, mode=0o700, exist_ok=True)
    now = time.time()
    for name, (age, _) in cases.items():
        path = os.path.join(segments.directory, name)
        open(path, "w").close()
        os.utime(path, (now - age, now - age))
    assert shm.sweep(segments.directory, older_than=300, dead_after=10, keep_for=20) == 6
    assert sorted(os.listdir(segments.directory)) == sorted(n for n, (_, gone) in cases.items() if not gone)
    assert shm.sweep(segments.directory, older_than=300, dead_after=0) == 1     # at engine start: no grace


def test_a_link_removes_what_its_peer_never_attached(segments):
    link = segments.link()
    attached, left = link.export(memoryview(b"a" * 10)), link.export(memoryview(b"b" * 10))
    other = segments.export(memoryview(b"c" * 10))                 # another connection's: not ours to remove
    assert bytes(segments.attach(attached, 10)) == b"a" * 10
    segments.reuse.drop()                                          # (what it kept for reuse is not in question)
    link.close()                                                   # the peer went away
    assert os.listdir(segments.directory) == [other.decode()]
