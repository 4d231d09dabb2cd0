"""Deployment life-cycle timings, driven through the magics in a real IPython shell.

Run by the driver as ``python -m benchmarks.lifecycle --home DIR`` with a
private ``VAST_MAGIC_HOME`` and no engine running. It measures what a notebook
user waits for, each from the moment the user's cell starts to the result:

- cold deploy: engine not running, a trivial function (no pip, 1 worker,
  10 benchmark runs): ``%vast_deploy`` + the first call;
- Tier 0: ``%vast_deploy`` again on the unchanged deployment (median);
- reconnect: a *new* interpreter (a restarted kernel) that has run its import
  and definition cells; from its first ``%vast_deploy`` to the first result;
- Tier 2: the ``%%vast_remote`` cell edited and re-run, ``%vast_deploy``,
  and a call that returns the new code's answer;
- cold deploy with the engine running: a new deployment (new name, same
  trivial function, 1 worker, 10 benchmark runs) from ``%vast_deploy`` to its
  first result while the engine already serves another (median of 3 names);
- engine daemon idle RSS and per-worker RSS once everything is quiet.
Prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from benchmarks.measure import emit, rss_mib

SETUP = '''
%load_ext vast_magic
from vast_magic import Deployment
app = Deployment(name="bench-life")
app.configure_autoscaling(cold_workers=1, max_workers=1)
'''
REMOTE = '''%%vast_remote --app app --benchmark '[{{"x": 1}}]' --benchmark-runs 10
async def bump(x):
    return x + {step}
'''


class Notebook:
    """An IPython shell standing in for a kernel; cells run as a user runs them."""

    def __init__(self):
        from IPython.core.interactiveshell import InteractiveShell
        self.shell = InteractiveShell.instance()

    def run(self, cell: str):
        with redirect_stdout(io.StringIO()):
            result = self.shell.run_cell(cell, store_history=True)
        result.raise_error()
        return result.result

    def deploy_and_call(self, x: int) -> tuple[float, int, int]:
        """Seconds from ``%vast_deploy`` to the call's result, the tier, and the result."""
        started = time.perf_counter()
        report = self.run("%vast_deploy --app app")
        value = self.run(f"bump.call({x})")
        return time.perf_counter() - started, report.tier, value


def cold_with_engine(notebook: Notebook, index: int) -> float:
    """A new deployment while the engine runs: ``%vast_deploy`` to its first result, then its teardown."""
    app = f"cold{index}"
    notebook.run(f'{app} = Deployment(name="bench-cold-{index}")\n'
                 f"{app}.configure_autoscaling(cold_workers=1, max_workers=1)")
    notebook.run(REMOTE.replace("--app app", f"--app {app}").replace("def bump", f"def bump{index}").format(step=1))
    started = time.perf_counter()
    report = notebook.run(f"%vast_deploy --app {app}")
    value = notebook.run(f"bump{index}.call(1)")
    seconds = time.perf_counter() - started
    assert (report.tier, value) == (4, 2), (report.tier, value)
    notebook.run(f"%vast_teardown --app {app}")
    return seconds


def reconnect_child() -> None:
    """A restarted kernel: imports and definitions first, then the timed first deploy + call."""
    notebook = Notebook()
    notebook.run(SETUP)
    notebook.run(REMOTE.format(step=1))
    seconds, tier, value = notebook.deploy_and_call(1)
    print(json.dumps({"seconds": seconds, "tier": tier, "value": value}), flush=True)


def reconnect_runs(runs: int) -> list[dict]:
    return [json.loads(subprocess.run([sys.executable, "-m", "benchmarks.lifecycle", "--reconnect-child"],
                                      check=True, capture_output=True, text=True, timeout=120).stdout.splitlines()[-1])
            for _ in range(runs)]


def engine_pid(home: Path) -> int:
    return int(json.loads((home / "engine.json").read_text())["pid"])


def worker_pids(notebook: Notebook) -> list[int]:
    return [int(w.pid) for w in notebook.run("app.status()").workers if w.pid]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reconnect-child", action="store_true")
    args = parser.parse_args()
    if args.reconnect_child:
        return reconnect_child()
    home, runs = Path(os.environ["VAST_MAGIC_HOME"]), (3 if args.quick else 7)
    notebook = Notebook()
    notebook.run(SETUP)
    notebook.run(REMOTE.format(step=1))
    cold, tier, value = notebook.deploy_and_call(1)
    assert (tier, value) == (4, 2), (tier, value)
    tier0 = []
    for _ in range(runs * 3):
        started = time.perf_counter()
        assert notebook.run("%vast_deploy --app app").tier == 0
        tier0.append(time.perf_counter() - started)
    reconnects = reconnect_runs(runs)
    assert all((r["tier"], r["value"]) == (0, 2) for r in reconnects), reconnects
    edits = []
    for step in range(2, 2 + runs):
        started = time.perf_counter()
        notebook.run(REMOTE.format(step=step))
        _, tier, value = notebook.deploy_and_call(1)
        assert (tier, value) == (2, 1 + step), (tier, value)
        edits.append(time.perf_counter() - started)
    warm_engine = [cold_with_engine(notebook, index) for index in range(3)]
    time.sleep(2.0)                                           # let the engine and the worker go idle
    result = {"cold_s": cold, "cold_engine_running_s": statistics.median(warm_engine),
              "tier0_s": statistics.median(tier0),
              "reconnect_s": statistics.median(r["seconds"] for r in reconnects),
              "tier2_s": statistics.median(edits), "engine_rss": rss_mib(engine_pid(home)),
              "worker_rss": statistics.median(rss_mib(p) for p in worker_pids(notebook))}
    notebook.run("%vast_teardown --app app")
    emit(result)


if __name__ == "__main__":
    main()
