"""A worker whose start fails sends its traceback on its engine link, then exits.

The engine's heartbeat can find the process gone before it has read that
message: it then reaped the worker with its own guess ("worker exited with
code 1" and the log's tail, which has no traceback), and the deploy failed
with that instead of the user's error (seen in CI: the widget's failed card
without "no weights here"). A dead worker whose link is still open is now
reaped only once the link has been read to its end, or ``LAST_WORDS`` s after
the exit was seen. No process here: a worker whose ``poll()`` says it exited,
and a link that is open or closed, on an engine with no process.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.backends.local.engine_harness import engine_with_step
from vast_magic.backends.local import engine_model
from vast_magic.backends.local.engine_model import Worker
from vast_magic.backends.local.store import WorkerRecord

TRACEBACK = "Traceback (most recent call last):\nFileNotFoundError: no weights here"


class _Link:
    """The engine's side of a worker's link: open until read to its end."""

    def __init__(self, closed: bool):
        self.closed = closed

    def close(self) -> None:
        self.closed = True


class _Exited:
    """A process handle whose process has exited with ``code``."""

    def __init__(self, code: int):
        self.code = code

    def poll(self) -> int:
        return self.code


def _dead_worker(tmp_path, link_open: bool) -> Worker:
    rec = WorkerRecord("d-t-1", "d", "t", None, None, None, "contexts", None, "v1", None, str(tmp_path / "w"),
                       str(tmp_path / "w.log"), time.time())
    worker = Worker(rec=rec, popen=_Exited(1), role="candidate")
    worker.channel = _Link(closed=not link_open)
    return worker


def test_a_dead_worker_is_reaped_after_its_last_words_are_read(tmp_path):
    engine, dep = engine_with_step(tmp_path, step=None)
    worker = _dead_worker(tmp_path, link_open=True)
    dep.workers[worker.rec.id] = worker

    async def scenario():
        await engine._reap_exited(dep)
        assert worker.rec.id in dep.workers, "reaped while its link still held its last words"
        await engine.on_worker_message({"op": "state", "worker": worker.rec.id, "state": "failed",
                                        "error": TRACEBACK}, worker.channel)
        await engine.on_worker_disconnect(worker.channel)
        await engine._reap_exited(dep)
        assert worker.rec.id not in dep.workers
        assert worker.rec.state == "failed" and worker.rec.error == TRACEBACK
    try:
        asyncio.run(scenario())
    finally:
        engine.store.close()


@pytest.mark.parametrize("link_open, last_words, reaped", [
    (False, 1.0, True),          # the link was read to its end: nothing more to wait for
    (True, 1.0, False),          # open: wait
    (True, 0.0, True),           # open past LAST_WORDS (a child holding the socket): reaped with the engine's guess
])
def test_when_a_dead_worker_is_reaped(tmp_path, monkeypatch, link_open, last_words, reaped):
    monkeypatch.setattr(engine_model, "LAST_WORDS", last_words)
    engine, dep = engine_with_step(tmp_path, step=None)
    worker = _dead_worker(tmp_path, link_open)
    dep.workers[worker.rec.id] = worker
    try:
        asyncio.run(engine._reap_exited(dep))
    finally:
        engine.store.close()
    assert (worker.rec.id not in dep.workers) == reaped
    if reaped:
        assert worker.rec.state == "failed" and worker.rec.error.startswith("worker exited with code 1"), worker.rec
