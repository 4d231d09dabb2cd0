"""Per-call output capture: concurrent calls (coroutines and to_thread) each get only their own lines."""
from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading

import pytest

from vast_magic.runtime import output


@contextlib.contextmanager
def swapped_streams():
    """Real streams replaced by StringIOs with proxies over them, restored after.

    Used inside the test body: pytest re-installs its own capture between setup and call.
    """
    saved = sys.stdout, sys.stderr
    real_out, real_err = sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        output.install()
        yield real_out, real_err
    finally:
        sys.stdout, sys.stderr = saved
        output.set_log_sink(None)


async def _call(i: int, use_thread: bool) -> list:
    with output.capture(f"f{i}") as out:
        for step in range(5):
            if use_thread:
                await asyncio.to_thread(lambda s=step: print(f"call {i} line {s}"))
            else:
                print(f"call {i} line {step}")
            print(f"call {i} err {step}", file=sys.stderr)
            await asyncio.sleep(0.001 * ((i * 7 + step) % 3))
    return out.items()


def test_ten_concurrent_calls_get_only_their_own_output():
    async def scenario():
        return await asyncio.gather(*(_call(i, use_thread=i % 2 == 0) for i in range(10)))

    with swapped_streams() as streams:
        results = asyncio.run(scenario())
    for i, items in enumerate(results):
        out = "".join(t for s, t in items if s == "stdout")
        err = "".join(t for s, t in items if s == "stderr")
        assert out.splitlines() == [f"call {i} line {s}" for s in range(5)]
        assert err.splitlines() == [f"call {i} err {s}" for s in range(5)]
    assert streams[0].getvalue() == "" and streams[1].getvalue() == ""


def test_writes_outside_calls_go_to_the_real_stream_only_and_calls_also_to_the_sink():
    """The local engine logs the real stream (a pipe) itself: the sink gets only what calls print, once."""
    seen = []
    with swapped_streams() as streams:
        output.set_log_sink(lambda stream, text, function, owner: seen.append((stream, text, function)))
        print("worker says hi")
        with output.capture("square") as out:
            print("inside")
            thread = threading.Thread(target=print, args=("from a plain thread",))   # no context copied
            thread.start()
            thread.join(5)
    assert streams[0].getvalue().splitlines() == ["worker says hi", "from a plain thread"]
    assert out.items() == [("stdout", "inside\n")]
    assert ("stdout", "inside", "square") in seen and {function for _, _, function in seen} == {"square"}


class _BrokenPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_real_stream_never_fails_a_print():
    """The engine died (its end of the worker's output pipe is gone): the worker's prints must not raise."""
    saved = sys.stdout
    try:
        sys.stdout = _BrokenPipe()
        output.install()
        print("still fine")
        sys.stdout.flush()
        with output.capture("f") as out:
            print("inside")
    finally:
        sys.stdout = saved
    assert out.items() == [("stdout", "inside\n")]


def test_consecutive_writes_merge_and_stream_changes_split():
    with swapped_streams(), output.capture() as out:
        sys.stdout.write("a")
        sys.stdout.write("b")
        sys.stderr.write("c")
        sys.stdout.write("d")
    assert out.items() == [("stdout", "ab"), ("stderr", "c"), ("stdout", "d")]


def test_install_is_idempotent_and_proxies_delegate():
    with swapped_streams():
        proxy = sys.stdout
        output.install()
        assert sys.stdout is proxy and proxy.getvalue() == ""   # StringIO method reached through the proxy
        with pytest.raises(TypeError):
            sys.stdout.write(b"bytes")


def test_capture_is_bounded(monkeypatch):
    monkeypatch.setattr(output, "MAX_CAPTURE_CHARS", 100)
    with swapped_streams(), output.capture() as out:
        for _ in range(50):
            print("x" * 9)
    text = "".join(t for _, t in out.items())
    assert text.startswith("x" * 9) and text.endswith("output truncated]\n") and len(text) < 200
