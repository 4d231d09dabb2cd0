"""Call shapes beyond one call, end to end on the local engine (real engine, real worker processes):
results as they complete (``map(ordered=False)``, ``map_as_completed``) and ``starmap``.

Completion order is forced without timing: the call for ``k`` waits until the call for ``k + 1`` has
finished (a marker file in a folder the test passes), so the last input finishes first.
"""
from __future__ import annotations

import os
import textwrap

import pytest

from tests.scripts import private_engine_home, result_of, run_script

SCRIPT = textwrap.dedent('''
    import asyncio, json, os, sys
    from vast_magic import Deployment, RemoteError

    app = Deployment(name="shapes")
    app.configure_autoscaling(max_workers=1)

    @app.remote
    async def chain(folder, k, last):
        """Finishes only after chain(k + 1): the inputs finish in reverse order."""
        if k == "fail":
            raise ValueError("item fails at once")
        while k != last and not os.path.exists(os.path.join(folder, str(k + 1))):
            await asyncio.sleep(0.01)
        print("done", k)
        open(os.path.join(folder, str(k)), "w").close()
        return k

    @app.remote(benchmark_dataset=[{"a": 1}], benchmark_runs=1)
    def add(a, b=10):
        return a + b

    def fresh(name):
        folder = os.path.join(os.getcwd(), name)
        os.makedirs(folder)
        return folder

    app.ensure_ready()
    out = {}
    f = fresh("unordered")
    out["unordered"] = chain.map([f] * 4, range(4), [3] * 4, ordered=False)
    f = fresh("ordered")
    out["ordered"] = chain.map([f] * 4, range(4), [3] * 4)
    f = fresh("sync_completed")
    out["sync_completed"] = list(chain.map_as_completed([f] * 4, range(4), [3] * 4))

    async def consume():
        f = fresh("async_completed")
        got = [value async for value in chain.map_as_completed([f] * 4, range(4), [3] * 4)]
        f = fresh("with_failure")
        mixed = [repr(value) async for value in
                 chain.map_as_completed([f] * 4, [0, 1, "fail", 2], [2] * 4, return_exceptions=True)]
        return got, mixed

    out["async_completed"], out["with_failure"] = asyncio.run(consume())
    f = fresh("raised")
    seen = []
    try:
        for value in chain.map_as_completed([f] * 3, [0, "fail", 1], [1] * 3):
            seen.append(value)
    except RemoteError as exc:
        out["raised"] = [seen, type(exc).__name__, str(exc)]
    f = fresh("unordered_failure")
    out["unordered_failure"] = [repr(v) for v in
                                chain.map([f] * 3, ["fail", 0, 1], [1] * 3, ordered=False, return_exceptions=True)]
    out["starmap"] = add.starmap([(1, 2), (3,), [5, 6]])
    out["starmap_unordered"] = sorted(add.starmap([(1, 2), (3, 4)], ordered=False))
    out["starmap_async"] = asyncio.run(add.starmap_async([(1, 1)]))
    for bad in ([1, 2], ["ab"]):
        try:
            add.starmap(bad)
        except TypeError as exc:
            out.setdefault("bad", []).append(str(exc))
    try:
        add.starmap([(1, 2, 3)])
    except TypeError as exc:
        out["too_many"] = str(exc)
    app.teardown()
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """One script run (a real process, a real engine and worker) whose results every test reads."""
    tmp = tmp_path_factory.mktemp("shapes")
    with private_engine_home(tmp) as handle:
        env = {**os.environ, "VAST_MAGIC_HOME": str(handle.path), "VAST_MAGIC_DISPLAY": "text"}
        proc = run_script(tmp, "shapes.py", SCRIPT, env=env)
        handle.collect()
    return result_of(proc.stdout), proc.stdout, proc.stderr


def test_unordered_map_and_as_completed_yield_in_finishing_order(shapes):
    out, stdout, _ = shapes
    assert out["ordered"] == [0, 1, 2, 3]
    assert out["unordered"] == [3, 2, 1, 0]
    assert out["sync_completed"] == [3, 2, 1, 0]
    assert out["async_completed"] == [3, 2, 1, 0]
    assert "done 3\ndone 2\ndone 1\ndone 0" in stdout           # each call's output, as it completes


def test_a_failed_item_does_not_hold_up_the_others(shapes):
    out, _, stderr = shapes
    failure = "RemoteValueError('ValueError: item fails at once')"
    assert out["with_failure"][0] == failure
    assert out["with_failure"][1:] == ["2", "1", "0"]
    # raised after every other result
    assert out["raised"] == [[1, 0], "RemoteValueError", "ValueError: item fails at once"]
    assert out["unordered_failure"] == [failure, "1", "0"]
    assert "chain.map: 1 of 3 calls failed, items 0" in stderr


def test_starmap(shapes):
    out, _, _ = shapes
    assert out["starmap"] == [3, 13, 11]
    assert out["starmap_unordered"] == [3, 7]
    assert out["starmap_async"] == [2]


def test_starmap_bad_input_says_what_to_pass(shapes):
    out, _, _ = shapes
    assert out["bad"] == [
        "add.starmap takes an iterable of argument tuples; item 0 is int, e.g. add.starmap([(1, 2), (3, 4)]).",
        "add.starmap takes an iterable of argument tuples; item 0 is str, e.g. add.starmap([(1, 2), (3, 4)]).",
    ]
    assert out["too_many"] == "add(a, b=10): too many positional arguments"
