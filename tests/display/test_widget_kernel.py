"""The deploy widget in a real kernel with ipywidgets: every step state, failure included, through the widget.

Each deploy below runs in its own cell of an nbclient kernel (``auto`` display,
so a real comm-backed widget). The kernel records the steps the widget drew
after every event; nbclient keeps the widgets' final state as a frontend
receives it, so the test also reads the card each cell ended with, from the
comm messages, not from the kernel's objects.
"""
from __future__ import annotations

import json
import re

import nbformat
import pytest
from nbclient import NotebookClient

from vast_magic.display.steps import STEP_STATES, STEPS
from vast_magic.events import (BenchmarkScored, DeployState, Failed, LogLine, Packaging, Ready, TierDecided,
                               WorkerState, apply_event, format_status)

DEPLOY = [Packaging(24, 41_000), TierDecided(4, ("new deployment",), tiers=(4,)),
          WorkerState("w1", "starting", pid=7), WorkerState("w1", "installing"), WorkerState("w1", "contexts"),
          WorkerState("w1", "benchmarking"), LogLine(1.0, "w1", "stdout", "benchmark square: perf 2.4e+06/s"),
          BenchmarkScored("w1", 2_400_000.0), WorkerState("w1", "ready", perf=2_400_000.0),
          Ready("local://demo/default", 0.5)]
#: where each step is the running one: the events before it
RUNNING_AT = {"package": 0, "tier": 1, "apply": 2, "workers": 3}
FAILURE = Failed("worker w1 failed while starting", "Traceback (most recent call last):\nValueError: bad model")
DEPLOYS = {"ready": DEPLOY, "dry run": [*DEPLOY[:2], Ready(None, 0.05, dry_run=True)],
           **{f"fails at {key}": [*DEPLOY[:count], FAILURE] for key, count in RUNNING_AT.items()}}

SETUP = ("import json\nfrom vast_magic.events import *\nfrom vast_magic.reports import LogLine\n"
         "from vast_magic.display import open_progress\nseen = {}")


def cell_for(label: str, events: list) -> str:
    return (f"p = open_progress('demo', workload_per_call=100.0)\n"
            f"seen[{label!r}] = [[(s.key, s.state) for s in p.view.steps]]\n"
            f"for event in {events!r}:\n"
            f"    p.emit(event)\n"
            f"    seen[{label!r}].append([(s.key, s.state) for s in p.view.steps])\n"
            f"p.close()")


def final_state(events: list) -> DeployState:
    state = DeployState(name="demo", workload_per_call=100.0)
    for event in events:
        state = apply_event(state, event)
    return state


def widget_states(notebook) -> dict:
    return notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def card_of(output: dict, states: dict) -> str:
    """The HTML value of the deploy card inside the displayed box, as the comm last set it."""
    box = states[output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]]["state"]
    card_id = box["children"][0].removeprefix("IPY_MODEL_")
    return states[card_id]["state"]["value"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_every_step_state_failure_included_through_the_widget_in_a_kernel(tmp_path):
    labels = list(DEPLOYS)
    cells = [SETUP, *(cell_for(label, DEPLOYS[label]) for label in labels), "print(json.dumps(seen))"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    seen = {label: [[tuple(step) for step in steps] for steps in drawn]     # after 0, 1, 2... events
            for label, drawn in json.loads(notebook.cells[-1].outputs[0]["text"]).items()}
    states = widget_states(notebook)

    observed = {state for drawn in seen.values() for steps in drawn for _, state in steps}
    assert observed == set(STEP_STATES)                         # pending, running, done, failed, skipped
    for key, count in RUNNING_AT.items():                       # each step ran, and each step failed
        assert (key, "running") in seen["ready"][count]
        assert (key, "failed") in seen[f"fails at {key}"][-1]

    for label, cell in zip(labels, notebook.cells[1:]):
        events = DEPLOYS[label]
        [shown] = cell.outputs                                  # one display, updated in place
        assert shown["output_type"] == "display_data"
        assert shown["data"]["text/plain"] == format_status(final_state(events))
        card = card_of(shown, states)
        drawn = dict(re.findall(r'class="vm-step" data-step="(\w+)" data-state="(\w+)"', card))
        assert drawn == dict(seen[label][-1]) and list(drawn) == [key for key, _ in STEPS]
        assert "benchmark square" not in card                  # worker output stays out of the picture
        if label.startswith("fails"):
            assert 'data-phase="failed"' in card and "worker w1 failed while starting" in card
            assert "ValueError: bad model" in card
        if label == "dry run":
            assert "nothing applied: dry run" in card and 'data-phase="dry run"' in card
        if label == "ready":
            assert 'data-worker="w1" data-state="ready"' in card and "24.0 k calls/s" in card
