"""Remote generators end to end on the local engine (real engine, real worker processes): ``f.stream`` in
sync and async code, items arriving while the worker still runs, backpressure (the worker stays at most a
window ahead), an error mid-stream after the items before it, leaving early, and misuse refused.

Nothing waits on time: the generator blocks on marker files the consumer writes, and counts what it made.
"""
from __future__ import annotations

import os
import textwrap

import pytest

from tests.scripts import private_engine_home, result_of, run_script

SCRIPT = textwrap.dedent('''
    import asyncio, json, os, sys, time
    from vast_magic import Deployment, RemoteError

    app = Deployment(name="streams")
    app.configure_autoscaling(max_workers=1)
    FOLDER = os.environ["FOLDER"]
    MADE = {"count": 0}

    def seen(name):
        return os.path.exists(os.path.join(FOLDER, name))

    def wait_for(name, ceiling=120.0):
        """A generous ceiling, so a call that never gets there fails the test instead of hanging it."""
        deadline = time.monotonic() + ceiling
        while not seen(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never appeared; marks: {sorted(os.listdir(FOLDER))}")
            time.sleep(0.01)

    @app.remote(benchmark_dataset=[{"n": 2}], benchmark_runs=1)
    async def count(n):
        for i in range(n):
            MADE["count"] = i + 1
            yield i

    @app.remote
    async def made():
        return MADE["count"]

    @app.remote
    async def first_then_wait():
        yield "first"
        while not seen("consumer-has-first"):
            await asyncio.sleep(0.01)
        yield "second"

    @app.remote
    def tokens(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"failed at token {i}")
            print("token", i)
            yield f"t{i}"

    @app.remote
    async def plain(x):
        return x

    app.ensure_ready()
    out = {"sync": list(tokens.stream(3))}

    async def consume():
        return [x async for x in count.stream(5)]
    out["async"] = asyncio.run(consume())

    items = first_then_wait.stream()
    for item in items:                      # "first" arrives while the worker waits for this marker
        out.setdefault("live", []).append(item)
        open(os.path.join(FOLDER, "consumer-has-first"), "w").close()

    got = []
    try:
        for item in tokens.stream(5, fail_at=2):
            got.append(item)
    except RemoteError as exc:
        out["failed"] = [got, type(exc).__name__, str(exc)]

    stream = iter(count.stream(100_000))
    out["first"] = next(stream)
    def made_reaches(level, ceiling=120.0):
        deadline = time.monotonic() + ceiling
        while (now := made.call()) < level:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the generator made {now} items, never {level}")
        return now

    reached = made_reaches(65)              # the window of 64 sent, one more made and held, then it waits
    time.sleep(0.5)
    out["ahead"] = [reached, made.call()]
    for _ in range(64):                     # the first window consumed, and one more asked for: credit
        next(stream)
    made_reaches(97)
    time.sleep(0.5)
    out["after_credit"] = [made.call(), made.call()]
    stream.close()                          # leaving early stops the generator on the worker
    time.sleep(0.5)
    out["after_close"] = [made.call(), made.call()]

    for action, call in (("call", lambda: count.call(3)), ("await", lambda: count(3)),
                         ("map", lambda: count.map([1])), ("spawn", lambda: count.spawn(1)),
                         ("stream", lambda: plain.stream(1))):
        try:
            call()
        except TypeError as exc:
            out.setdefault("refused", []).append([action, str(exc)])
    app.teardown()
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streams")
    (tmp / "marks").mkdir()
    with private_engine_home(tmp) as handle:
        env = {**os.environ, "VAST_MAGIC_HOME": str(handle.path), "VAST_MAGIC_DISPLAY": "text",
               "FOLDER": str(tmp / "marks")}
        proc = run_script(tmp, "streams.py", SCRIPT, env=env)
        handle.collect()
    return result_of(proc.stdout), proc.stdout


def test_stream_in_sync_and_async_code(streams):
    out, stdout = streams
    assert out["sync"] == ["t0", "t1", "t2"] and out["async"] == [0, 1, 2, 3, 4]
    assert "token 0\ntoken 1\ntoken 2" in stdout              # what the generator printed, once it ended


def test_items_arrive_while_the_worker_still_runs(streams):
    assert streams[0]["live"] == ["first", "second"]


def test_an_error_mid_stream_comes_after_the_items_before_it(streams):
    assert streams[0]["failed"] == [["t0", "t1"], "RemoteValueError", "ValueError: failed at token 2"]


def test_backpressure_keeps_the_worker_a_window_ahead_at_most(streams):
    out = streams[0]
    assert out["first"] == 0
    assert out["ahead"] == [65, 65]                   # a window of 64 items sent, one held, then it waits
    # 65 consumed: credit for at least half a window more, never more than a window beyond what was consumed
    made_then, made_later = out["after_credit"]
    assert 97 <= made_then == made_later <= 64 + 65 + 1
    assert out["after_close"][0] == out["after_close"][1] <= made_then + 1


def test_misuse_is_refused_with_what_to_do(streams):
    yields = "count yields items: consume it with `for x in count.stream(...)` (or `async for`), not a plain call."
    assert streams[0]["refused"] == [
        ["call", yields], ["await", yields], ["map", yields], ["spawn", yields],
        ["stream", "plain does not yield: call it with `await plain(...)` or `plain.call(...)`; "
                   ".stream(...) is for generators."],
    ]
