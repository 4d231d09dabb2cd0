"""A user's first hour, in a real kernel: what the magics say and show in text and widget mode.

The session deployment is reachable as ``vast_app``; ``--benchmark`` is
written as in Python; ``%vast_deploy --name`` is for that deploy only and an
unknown deployment is a UsageError naming the known ones; a ``map`` with
failing items says which and turns red (stderr in text mode, the bar's
``danger`` style in widget mode, read from the widget state nbclient saves).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

LOAD = "%load_ext vast_magic"
REMOTE = ("%%vast_remote --benchmark [{'x': 1.0}] --benchmark-runs 1\n"
          "def check(x):\n    if x % 3 == 0:\n        raise ValueError(f'bad {x}')\n    return x * 2")
DEPLOY = "report = %vast_deploy --name first-hour --timeout 90\nreport.tier, vast_app.name"
MAP = "results = check.map(range(7), return_exceptions=True)\n[isinstance(r, ValueError) for r in results]"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.delenv("VAST_MAGIC_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    subprocess.run([sys.executable, "-m", "vast_magic", "engine", "stop"], env=dict(os.environ),
                   capture_output=True, timeout=60)


def run(tmp_path, *sources: str):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook, [cell.outputs for cell in notebook.cells]


def stream(outputs: list, name: str) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == name)


def result(outputs: list) -> str:
    return "".join(o["data"]["text/plain"] for o in outputs if o["output_type"] == "execute_result")


@pytest.mark.slow
def test_first_hour_in_a_text_mode_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    _, (load, early, remote, deploy, status, call, mapped, raised, teardown) = run(
        tmp_path, LOAD, "%vast_status", REMOTE, DEPLOY, "%vast_status", "await check(1)", MAP, "check.map([1, 3])",
        "vast_app.configure(name='first-hour')\n%vast_teardown")
    assert "UsageError: %vast_status: there is no deployment notebook/default on the local engine, and none is " \
           "known: deploy one first." in stream(early, "stderr")
    # the first magic (even one that fails) says where the session deployment is
    assert stream(early, "stdout").startswith("vast_magic: this notebook's deployment 'notebook' is `vast_app`")
    assert stream(remote, "stdout") == ""
    assert not [o for o in remote if o["output_type"] == "error"]          # the unquoted --benchmark evaluated
    assert result(deploy) == "(4, 'notebook')"                              # --name was for that deploy only
    assert "UsageError: %vast_status: there is no deployment notebook/default on the local engine; known, " \
           "closest first: first-hour/default" in stream(status, "stderr")
    assert result(call) == "2"                                              # calls go to what was deployed
    assert result(mapped) == "[True, False, False, True, False, False, True]"
    errors = stream(mapped, "stderr")
    assert re.search(r"^map: 7/7 done, 3 failed in \d+\.\d\ds$", errors, re.M)          # the red (stderr) line
    assert "[vast_magic] check.map: 3 of 7 calls failed, items 0, 3, 6\nitem 0 failed with:\n" in errors
    assert "Traceback" in errors and "ValueError: bad 0" in errors and stream(mapped, "stdout") == ""
    [error] = [o for o in raised if o["output_type"] == "error"]
    assert error["ename"].endswith("ValueError") and "bad 3" in error["evalue"]
    assert "[vast_magic] check.map: 1 of 2 calls failed, items 1\n" in stream(raised, "stderr")
    assert stream(teardown, "stdout") == "first-hour: torn down (tag default)\n"


@pytest.mark.slow
def test_a_failing_map_turns_the_widget_red(tmp_path):
    notebook, (load, remote, deploy, mapped) = run(tmp_path, LOAD, REMOTE, DEPLOY, MAP)
    [shown] = [o for o in mapped if o["output_type"] == "display_data"]
    assert re.fullmatch(r"map: 7/7 done, 3 failed in \d+\.\d\ds", shown["data"]["text/plain"])
    model_id = shown["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [states[child.split("IPY_MODEL_")[1]]["state"] for child in states[model_id]["state"]["children"]
            if states[child.split("IPY_MODEL_")[1]]["model_name"] == "IntProgressModel"]
    assert [(bar["bar_style"], bar["value"], bar["max"]) for bar in bars] == [("danger", 7, 7)]
    assert "items 0, 3, 6" in stream(mapped, "stderr")


def test_the_errors_notebook_shows_the_unknown_deployment_and_benchmark_messages():
    """notebooks/errors.ipynb (generated by notebooks/build.py) keeps item 2's and item 5's messages."""
    from pathlib import Path
    notebook = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "errors.ipynb", as_version=4)
    shown = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "UsageError: %vast_teardown: there is no deployment erors/default on the local engine; known, closest " \
           "first: errors/default" in shown
    assert "vast-magic status: there is no deployment erors/default" in shown and "exit status 1" in shown
    assert "UsageError: --benchmark \"[{'x': one}]\" failed: NameError: name 'one' is not defined; write it as in " \
           "Python, --benchmark [{'x': 2}, {'x': 3}], or quoted whole" in shown
    assert not re.search(r"/(work|root|home|tmp)/", shown), "a machine path in the saved outputs"
