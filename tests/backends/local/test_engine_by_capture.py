"""The local engine driven end to end by capture: cells -> capture -> bundle -> manifest -> tier -> workers.

The other engine tests hand the engine bundles and plans they wrote themselves (their tier chosen by the
test); here nothing is hand-written: cells run in an IPython shell, ``ensure_ready`` captures them, and the
engine's workers run what was captured. The tier each change gets is decided by the code, not the test.
"""
from __future__ import annotations

import threading
import time

import pytest

CELLS = [
    "from vast_magic import Deployment, Secret\n"
    "app = Deployment(name='captured')\n"
    "image = app.image('vastai/base-image:@vastai-automatic-tag', storage=16)\n"
    "image.env(MODE='first', TOKEN=Secret('s3cret-1'))\n"
    "app.configure_autoscaling(max_workers=2, cold_workers=2)",
    "import asyncio, os\n"
    "OFFSET = 0\n"
    "@app.remote(benchmark_dataset=[{'x': 2}])\n"
    "async def square(x):\n"
    "    await asyncio.sleep(0.01)\n"
    "    return x * x + OFFSET\n"
    "@app.remote\n"
    "async def where():\n"
    "    return os.getpid(), os.environ.get('MODE'), os.environ.get('TOKEN')",
]


@pytest.fixture
def shell(engine_home):
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        yield shell
    finally:
        shell.run_cell("app.teardown()")
        engine_home.collect()
        InteractiveShell.clear_instance()


def run(shell, *cells):
    for cell in cells:
        shell.run_cell(cell, store_history=True).raise_error()


def deploy(shell):
    run(shell, "report = app.ensure_ready(timeout=120)")
    return shell.user_ns["report"]


def served(shell, calls: int = 8) -> set:
    """What the workers answer to ``where()`` over a few calls (pid, MODE, TOKEN)."""
    run(shell, f"answers = [where.call() for _ in range({calls})]")
    return {tuple(answer) for answer in shell.user_ns["answers"]}


def test_captured_changes_get_the_tier_the_code_decides(shell):
    run(shell, *CELLS)
    first = deploy(shell)
    assert (first.tier, first.reasons) == (4, ("new deployment",))
    before = served(shell)
    assert {mode for _, mode, _ in before} == {"first"} and {token for *_, token in before} == {"s3cret-1"}

    run(shell, CELLS[1].replace("OFFSET = 0", "OFFSET = 0   # a comment changes nothing"))
    assert deploy(shell).tier == 0
    run(shell, "app.configure_autoscaling(max_workers=3, cold_workers=2)")
    scaled = deploy(shell)
    assert (scaled.tier, scaled.reasons) == (1, ("autoscaling: max_workers 2 -> 3",))
    assert {pid for pid, *_ in served(shell)} <= {pid for pid, *_ in before}       # same processes

    run(shell, "image.env(MODE='second', TOKEN=Secret('s3cret-2'))")
    env_changed = deploy(shell)
    assert env_changed.tier == 3 and env_changed.reasons[0].startswith("env:")
    # ready means a first new worker serves; the others replace the old ones one by one (rollout.py)
    deadline = time.monotonic() + 120
    while (after := served(shell)) and {mode for _, mode, _ in after} != {"second"}:
        assert time.monotonic() < deadline, f"old workers still serve 120 s after the deploy: {after}"
        time.sleep(0.2)
    assert {(mode, token) for _, mode, token in after} == {("second", "s3cret-2")}
    assert not {pid for pid, *_ in after} & {pid for pid, *_ in before}               # every worker replaced


def test_a_captured_code_edit_rolls_workers_with_no_failed_call(shell):
    run(shell, *CELLS)
    deploy(shell)
    stop, results, errors = threading.Event(), [], []

    def keep_calling():
        square = shell.user_ns["app"].functions["square"]
        while not stop.is_set():
            try:
                results.append(square.call(3))
            except Exception as exc:          # any failure is what this test is about
                errors.append(repr(exc))

    callers = [threading.Thread(target=keep_calling) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        run(shell, CELLS[1].replace("OFFSET = 0", "OFFSET = 100"))
        edited = deploy(shell)
    finally:
        stop.set()
        for caller in callers:
            caller.join(60)
    assert edited.tier == 2 and any(reason.startswith("code:") for reason in edited.reasons)
    assert errors == []
    assert set(results) <= {9, 109} and 9 in results
    deadline = time.monotonic() + 120                 # the old workers are replaced one by one
    while shell.user_ns["app"].functions["square"].call(3) != 109 or errors:
        assert time.monotonic() < deadline and errors == [], errors or "old workers still serve after 120 s"
        time.sleep(0.2)
