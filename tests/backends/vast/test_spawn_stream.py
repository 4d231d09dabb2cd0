"""``f.spawn`` and ``f.stream`` on Vast through the fake API.

Spawned calls are tasks of this process (Vast has no engine to keep them), found again by id in the same
process; a cancel before the worker POST means the call never runs, one after it is reported as possibly
running on (Vast cannot stop a request). A stream is one request whose items the worker collects (the
stock worker answers one body per request); a note says so once per function. The fake's worker runs the
uploaded bundle (its shim opens the sealed envelope, ``collect`` included); only the call that must hang is
scripted (``FakeVast.functions``)."""
from __future__ import annotations

import asyncio

import pytest

from vast_magic import CallCancelledError, Deployment
from vast_magic.errors import ConfigError
from vast_magic.testing import FakeVast

KEY = "user-key-0123456789"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")


def square(x):
    print("squaring", x)
    return x * x


def deployed(fake: FakeVast) -> Deployment:
    app = Deployment(name="spawnvast", backend="vast", api_key=KEY, transport=fake.transport())
    app.remote(benchmark_dataset=[{"x": 2}])(square)
    app.ensure_ready()
    return app


def test_spawn_result_done_and_get_call_in_this_process(capsys):
    fake = FakeVast(api_key=KEY, ready_after=0)
    app = deployed(fake)
    handle = app.functions["square"].spawn(7)
    assert handle.result(timeout=30) == 49 and handle.done()
    again = app.get_call(handle.id)
    assert (again.function, again.result()) == ("square", 49)
    assert capsys.readouterr().out.count("squaring 7") == 2     # each handle shows the output once
    assert handle.cancel() == "finished"

    async def awaited():
        return await app.functions["square"].spawn(3)
    assert asyncio.run(awaited()) == 9
    with pytest.raises(ConfigError, match=r"^this process has no call 'call-0': on Vast, spawned calls live in the "
                                          r"process that spawned them, for 1 h after they finished \(the newest "
                                          r"1000\)\. Spawn the call again\.$"):
        app.get_call("call-0")


def test_cancel_before_the_worker_post_means_it_never_runs():
    fake = FakeVast(api_key=KEY, ready_after=0)
    app = deployed(fake)
    fake.route_waits = 10 ** 9                             # /route/ keeps answering "waiting for workers"
    handle = app.functions["square"].spawn(5)
    assert handle.done() is False
    assert handle.cancel() == "never_ran"
    with pytest.raises(CallCancelledError, match="^square was cancelled before it was sent: it never ran$") as info:
        handle.result()
    assert info.value.outcome == "never_ran"
    assert not [r for r in fake.requests if r.path.startswith("/remote/")]


def test_cancel_after_the_worker_post_is_reported_as_possibly_running():
    started = []

    async def hold(x):
        started.append(x)
        await asyncio.sleep(3600)

    fake = FakeVast(api_key=KEY, ready_after=0)
    app = deployed(fake)
    fake.functions["square"] = hold
    handle = app.functions["square"].spawn(5)
    while not handle.done() and not started:
        pass
    assert handle.cancel() == "still_running"
    with pytest.raises(CallCancelledError, match="after it was sent to a Vast worker, which cannot be told to stop"):
        handle.result()


def tokens(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"failed at token {i}")
        yield f"t{i}"


async def atokens(n):
    for i in range(n):
        yield i


def test_stream_on_vast_collects_the_items_on_the_worker_and_says_so_once(capsys):
    """The documented fallback: one request, the items together at the end, an error after them."""
    fake = FakeVast(api_key=KEY, ready_after=0)
    app = Deployment(name="streamvast", backend="vast", api_key=KEY, transport=fake.transport())
    app.remote(benchmark_dataset=[{"x": 2}])(square)
    app.remote(tokens)
    app.remote(atokens)
    app.ensure_ready()
    capsys.readouterr()
    posts = len([r for r in fake.requests if r.path.startswith("/remote/")])
    assert list(app.functions["tokens"].stream(3)) == ["t0", "t1", "t2"]
    assert len([r for r in fake.requests if r.path.startswith("/remote/")]) == posts + 1
    note = ("[vast_magic] tokens.stream on Vast: the stock worker answers one body per request, so the items were "
            "collected on the worker and arrive together when tokens ends (on the local engine they arrive as they "
            "are made).\n")
    assert capsys.readouterr().err == note
    got = []
    with pytest.raises(ValueError, match="^ValueError: failed at token 2$"):
        for item in app.functions["tokens"].stream(5, fail_at=2):
            got.append(item)
    assert got == ["t0", "t1"] and capsys.readouterr().err == ""      # the note comes once

    async def consume():
        return [x async for x in app.functions["atokens"].stream(4)]
    assert asyncio.run(consume()) == [0, 1, 2, 3]


def test_the_stream_collect_flag_travels_inside_the_sealed_envelope(tmp_path):
    """Nothing but the signed envelope is in the request: ``collect`` is read only after the HMAC check."""
    import base64
    import os

    from vast_magic.backends.vast import envelope, sealing
    from vast_magic.runtime import sealed
    from vast_magic.testing import WORKER

    fake = FakeVast(api_key=KEY, ready_after=0)
    app = Deployment(name="streamvast", backend="vast", api_key=KEY, transport=fake.transport())
    app.remote(benchmark_dataset=[{"x": 2}])(square)
    app.remote(tokens)
    app.ensure_ready()
    assert list(app.functions["tokens"].stream(2)) == ["t0", "t1"]
    body = fake.sent("POST", "/remote/tokens")[-1].body
    assert list(body["payload"]["kwargs"]) == [envelope.PARAM]
    key = sealing.read_key(os.environ["VAST_MAGIC_HOME"], "streamvast", "default")
    header, payload = sealed.Opener(key, url=WORKER).open(body["payload"]["kwargs"][envelope.PARAM], "tokens")
    message = envelope.decode(base64.b64encode(payload).decode("ascii"))
    assert (message["args"], message.get("collect")) == ((2, None), True) and header.version is not None
    tampered = body["payload"]["kwargs"][envelope.PARAM].replace("A", "B", 1)
    with pytest.raises(sealed.Refused):
        sealed.Opener(key, url=WORKER).open(tampered, "tokens")
