"""Shared-memory files used again: only once nothing maps them, never under a forked child, bounded, and
gone with their process.

A receiver holds the file it mapped and, once the last array on it is gone,
keeps it to carry its own next big buffer (the same tmpfs pages, so no page
allocation). Each test checks what the user would see go wrong: an array
whose bytes change under it, memory that stays, a file that outlives its
process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vast_magic.runtime import shm, shm_reuse

MIB = 1 << 20


@pytest.fixture
def pair(tmp_path):
    """A sender's and a receiver's ``Segments`` in one folder (two processes in real use)."""
    directory = shm.segment_dir(tmp_path)
    if directory is None:
        pytest.skip("no /dev/shm on this system: frames carry big buffers inline")
    sender, receiver = shm.Segments.open(directory), shm.Segments.open(directory)
    yield sender, receiver
    sender.reuse.drop()
    receiver.reuse.drop()
    shm.remove_dir(directory)


def _send(sender, receiver, array: np.ndarray) -> np.ndarray:
    name = sender.export(memoryview(array).cast("B"))
    assert name is not None
    return np.frombuffer(receiver.attach(name, array.nbytes), dtype=array.dtype)


def _names(directory: str, prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(prefix))


def test_a_freed_buffer_carries_the_next_one_and_a_live_one_is_never_overwritten(pair):
    sender, receiver = pair
    first = _send(sender, receiver, np.full(2 * MIB, 1, dtype=np.uint8))
    second = _send(sender, receiver, np.full(2 * MIB, 2, dtype=np.uint8))
    directory = receiver.directory
    assert len(_names(directory, shm_reuse.HELD)) == 2
    del first                                                 # the only array on its file
    assert len(_names(directory, shm_reuse.KEPT)) == 1 and len(_names(directory, shm_reuse.HELD)) == 1
    third = _send(receiver, sender, np.full(3 * MIB, 3, dtype=np.uint8))     # the receiver sends next
    assert _names(directory, shm_reuse.KEPT) == []           # it took the kept file: same pages, grown
    assert (second == 2).all() and (third == 3).all() and third.size == 3 * MIB   # nothing live changed


def test_the_reused_file_is_the_same_inode(pair):
    sender, receiver = pair
    got = _send(sender, receiver, np.zeros(MIB, dtype=np.uint8))
    (held,) = _names(receiver.directory, shm_reuse.HELD)
    inode = os.stat(os.path.join(receiver.directory, held)).st_ino
    del got
    name = receiver.export(memoryview(np.ones(MIB, dtype=np.uint8)))
    assert os.stat(os.path.join(receiver.directory, name.decode())).st_ino == inode
    assert _names(receiver.directory, shm_reuse.KEPT) == []


def test_a_view_keeps_its_file_held_until_the_last_one_goes(pair):
    sender, receiver = pair
    whole = _send(sender, receiver, np.arange(MIB, dtype=np.int64))
    tail = whole[-10:]                                        # a view keeps the mapping alive
    del whole
    assert _names(receiver.directory, shm_reuse.KEPT) == []
    receiver.export(memoryview(np.zeros(MIB, dtype=np.int64)).cast("B"))
    assert list(tail) == list(range(MIB - 10, MIB))
    del tail
    assert len(_names(receiver.directory, shm_reuse.KEPT)) == 1


def test_a_file_mapped_before_a_fork_is_never_written_again(pair):
    sender, receiver = pair
    array = _send(sender, receiver, np.full(2 * MIB, 7, dtype=np.uint8))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                                            # the child keeps the array and checks it later
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0 if (array == 7).all() and not receiver.reuse.kept() else 1)
    os.close(read_end)
    del array                                                 # the parent lets go: unlinked, not kept
    assert _names(receiver.directory, shm_reuse.KEPT) == [] == _names(receiver.directory, shm_reuse.HELD)
    name = receiver.export(memoryview(np.full(2 * MIB, 9, dtype=np.uint8)))
    os.write(write_end, b"x")
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's array changed under it"
    receiver.discard(name)


def test_at_most_keep_files_wait_oldest_go_first(pair, monkeypatch):
    sender, receiver = pair
    monkeypatch.setattr(shm_reuse, "KEEP_FILES", 2)
    arrays = [_send(sender, receiver, np.zeros(MIB, dtype=np.uint8)) for _ in range(3)]
    held = _names(receiver.directory, shm_reuse.HELD)
    arrays.clear()
    kept = receiver.reuse.kept()
    assert len(kept) == 2 and len(os.listdir(receiver.directory)) == 2
    assert len(held) == 3


def test_too_big_or_too_old_files_are_not_kept(pair, monkeypatch):
    sender, receiver = pair
    monkeypatch.setattr(shm_reuse, "KEEP_BYTES", MIB)
    big = _send(sender, receiver, np.zeros(2 * MIB, dtype=np.uint8))
    assert os.listdir(receiver.directory) == []               # unlinked at once, as before reuse existed
    del big
    monkeypatch.setattr(shm_reuse, "KEEP_SECONDS", 0.0)
    small = _send(sender, receiver, np.zeros(MIB, dtype=np.uint8))
    del small
    assert len(receiver.reuse.kept()) == 1
    name = receiver.export(memoryview(np.ones(MIB, dtype=np.uint8)))     # too old by now: a fresh file
    assert receiver.reuse.kept() == [] and os.listdir(receiver.directory) == [name.decode()]


def test_a_kept_file_swept_away_means_a_fresh_one(pair):
    sender, receiver = pair
    got = _send(sender, receiver, np.zeros(MIB, dtype=np.uint8))
    del got
    assert shm.sweep(receiver.directory, older_than=300, keep_for=0) == 1
    name = receiver.export(memoryview(np.ones(MIB, dtype=np.uint8)))
    assert name is not None and os.listdir(receiver.directory) == [name.decode()]


EXIT_HOLDING = textwrap.dedent('''
    import sys
    import numpy as np
    from vast_magic.runtime import shm
    sender, receiver = shm.Segments.open(sys.argv[1]), shm.Segments.open(sys.argv[1])
    def send():
        name = sender.export(memoryview(np.ones(1 << 20, dtype=np.uint8)))
        return receiver.attach(name, 1 << 20)
    held, freed = send(), send()
    del freed
    print(len(receiver.reuse.kept()), flush=True)
''')


def test_a_process_that_exits_leaves_no_held_or_kept_file(tmp_path):
    directory = shm.segment_dir(tmp_path)
    if directory is None:
        pytest.skip("no /dev/shm on this system")
    try:
        done = subprocess.run([sys.executable, "-c", EXIT_HOLDING, directory], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1"                     # one kept, one still held at exit
        assert os.listdir(directory) == []
    finally:
        shm.remove_dir(directory)


def test_a_small_dev_shm_keeps_nothing(pair, monkeypatch):
    sender, receiver = pair
    free = os.statvfs(receiver.directory).f_bavail * os.statvfs(receiver.directory).f_frsize
    monkeypatch.setattr(shm_reuse, "ROOM_FACTOR", free // MIB + 1)      # as if /dev/shm had room for less
    got = _send(sender, receiver, np.zeros(MIB, dtype=np.uint8))
    del got
    assert receiver.reuse.kept() == [] and os.listdir(receiver.directory) == []


@pytest.mark.parametrize("kept_before, expect_shared", [(True, True), (False, False)])
def test_full_shared_memory_drops_what_is_kept_and_tries_once_more(pair, monkeypatch, kept_before, expect_shared):
    import errno
    sender, receiver = pair
    if kept_before:
        got = _send(sender, receiver, np.zeros(MIB, dtype=np.uint8))
        del got
        assert len(receiver.reuse.kept()) == 1
    real_write, failures = os.write, []

    def full_once(fd, data):
        if not failures:
            failures.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_once)
    name = receiver.export(memoryview(np.ones(MIB, dtype=np.uint8)))
    monkeypatch.undo()
    assert (name is not None) is expect_shared                # shared after freeing room, else inline (None)
    assert receiver.reuse.kept() == []
    assert os.listdir(receiver.directory) == ([name.decode()] if name else [])
