"""``%vast_deploy --watch`` in a real Jupyter kernel (nbclient + ipykernel) on the real local engine.

The notebook imports a local module, deploys with ``--watch``, and then edits
that module from later cells the way an editor saves it. Cells wait for the
watch with ``await`` (the kernel's loop runs the watch task meanwhile), with
generous ceilings and no timing assertions.
"""
from __future__ import annotations

import textwrap

import nbformat
import pytest
from nbclient import NotebookClient

WAIT = '''
import asyncio, time
from vast_magic.notebook.magics import get_session
session = get_session(get_ipython())
watch = session.watch

async def until(check, ceiling=180):
    deadline = time.monotonic() + ceiling
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert check(), "\\n".join(watch.log.lines)

def save(text):
    with open("helpers.py", "w") as file:
        file.write(text)

print(watch.running, watch._task.get_loop() is asyncio.get_running_loop())
'''

def stdout_of(notebook) -> list[str]:
    """What each cell printed."""
    return ["".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout")
            for cell in notebook.cells]


CELLS = [
    "%load_ext vast_magic",
    "import helpers",
    "%%vast_remote --benchmark \"[{'x': 2}]\" --benchmark-runs 1\ndef square(x):\n    return helpers.twice(x) * x",
    "vast_app.configure(name='nbwatch')\nreport = %vast_deploy --watch --timeout 120\nreport.tier",
    WAIT,
    "square.call(3)",
    # saved: the watch reloads helpers in the kernel and redeploys (tier 2) while this cell awaits
    "save('def twice(x):\\n    return 3 * x\\n')\nawait until(lambda: len(watch.reports) == 1)\n"
    "print(watch.reports[0].tier, watch.reports[0].reasons, helpers.twice(1), square.call(3))",
    # a syntax error is reported and waited out; what served keeps serving
    "save('def twice(x)\\n    return 4 * x\\n')\n"
    "await until(lambda: any('SyntaxError' in line for line in watch.log.lines))\n"
    "print(len(watch.reports), watch.running, square.call(3))",
    "save('def twice(x):\\n    return 4 * x\\n')\nawait until(lambda: len(watch.reports) == 2)\n"
    "print(watch.reports[1].tier, square.call(3))",
    # the next %vast_deploy stops the watch (and may start another)
    "again = %vast_deploy --watch\nsecond = session.watch\nprint(again.tier, watch.running, second.running)",
    "%vast_teardown",
    "print(second.running, session.watch)\nprint('\\n'.join(watch.log.lines))",
    # code from cells only: nothing to watch, said so, and no watch started
    "from vast_magic import Deployment\ncells_only = Deployment(name='cellsonly')",
    "%%vast_remote --app cells_only --benchmark \"[{'x': 2}]\" --benchmark-runs 1\ndef cube(x):\n    return x ** 3",
    "report = %vast_deploy --app cells_only --watch\nprint(report.tier, session.watch)\n"
    "%vast_teardown --app cells_only",
]


@pytest.mark.slow
def test_watch_redeploys_an_imported_module_and_stops_on_the_next_magic(tmp_path, engine_home, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    (tmp_path / "helpers.py").write_text("def twice(x):\n    return 2 * x\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in CELLS])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    engine_home.collect()
    printed = stdout_of(notebook)
    results = ["".join(o["data"]["text/plain"] for o in cell.outputs if o["output_type"] == "execute_result")
               for cell in notebook.cells]
    deploy_cell = notebook.cells[3].outputs
    assert results[3] == "4"
    assert printed[4] == "True True\n"                         # running, as a task on the kernel's own loop
    assert results[5] == "18"
    assert printed[6] == "2 ('code: helpers.twice changed',) 3 27\n"   # reloaded in the kernel, deployed, called
    assert printed[7] == "1 True 27\n"                          # broken file: no deploy, the watch goes on
    assert printed[8] == "2 36\n"
    assert printed[9].startswith("packaged ") and printed[9].endswith("0 False True\n")
    assert printed[10] == "nbwatch: torn down (tag default)\n"
    final, *log = printed[11].splitlines()
    assert final == "False None"
    assert log[0] == "watching helpers.py: saving one redeploys; the next %vast_deploy or %vast_teardown stops watching"
    assert "tier 2: code: helpers.twice changed" in log
    assert log.count("deployed tier 2 (code: helpers.twice changed)") == 2
    assert "SyntaxError: expected ':'" in log and log[-1] == "stopped watching; the deployment keeps serving"
    assert printed[14].splitlines()[-3:] == [
        "cellsonly: nothing to watch; its code comes from cells only (no local module files), so re-run a changed "
        "cell and %vast_deploy.", "4 None", "cellsonly: torn down (tag default)"]
    # the log is shown under the cell that started the watch, updated in place
    [shown] = [o for o in deploy_cell if o["output_type"] == "display_data"]
    assert shown["data"]["text/plain"].splitlines()[0] == log[0]


SLOW = "import time\\n\\ndef twice(x):\\n    time.sleep(2)\\n    return 2 * x\\n"


@pytest.mark.slow
def test_the_next_deploy_cancels_a_redeploy_in_flight_and_then_deploys(tmp_path, engine_home, monkeypatch):
    """A redeploy still benchmarking when the next ``%vast_deploy`` runs is cancelled, and the engine has let go
    of it before that deploy starts (it refuses two deploys of one name and tag at once)."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    (tmp_path / "helpers.py").write_text("def twice(x):\n    return 2 * x\n")
    cells = CELLS[:5] + [
        f"save('{SLOW}')\nawait until(lambda: watch._deploying is not None)\nprint(watch.running)",
        "again = %vast_deploy\nprint(again.tier, again.reasons, watch.running, watch.reports, square.call(3))",
        "await until(lambda: watch._task.done())\nprint('\\n'.join(watch.log.lines))",
        "%vast_teardown",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    engine_home.collect()
    printed = stdout_of(notebook)
    assert printed[5] == "True\n"
    assert printed[6].endswith("2 ('code: helpers changed', 'code: helpers.twice changed') False [] 18\n")
    log = printed[7].splitlines()
    stopped, cancelled = ("stopped watching; the deployment keeps serving",
                          "redeploy cancelled: the watch stopped (what served before keeps serving)")
    assert "changed: helpers.py" in log and log.index(stopped) < log.index(cancelled)
    assert not any(line.startswith("deployed tier") for line in log)
