"""Widget-mode twins of the deploy and map paths, on real deploys in a kernel with ipywidgets.

The text-mode tests (nbval, the magics and bad-input tests) compare printed lines; here the same paths
run with the display left at ``auto`` in an nbclient kernel, so each deploy and map draws the widget a
notebook user sees: a dry run, tiers 4, 0, 1, 2, 3 and 4 again (a new tag), a deploy whose worker fails,
a map that succeeds and one with failing items. What is checked is what a frontend receives: one display
per cell (its plain text the final status), the card's phase from the widget state nbclient saves, and no
text lines printed next to it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.display.test_widget_kernel import card_of, widget_states

SETUP = """
%load_ext vast_magic
import json
from vast_magic import Deployment, DeployError
app = Deployment(name="twins")
image = app.image("vastai/base-image:@vastai-automatic-tag", storage=16).env(MODE="a")
app.configure_autoscaling(max_workers=1)
"""
REMOTE = """
%%vast_remote --app app --benchmark [{'x': 1}] --benchmark-runs 1
def square(x):
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * x + OFFSET
"""
BROKEN = """
broken = Deployment(name="twins-broken")

@broken.context()
class Weights:
    async def __aenter__(self):
        raise FileNotFoundError("no weights here")
    async def __aexit__(self, *exc):
        return False

@broken.remote(benchmark_dataset=[{"x": 1}])
async def never(x):
    return x
"""
#: (label, source, what the deploy's final status says first)
DEPLOYS = [
    ("dry run", "dry = %vast_deploy --app app --dry-run", "vast_magic deploy twins: dry run"),
    ("tier 4", "r4 = %vast_deploy --app app --timeout 120", "vast_magic deploy twins: ready"),
    ("tier 0", "r0 = %vast_deploy --app app", "vast_magic deploy twins: ready"),
    ("tier 1", "app.configure_autoscaling(max_workers=2)\nr1 = %vast_deploy --app app", "vast_magic deploy twins: ready"),
    ("tier 2", "OFFSET = 1\nr2 = %vast_deploy --app app --timeout 120", "vast_magic deploy twins: ready"),
    ("tier 3", "image.env(MODE='b')\nr3 = %vast_deploy --app app --timeout 120", "vast_magic deploy twins: ready"),
    ("new tag", "app.tag = 'v2'\nr4b = %vast_deploy --app app --timeout 120", "vast_magic deploy twins: ready"),
    ("fails", "try:\n    %vast_deploy --app broken --timeout 120\nexcept DeployError as exc:\n    failure = str(exc)",
     "vast_magic deploy twins-broken: failed"),
]
TIERS = {"dry run": 4, "tier 4": 4, "tier 0": 0, "tier 1": 1, "tier 2": 2, "tier 3": 3, "new tag": 4, "fails": 4}
MAPS = [("map", "squares = square.map(range(4))"),
        ("map fails", "mixed = square.map([1, -2, 3], return_exceptions=True)")]
CHECK = ("print(json.dumps({'tiers': [r.tier for r in (dry, r4, r0, r1, r2, r3, r4b)], 'dry': dry.dry_run,\n"
         "                  'squares': squares, 'mixed': [repr(m) if isinstance(m, Exception) else m for m in mixed],\n"
         "                  'failure': failure}))")
TEARDOWN = "%vast_teardown --app app --all-tags"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)          # auto: a widget in a kernel
    monkeypatch.delenv("VAST_MAGIC_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    subprocess.run([sys.executable, "-m", "vast_magic", "engine", "stop"], env=dict(os.environ),
                   capture_output=True, timeout=60)


def displays(outputs: list) -> list[dict]:
    return [o for o in outputs if o["output_type"] == "display_data"]


def printed(outputs: list) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream")


@pytest.mark.slow
def test_deploy_and_map_twins_draw_widgets_in_a_kernel(tmp_path):
    sources = [SETUP, "OFFSET = 0", REMOTE, BROKEN, *(s for _, s, _ in DEPLOYS), *(s for _, s in MAPS), CHECK, TEARDOWN]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    states = widget_states(notebook)
    cells = notebook.cells[4:]

    for (label, _, first_line), cell in zip(DEPLOYS, cells):
        [shown] = displays(cell.outputs)                                     # one display, updated in place
        assert "application/vnd.jupyter.widget-view+json" in shown["data"], label
        assert shown["data"]["text/plain"].splitlines()[0] == first_line, (label, shown["data"]["text/plain"])
        assert f"\ntier {TIERS[label]}: " in shown["data"]["text/plain"], label
        assert printed(cell.outputs) == "", (label, printed(cell.outputs))  # the widget replaces the text lines
        card = card_of(shown, states)
        phase = {"dry run": "dry run", "fails": "failed"}.get(label, "ready")
        assert f'data-phase="{phase}"' in card, (label, re.findall(r'data-phase="[^"]*"', card))
    failed_card = card_of(displays(cells[len(DEPLOYS) - 1].outputs)[0], states)
    assert "no weights here" in failed_card

    for (label, _), cell in zip(MAPS, cells[len(DEPLOYS):]):
        [shown] = displays(cell.outputs)
        text = shown["data"]["text/plain"]
        if label == "map":
            assert re.fullmatch(r"map: 4/4 done in \d+\.\d\ds", text), text
        else:
            assert re.fullmatch(r"map: 3/3 done, 1 failed in \d+\.\d\ds", text), text
        bars = [states[child.removeprefix("IPY_MODEL_")]["state"]
                for child in states[shown["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]]["state"]
                ["children"] if states[child.removeprefix("IPY_MODEL_")]["model_name"] == "IntProgressModel"]
        style = "danger" if label == "map fails" else "success"
        assert [(bar["bar_style"], bar["value"], bar["max"]) for bar in bars] == \
            [(style, *((4, 4) if label == "map" else (3, 3)))], label

    result = json.loads(printed(cells[len(DEPLOYS) + len(MAPS)].outputs))
    assert result["tiers"] == [4, 4, 0, 1, 2, 3, 4] and result["dry"] is True
    assert result["squares"] == [1, 2, 5, 10]                            # OFFSET = 1 since tier 2
    assert result["mixed"][0] == 2 and result["mixed"][2] == 10 and "negative -2" in result["mixed"][1]
    assert "failed while starting" in result["failure"] and "no weights here" in result["failure"]


VAST_SETUP = """
%load_ext vast_magic
import json
from vast_magic import Deployment, DeployError, Secret
from vast_magic.testing import FakeVast
fake = FakeVast(api_key="test-key", ready_after=0)
app = Deployment(name="vtwins", backend="vast", api_key="test-key", transport=fake.transport())
image = app.image("vastai/base-image:@vastai-automatic-tag", storage=16).env(TOKEN=Secret("one"))
OFFSET = 0
"""
VAST_DEPLOYS = [
    ("dry run", "dry = %vast_deploy --app app --dry-run", "dry run", 4),
    ("tier 4", "r4 = %vast_deploy --app app --timeout 120", "ready", 4),
    ("tier 0", "r0 = %vast_deploy --app app", "ready", 0),
    ("tier 1", "app.configure_autoscaling(max_workers=2)\nr1 = %vast_deploy --app app", "ready", 1),
    ("tier 2", "OFFSET = 1\nr2 = %vast_deploy --app app --timeout 120", "ready", 2),
    # a secret travels in the env string: Vast's own hard update (a plain env change: see tests/testing/test_fake.py)
    ("tier 3", "image.env(TOKEN=Secret('two'))\nr3 = %vast_deploy --app app --timeout 120", "ready", 3),
    ("fails", "fake.worker_error = 'Lifecycle startup failed: no weights'\napp.tag = 'v2'\ntry:\n"
              "    %vast_deploy --app app --timeout 120\nexcept DeployError as exc:\n    failure = str(exc)",
     "failed", 4),
]
VAST_CHECK = ("print(json.dumps({'tiers': [r.tier for r in (dry, r4, r0, r1, r2, r3)],\n"
              "                  'actions': [r.backend_action for r in (r4, r0, r1, r2, r3)],\n"
              "                  'squares': squares, 'failure': failure}))")


@pytest.mark.slow
def test_vast_backend_deploy_and_map_twins_draw_widgets_in_a_kernel(tmp_path):
    """The same on backend="vast" against FakeVast (whose worker serves the uploaded bundle)."""
    deploys = [source for _, source, _, _ in VAST_DEPLOYS]
    sources = [VAST_SETUP, REMOTE, *deploys[:5], "squares = square.map(range(3))", *deploys[5:], VAST_CHECK,
               "%vast_teardown --app app --all-tags\nfake.close()"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    states = widget_states(notebook)
    deploy_cells = notebook.cells[2:7] + notebook.cells[8:10]
    for (label, _, phase, tier), cell in zip(VAST_DEPLOYS, deploy_cells):
        [shown] = displays(cell.outputs)
        text = shown["data"]["text/plain"]
        assert text.splitlines()[0] == f"vast_magic deploy vtwins: {phase}", (label, text)
        assert f"\ntier {tier}" in text, (label, text)
        assert printed(cell.outputs) == "", (label, printed(cell.outputs))
        assert f'data-phase="{phase}"' in card_of(shown, states), label
    [mapped] = displays(notebook.cells[7].outputs)
    assert re.fullmatch(r"map: 3/3 done in \d+\.\d\ds", mapped["data"]["text/plain"])
    result = json.loads(printed(notebook.cells[10].outputs))
    assert result["tiers"] == [4, 4, 0, 1, 2, 3]
    assert result["actions"] == ["created", "exists", "autoscale_update", "soft_update", "soft_update"]
    assert result["squares"] == [1, 2, 5]
    assert result["failure"].startswith("every new worker of endpoint ")           # at once, not at the timeout
    assert "Lifecycle startup failed: no weights" in result["failure"]
