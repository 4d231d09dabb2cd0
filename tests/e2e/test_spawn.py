"""``f.spawn`` handles end to end on the local engine (real engine, real worker processes): result, await,
done, cancel (queued: never runs; running async def: stopped; running plain def: runs on, reported), and
``Deployment.get_call(id)`` from another process (a restarted kernel) while the engine keeps the result.

Nothing waits on time: calls block on marker files in a folder the test passes, and the test releases them.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.scripts import private_engine_home, result_of, run_script

APP = textwrap.dedent('''
    import asyncio, json, os, sys, time
    from vast_magic import CallCancelledError, ConfigError, Deployment

    app = Deployment(name="spawned")
    app.configure_autoscaling(max_workers=1)
    FOLDER = os.environ["FOLDER"]

    def mark(name):
        open(os.path.join(FOLDER, name), "w").close()

    def seen(name):
        return os.path.exists(os.path.join(FOLDER, name))

    @app.remote(benchmark_dataset=[{"x": 1}], benchmark_runs=1)
    async def double(x):
        print("doubling", x)
        return 2 * x

    @app.remote(allow_parallel_requests=False)
    async def one_at_a_time(name, hold=False, release="release"):
        """Runs alone: a second call queues on the worker until the first returns."""
        mark(name + ".started")
        while hold and not seen(release):
            await asyncio.sleep(0.01)
        mark(name + ".finished")
        return name

    @app.remote
    def blocking(name):
        """A plain def: a cancel cannot interrupt the thread it runs in."""
        mark(name + ".started")
        while not seen("release-blocking"):
            time.sleep(0.01)
        mark(name + ".finished")
        return name

    def wait_for(name, ceiling=120.0):
        """A generous ceiling, so a call that never gets there fails the test instead of hanging it."""
        deadline = time.monotonic() + ceiling
        while not seen(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never appeared; marks: {sorted(os.listdir(FOLDER))}")
            time.sleep(0.01)
''')

FIRST = APP + textwrap.dedent('''
    app.ensure_ready()
    out = {}
    handle = double.spawn(21)
    out["repr"] = repr(handle).split(" of ")[1]
    out["result"] = handle.result(timeout=60)
    out["done"] = handle.done()
    out["cancel_finished"] = handle.cancel()

    async def awaited():
        return await double.spawn(5)
    out["awaited"] = asyncio.run(awaited())

    holder = one_at_a_time.spawn("holder", hold=True)
    wait_for("holder.started")
    queued = one_at_a_time.spawn("queued")
    out["queued_done"] = queued.done()
    out["queued_cancel"] = queued.cancel()
    try:
        queued.result()
    except CallCancelledError as exc:
        out["queued_error"] = [str(exc), exc.outcome]
    out["holder_cancel"] = holder.cancel()              # an async def, running: interrupted
    try:
        holder.result()
    except CallCancelledError as exc:
        out["holder_error"] = [str(exc), exc.outcome]
    after = one_at_a_time.spawn("after")                # the lock is free again
    out["after"] = after.result(timeout=60)
    out["queued_ran"] = seen("queued.started")
    out["holder_finished"] = seen("holder.finished")

    outcomes = set()                                    # the same, 20 times: cancels race connects and reads
    for i in range(20):
        hold = one_at_a_time.spawn(f"hold{i}", hold=True, release=f"release{i}")
        wait_for(f"hold{i}.started")
        behind = one_at_a_time.spawn(f"behind{i}")
        outcomes.add(behind.cancel())
        try:
            behind.result(timeout=60)
        except CallCancelledError as exc:
            outcomes.add(exc.outcome)
        mark(f"release{i}")
        hold.result(timeout=60)
    out["repeated"] = sorted(outcomes)
    out["behind_ran"] = [name for name in os.listdir(FOLDER) if name.startswith("behind")]

    runner = blocking.spawn("thread")
    wait_for("thread.started")
    out["blocking_cancel"] = runner.cancel()
    mark("release-blocking")
    wait_for("thread.finished")                          # it ran on, as reported
    try:
        runner.result()
    except CallCancelledError as exc:
        out["blocking_error"] = exc.outcome

    kept = double.spawn(50)
    kept.result(timeout=60)
    out["kept"] = kept.id
    pending = one_at_a_time.spawn("late", hold=True)    # still running when this process exits
    wait_for("late.started")
    out["pending"] = pending.id
    print("RESULT " + json.dumps(out))
''')

SECOND = APP + textwrap.dedent('''
    out = {}
    ids = json.loads(sys.argv[1])
    kept = app.get_call(ids["kept"])                    # a new process, nothing deployed in it
    out["kept"] = [kept.function, kept.done(), kept.result()]
    pending = app.get_call(ids["pending"])
    out["pending_done"] = pending.done()
    mark("release")
    out["pending"] = pending.result(timeout=60)
    for bad in ("call-0000000000000000", 42):
        try:
            app.get_call(bad)
        except ConfigError as exc:
            out.setdefault("unknown", []).append(str(exc))
    app.teardown()
    print("RESULT " + json.dumps(out))
''')


def run(tmp_path, home: Path, script: str, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "FOLDER": str(tmp_path / "marks"), "VAST_MAGIC_HOME": str(home)}
    proc = run_script(tmp_path, "spawned.py", script, *args, env=env)
    return result_of(proc.stdout), proc.stdout


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Two processes in turn on one engine: the first spawns, the second (a "restarted kernel") finds them."""
    tmp = tmp_path_factory.mktemp("spawn")
    (tmp / "marks").mkdir()
    with private_engine_home(tmp) as handle:
        first, stdout = run(tmp, handle.path, FIRST)
        handle.collect()
        second, stdout2 = run(tmp, handle.path, SECOND,
                              json.dumps({"kept": first["kept"], "pending": first["pending"]}))
    return first, second, stdout, stdout2


def test_spawn_result_await_done(spawned):
    first, _, stdout, _ = spawned
    assert first["repr"] == "double>"
    assert (first["result"], first["done"], first["cancel_finished"], first["awaited"]) == (42, True, "finished", 10)
    assert "doubling 21" in stdout


def test_cancelling_a_queued_call_means_it_never_runs(spawned):
    first = spawned[0]
    assert (first["queued_done"], first["queued_cancel"]) == (False, "never_ran")
    assert first["queued_error"] == ["one_at_a_time was cancelled before it started: it never ran", "never_ran"]
    assert first["after"] == "after" and first["queued_ran"] is False
    assert (first["repeated"], first["behind_ran"]) == (["never_ran"], [])


def test_cancelling_a_running_call_is_best_effort_and_reported(spawned):
    first = spawned[0]
    assert first["holder_cancel"] == "stopped"
    assert first["holder_error"] == ["one_at_a_time was cancelled while running: it was interrupted", "stopped"]
    assert first["holder_finished"] is False
    assert first["blocking_cancel"] == "still_running"
    assert first["blocking_error"] == "still_running"


def test_get_call_finds_a_call_from_another_process(spawned):
    _, second, _, stdout2 = spawned
    assert second["kept"] == ["double", True, 100]
    assert "doubling 50" in stdout2                       # its output shows where the result is read
    assert (second["pending_done"], second["pending"]) == (False, "late")


def test_get_call_of_an_unknown_id_says_how_long_results_are_kept(spawned):
    second = spawned[1]
    assert second["unknown"] == [
        "the local engine has no call 'call-0000000000000000': it keeps a finished call's result for 1 h (the "
        "newest 1000, up to 1024 MiB of results), and none after it restarted. Spawn the call again.",
        "the local engine has no call 42: it keeps a finished call's result for 1 h (the newest 1000, up to 1024 "
        "MiB of results), and none after it restarted. Spawn the call again.",
    ]
