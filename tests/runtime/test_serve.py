"""End to end: a real worker process, a fake engine and a call client, all on 127.0.0.1."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.runtime.worker_harness import CallClient, FakeEngine, pid_alive, remote_spec, spawn_worker, write_bundle

APP = """
import asyncio, os, sys
from vast_magic_runtime.registry import worker_app

app = worker_app()
app.image("python:3.11").pip_install("numpy").env(A="1")
app.configure_autoscaling(max_workers=2)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


@app.context("label-a")
class SlowA:
    def __init__(self, label):
        self.label = label

    async def __aenter__(self):
        print("entering SlowA", flush=True)
        await asyncio.sleep(1.0)
        print("entered SlowA", flush=True)
        return {"label": self.label}

    async def __aexit__(self, *exc):
        print("exited SlowA", flush=True)
        return False


@app.context
class SlowB:
    async def __aenter__(self):
        print("entering SlowB", flush=True)
        await asyncio.sleep(1.0)
        return "b-value"

    async def __aexit__(self, *exc):
        print("exited SlowB", flush=True)
        return False


@app.remote(benchmark_dataset=[{"a": 1, "b": 2}])
async def add(a, b):
    print(f"adding {a} and {b}")
    return a + b


def sync_mul(a, b):
    print("multiplying", file=sys.stderr)
    return a * b


async def fails(x):
    raise ValueError(f"bad input {x}")


def exits():
    sys.exit(3)


async def contexts_and_env():
    return app.get_context(SlowA)["label"], app.get_context("SlowB"), os.environ["MODE"]


async def make_point(x):
    return Point(x, -x)


async def is_point(p):
    return isinstance(p, Point) and p.x


async def slow(seconds):
    await asyncio.sleep(seconds)
    return "done"
"""

REMOTES = [
    remote_spec("add", benchmark_dataset=[{"a": 1, "b": 2}, {"a": 3, "b": 4}], benchmark_runs=2),
    remote_spec("sync_mul", is_async=False), remote_spec("fails"), remote_spec("contexts_and_env"),
    remote_spec("make_point"), remote_spec("is_point"), remote_spec("slow"), remote_spec("exits", is_async=False),
]
CONTEXTS = [{"name": "SlowA", "args": ["label-a"], "kwargs": {}}, {"name": "SlowB", "args": [], "kwargs": {}}]
CONFIG = {"runs": ["echo installing-step-ran", ["sh", "-c", "echo second > made.txt"]],
          "envs": [["MODE", "fast"]]}


class LocalPoint:
    """The client side's version of the shipped class ``Point``."""

    def __init__(self, x, y):
        self.x, self.y = x, y


@pytest.fixture()
def workers():
    """Every worker a test starts; all killed by PID afterwards, and none may be left."""
    started = []
    yield started
    for worker in started:
        worker.stop()
    assert not [w.pid for w in started if pid_alive(w.pid) and w.proc.poll() is None]


def _run(coro, timeout: float = 180):
    """Generous ceilings: a loaded 2-core machine is slow, and nothing here measures speed."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _wait_for_line(worker, line: str, timeout: float = 60) -> None:
    """Until the worker's output holds ``line`` (an event, instead of a sleep that guesses how long it takes)."""
    deadline = time.monotonic() + timeout
    while line not in worker.logs().splitlines():
        assert time.monotonic() < deadline, f"no {line!r} from the worker in {timeout} s:\n{worker.logs()}"
        await asyncio.sleep(0.05)


async def _start_until_failed(bundle, workers: list):
    """Start one worker on ``bundle`` against a fake engine; its first final state, exit code, and the worker."""
    engine = await FakeEngine().start()
    workers.append(worker := spawn_worker(bundle, engine.port))
    failed = await engine.wait_state("failed", "ready", timeout=30)
    code = await asyncio.to_thread(worker.wait, 5)
    await engine.close()
    return failed, code, worker


def _check_call_results(results: list[dict]) -> None:
    """Values, envelopes and per-call output of the calls made in the end-to-end test."""
    add, mul, fails, ctx, point, is_point, slow, unknown, bad_args, exits = results
    assert (add["ok"], add["value"], add["output"]) == (True, 5, [("stdout", "adding 2 and 3\n")])
    assert (mul["value"], mul["output"]) == (42, [("stderr", "multiplying\n")])
    assert fails["ok"] is False and fails["error"]["type"] == "builtins.ValueError"
    assert fails["error"]["message"] == "bad input 5" and "in fails" in fails["error"]["traceback"]
    assert ctx["value"] == ("label-a", "b-value", "fast")
    assert isinstance(point["value"], LocalPoint) and (point["value"].x, point["value"].y) == (4, -4)
    assert is_point["value"] == 9
    assert slow["error"]["type"] == "builtins.TimeoutError" and "0.5 s" in slow["error"]["message"]
    assert unknown["error"]["type"] == "builtins.LookupError" and "add" in unknown["error"]["message"]
    assert bad_args["error"]["type"] == "builtins.TypeError"
    assert exits["error"]["type"] == "builtins.SystemExit"          # and the worker keeps serving


def test_worker_life_end_to_end(tmp_path: Path, workers):
    bundle = write_bundle(tmp_path / "bundle", APP, remotes=REMOTES, contexts=CONTEXTS, classes=["Point"],
                          config=CONFIG)

    async def scenario():
        engine = await FakeEngine().start()
        workers.append(worker := spawn_worker(bundle, engine.port))
        ready = await engine.wait_state("ready", "failed", timeout=30)
        assert ready["state"] == "ready", ready["error"]
        client = await CallClient({LocalPoint: "vast_magic_app:Point"},
                                 {"vast_magic_app:Point": LocalPoint}).connect(ready["port"])
        results = await asyncio.gather(
            client.call("add", 2, b=3), client.call("sync_mul", 6, 7), client.call("fails", 5),
            client.call("contexts_and_env"), client.call("make_point", 4), client.call("is_point", LocalPoint(9, 0)),
            client.call("slow", 5.0, timeout=0.5), client.call("nope"), client.call("add", 1, 2, 3),
            client.call("exits"))
        await client.close()
        await asyncio.sleep(0.4)                          # let the log shipper send the call lines
        engine.drop()
        code = await asyncio.to_thread(worker.wait, 60)
        await engine.close()
        return engine, ready, results, code, worker

    engine, ready, results, code, worker = _run(scenario())
    assert engine.state_names() == ["starting", "installing", "contexts", "benchmarking", "ready"]
    assert ready["perf"] > 0 and ready["median"] > 0 and ready["worker"] == "w1"
    steps = [line for line in worker.logs().splitlines() if line.startswith("enter")]
    assert sorted(steps[:2]) == ["entering SlowA", "entering SlowB"], steps     # in parallel: both began first
    _check_call_results(results)
    logs = engine.log_lines()
    # set-up output goes to the worker's stdout (a pipe the engine logs), not twice through the link
    assert "installing-step-ran" in worker.logs() and all(line[3] is not None for line in logs)
    assert ("stdout", "adding 2 and 3", "add") in [line[1:] for line in logs]
    assert ("stdout", "adding 1 and 2", "add") in [line[1:] for line in logs]    # benchmark calls, tagged
    assert (bundle / "made.txt").read_text() == "second\n"
    assert code == 0, (code, worker.logs())                 # losing the engine ends the worker
    assert "exited SlowA" in worker.logs() and "exited SlowB" in worker.logs()


def test_overloaded_calls_are_refused_at_once(tmp_path: Path, workers):
    bundle = write_bundle(tmp_path / "bundle", APP, remotes=REMOTES, config=CONFIG)

    async def scenario():
        engine = await FakeEngine().start()
        workers.append(worker := spawn_worker(bundle, engine.port, fixed_perf=10))
        ready = await engine.wait_state("ready", "failed", timeout=30)
        assert ready["state"] == "ready", ready["error"]
        with pytest.raises(PermissionError):
            await CallClient().connect(ready["port"], token="wrong")
        client = await CallClient().connect(ready["port"])
        big = asyncio.ensure_future(client.call("slow", 5.0, cost=250.0))    # idle worker: always admitted
        await asyncio.sleep(0.05)
        refused = await client.call("add", 1, 1, cost=100.0)                  # 350 / 10 per s = 35 s > 30 s
        refused_at_once = not big.done()                 # a call queued behind big would answer after it
        admitted = await client.call("add", 1, 1, cost=1.0)                   # 251 / 10 = 25.1 s: fits
        assert not big.done()
        assert (await big)["value"] == "done"
        await engine.send({"op": "stop", "grace": 1.0})
        code = await asyncio.to_thread(worker.wait, 5)
        await client.close()
        await engine.close()
        return engine, ready, refused, refused_at_once, admitted, code

    engine, ready, refused, refused_at_once, admitted, code = _run(scenario())
    assert ready["perf"] == 10.0 and "benchmarking" not in engine.state_names()
    assert refused["ok"] is False and refused["overloaded"] is True and "max_queue_time" in refused["message"]
    assert refused_at_once and admitted["value"] == 2
    assert code == 0 and engine.state_names()[-1] == "stopped"
    loads = [m for _, m in engine.messages if m["op"] == "load"]
    assert loads and loads[0]["calls"] >= 1 and loads[0]["inflight"] >= 250.0


def test_a_failing_context_reports_failed_with_the_traceback(tmp_path: Path, workers):
    app = APP + """

class Broken:
    async def __aenter__(self):
        raise RuntimeError("no GPU here")

    async def __aexit__(self, *exc):
        return False
"""
    contexts = CONTEXTS[1:] + [{"name": "Broken", "args": [], "kwargs": {}}]
    bundle = write_bundle(tmp_path / "bundle", app, remotes=REMOTES, contexts=contexts, config=CONFIG)

    failed, code, worker = _run(_start_until_failed(bundle, workers))
    assert failed["state"] == "failed" and failed["port"] is None
    assert "RuntimeError: no GPU here" in failed["error"] and "__aenter__" in failed["error"]
    assert code not in (0, None)
    assert "exited SlowB" in worker.logs()                  # what was entered is exited


@pytest.mark.parametrize("config, remotes, expected", [
    ({"runs": ["echo about-to-fail; exit 3"]}, REMOTES, ["status 3", "about-to-fail"]),
    ({"runs": [["definitely-not-a-command-xyz"]]}, REMOTES, ["definitely-not-a-command-xyz"]),
    ({}, [remote_spec("missing_function")], ["missing_function", "cannot find it there"]),
    ({}, [remote_spec("fails", benchmark_dataset=[{"x": 1}])], ["benchmark call fails", "bad input 1"]),
])
def test_start_up_failures_report_failed(tmp_path: Path, workers, config, remotes, expected):
    bundle = write_bundle(tmp_path / "bundle", APP, remotes=remotes, config=config)

    failed, code, _ = _run(_start_until_failed(bundle, workers))
    assert failed["state"] == "failed" and code not in (0, None)
    for text in expected:
        assert text in failed["error"]


def test_bundle_shape_runs_with_vendored_cloudpickle_and_stops_on_sigterm(tmp_path: Path, workers):
    """The shipped package alone (python -S: no site-packages, so no vast_magic and no cloudpickle)."""
    import cloudpickle
    bundle = write_bundle(tmp_path / "bundle", APP, remotes=REMOTES[:2], config=CONFIG, with_runtime=True)
    vendor = bundle / "vast_magic_runtime" / "_vendor"
    vendor.mkdir()
    import shutil
    shutil.copytree(Path(cloudpickle.__file__).parent, vendor / "cloudpickle",
                    ignore=shutil.ignore_patterns("__pycache__"))

    async def scenario():
        engine = await FakeEngine().start()
        workers.append(worker := spawn_worker(bundle, engine.port, module="vast_magic_runtime.serve",
                                              python_flags=["-S"]))
        ready = await engine.wait_state("ready", "failed", timeout=30)
        assert ready["state"] == "ready", ready["error"]
        client = await CallClient().connect(ready["port"])
        answer = await client.call("sync_mul", 3, 5)
        os.kill(worker.pid, signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 5)
        await client.close()
        await engine.close()
        return engine, answer, code

    engine, answer, code = _run(scenario())
    assert answer["value"] == 15 and code == 0
    assert engine.state_names()[-1] == "stopped"


def test_losing_the_engine_during_start_up_exits_without_waiting_for_contexts(tmp_path: Path, workers):
    app = APP.replace("await asyncio.sleep(1.0)\n        return \"b-value\"", "await asyncio.sleep(3600)")
    assert app != APP
    bundle = write_bundle(tmp_path / "bundle", app, remotes=REMOTES, contexts=CONTEXTS, config=CONFIG)

    async def scenario():
        engine = await FakeEngine().start()
        workers.append(worker := spawn_worker(bundle, engine.port))
        await engine.wait_state("contexts", timeout=30)
        await _wait_for_line(worker, "entered SlowA")      # SlowA is entered; SlowB sleeps for an hour
        engine.drop()
        code = await asyncio.to_thread(worker.wait, 60)     # well before SlowB would finish
        await engine.close()
        return code, worker

    code, worker = _run(scenario())
    assert code is not None, worker.logs()
    assert "exited SlowA" in worker.logs() and "exited SlowB" not in worker.logs()
