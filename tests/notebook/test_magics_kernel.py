"""The display and the magics in a real Jupyter kernel (nbclient + ipykernel).

A kernel is what decides ``auto`` (widget there, text elsewhere) and where
output must land in the calling cell, so these run the real thing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from vast_magic.events import DeployState, Packaging, Ready, TierDecided, WorkerState, apply_event, format_status

EVENTS = [Packaging(3, 2048), TierDecided(4, ("new deployment",)), WorkerState("w1", "ready", perf=5.0),
          Ready("http://127.0.0.1:9", 1.5)]

SETUP = "from vast_magic.events import *\nfrom vast_magic.display import open_progress, resolve_display_mode, open_map_progress"
PROGRESS = ("p = open_progress('demo')\n"
            f"for event in {EVENTS!r}:\n    p.emit(event)\np.close()")
MAP = "bar = open_map_progress(3)\nbar.update(3, 0)\nbar.close()"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.delenv("VAST_MAGIC_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    # the engine daemon outlives kernels on purpose: stop the one this test's home started
    subprocess.run([sys.executable, "-m", "vast_magic", "engine", "stop"], env=dict(os.environ),
                   capture_output=True, timeout=60)


def run_notebook(tmp_path, *sources: str, allow_errors: bool = False) -> list[list[dict]]:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [cell.outputs for cell in notebook.cells]


def text_of(outputs: list[dict], kind: str = "stream") -> str:
    """What a cell printed (streams) or showed (text/plain of results and displays)."""
    if kind == "stream":
        return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")
    return "".join(o["data"]["text/plain"] for o in outputs if o["output_type"] in ("execute_result", "display_data"))


def final_status() -> str:
    state = DeployState(name="demo")
    for event in EVENTS:
        state = apply_event(state, event)
    return format_status(state)


@pytest.mark.slow
def test_kernel_auto_mode_is_a_widget_whose_plain_text_is_the_final_status(tmp_path):
    mode, progress, bar = run_notebook(tmp_path, SETUP + "\nprint(resolve_display_mode())", PROGRESS, MAP)
    assert mode[0]["text"] == "widget\n"
    [shown] = progress  # one display, updated in place: nothing printed beside it
    assert shown["output_type"] == "display_data"
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]
    assert shown["data"]["text/plain"] == final_status()
    [shown] = bar
    assert shown["data"]["text/plain"].startswith("map: 3/3 done in ")


@pytest.mark.slow
def test_kernel_text_mode_prints_one_line_per_event_in_the_calling_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    mode, progress, bar = run_notebook(tmp_path, SETUP + "\nprint(resolve_display_mode())", PROGRESS, MAP)
    assert mode[0]["text"] == "text\n"
    assert [o["output_type"] for o in progress] == ["stream"] * len(progress)
    text = "".join(o["text"] for o in progress)
    assert text.splitlines() == final_status().splitlines()[1:]  # the header is the widget's; events print the rest
    assert "".join(o["text"] for o in bar).startswith("map: 3/3 done in ")


LOAD = "%load_ext vast_magic"
REMOTE = ("%%vast_remote --benchmark \"[{'x': 2}, {'x': 3}]\" --benchmark-runs 1\n"
          "def square(x):\n    print('computing', x)\n    return x * x")
DEPLOY = ("vast_app.configure(name='kernel-test')   # the session deployment, bound by the first magic\n"
          "report = %vast_deploy --timeout 90\nreport.tier, report.dry_run")


@pytest.mark.slow
def test_magics_end_to_end_in_a_text_mode_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    edited = REMOTE.replace("return x * x", "return x * x  # a comment is no change") + "\ndef _helper():\n    pass"
    load, remote, deploy, call, mapped, status, logs, failing, again, _, same, __, changed, teardown = run_notebook(
        tmp_path, LOAD, REMOTE, DEPLOY, "await square(5)", "square.map([1, 2, 3])", "%vast_status",
        "%vast_logs --tail 3", "%%vast_remote\ndef cube(x):\n    return x ** 3\nraise ValueError('broken cell')",
        "again = %vast_deploy\nagain.tier", edited, "same = %vast_deploy\nsame.tier",
        REMOTE.replace("x * x", "x * x + 0"), "changed = %vast_deploy\nchanged.tier, changed.reasons",
        "%vast_teardown", allow_errors=True)
    # no notebook file name under nbclient: warned when the session deployment is first used, not on load
    assert "called 'notebook'" not in "".join(o.get("text", "") for o in load)
    assert "called 'notebook'" in "".join(o.get("text", "") for o in remote if o.get("name") == "stderr")
    assert text_of(remote).startswith("vast_magic: this notebook's deployment 'notebook' is `vast_app`")
    assert text_of(deploy, "result") == "(4, False)"
    printed = text_of(deploy).splitlines()
    assert printed[:2] == [printed[0], "tier 4: new deployment"] and printed[0].startswith("packaged ")
    assert printed[-1].startswith("ready at local://kernel-test/default in ")
    assert (text_of(call), text_of(call, "result")) == ("computing 5\n", "25")
    map_line, *computed = text_of(mapped).splitlines()  # the bar closes, then each call's output in order
    # the count is remote.map's last update (it may close the bar before updating it when calls are fast)
    assert re.fullmatch(r"map: 3/3 done in \d+\.\d\ds", map_line)
    assert computed == ["computing 1", "computing 2", "computing 3"]
    assert text_of(mapped, "result") == "[1, 4, 9]"
    assert text_of(status).splitlines()[:2] == ["vast_magic kernel-test (tag default): ready",
                                                "endpoint local://kernel-test/default"]
    log_lines = text_of(logs).splitlines()
    assert len(log_lines) == 3 and all(line.startswith("[kernel-test-default-") for line in log_lines)
    # the newest lines: the benchmark's result, or the calls' prints when they have arrived (read from the files)
    assert all(re.search(r"\] (benchmark square: perf|computing \d)", line) for line in log_lines), log_lines
    errors = [o for o in failing if o["output_type"] == "error"]
    assert errors[0]["ename"] == "ValueError" and errors[0]["evalue"] == "broken cell"
    assert "nothing was registered" in "".join(errors[-1]["traceback"])
    assert text_of(again, "result") == "0"  # cube was not registered: nothing changed
    assert text_of(same, "result") == "0"  # re-running the cell with a comment and a private helper added
    assert text_of(changed, "result") == "(2, ('code: square changed',))"
    assert text_of(teardown) == "kernel-test: torn down (tag default)\n"


@pytest.mark.slow
def test_deploy_and_status_in_a_widget_kernel(tmp_path):
    load, remote, deploy, status, teardown = run_notebook(
        tmp_path, LOAD, REMOTE, DEPLOY, "%vast_status", "%vast_teardown")
    shown = [o for o in deploy if o["output_type"] == "display_data"]
    assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    final = shown[0]["data"]["text/plain"].splitlines()
    assert final[0] == "vast_magic deploy kernel-test: ready" and final[1].startswith("packaged ")
    assert final[-1].startswith("ready at local://kernel-test/default in ")
    assert text_of(deploy) == ""  # the widget replaces the text lines
    [snapshot] = status
    assert snapshot["data"]["text/plain"].startswith("vast_magic kernel-test (tag default): ready")
