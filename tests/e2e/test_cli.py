"""Every CLI command's success path, run as the user runs it: the ``vast-magic`` program, a real process.

One deployment's life from the shell: engine start, bundle, deploy (dry run, for real, another tag without
waiting), ls, status, logs, teardown (one tag, then all), engine stop. ``run-notebook`` is run by
tests/test_readme.py (the README's main job); the error paths by tests/test_bad_input.py.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

APP = '''
from vast_magic import Deployment

app = Deployment(name="clidemo")
app.configure_autoscaling(max_workers=1)


@app.remote(benchmark_dataset=[{"x": 3}], benchmark_runs=1)
async def square(x):
    print("squaring", x)
    return x * x
'''


def program() -> list[str]:
    """The console script installed next to this Python (what the README calls), else ``python -m vast_magic``."""
    script = Path(sys.executable).with_name("vast-magic")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vast_magic"]


def cli(cwd: Path, *args: str) -> str:
    proc = subprocess.run([*program(), *args], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ))
    assert proc.returncode == 0, f"vast-magic {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def project(tmp_path, engine_home):
    (tmp_path / "app.py").write_text(APP)
    yield tmp_path
    engine_home.collect()


def last(output: str) -> str:
    return output.splitlines()[-1]


def test_a_deployments_life_from_the_shell(project, engine_home):
    home = str(engine_home.path)
    assert json.loads(cli(project, "engine", "status")) == {"deployments": [], "home": home, "running": False}
    started = json.loads(cli(project, "engine", "start"))
    assert started["running"] is True and isinstance(started["pid"], int)
    engine_home.collect()
    assert json.loads(cli(project, "engine", "status"))["pid"] == started["pid"]

    wrote = cli(project, "bundle", "app.py", "-o", "clidemo.tar.gz")
    assert re.fullmatch(r"wrote \S*clidemo\.tar\.gz: \d+ files, code [0-9a-f]{12}\n", wrote), wrote
    with tarfile.open(project / "clidemo.tar.gz") as tar:
        assert {"./manifest.json", "./config.json"} <= set(tar.getnames())

    dry = cli(project, "deploy", "app.py", "--dry-run").splitlines()
    assert dry[1:] == ["tier 4: new deployment", dry[2], "tier 4; endpoint None; workers 0"]
    assert dry[2].startswith("dry run: nothing changed or started")
    assert cli(project, "ls") == "no deployments\n"                              # a dry run starts nothing
    first = cli(project, "deploy", "app.py:app")
    assert last(first) == "tier 4; endpoint local://clidemo/default; workers 1"
    assert re.search(r"^worker clidemo-default-[0-9a-f]{8}: ready perf=", first, re.M), first
    again = cli(project, "deploy", "app.py", "--timeout", "120").splitlines()
    assert again[1:2] + again[-1:] == ["tier 0: no changes", "tier 0; endpoint local://clidemo/default; workers 1"]
    engine_home.collect()

    assert cli(project, "ls") == "clidemo\tdefault\tready\t1/1 ready\tlocal://clidemo/default\n"
    status = cli(project, "status", "clidemo").splitlines()
    assert status[:2] == ["vast_magic clidemo (tag default): ready", "endpoint local://clidemo/default"]
    assert re.fullmatch(r"worker clidemo-default-[0-9a-f]{8}: ready perf=[\d,]+\.\d/s", status[2]), status
    assert status[3].startswith("not applied locally: image vastai/base-image")
    logs = cli(project, "logs", "clidemo").splitlines()
    assert re.fullmatch(r"\[clidemo-default-[0-9a-f]{8}\] squaring 3", logs[0]), logs  # the benchmark's calls
    assert re.fullmatch(r"\[clidemo-default-[0-9a-f]{8}\] benchmark square: perf .*", logs[-1]), logs
    assert cli(project, "logs", "clidemo", "square", "--tail", "2").splitlines() == [logs[0]] * 2

    tagged = cli(project, "deploy", "app.py", "--tag", "v2", "--no-wait")
    assert last(tagged) == "tier 4; endpoint local://clidemo/v2; workers 0"       # returned once accepted
    assert cli(project, "teardown", "clidemo") == "torn down clidemo/default\n"
    assert cli(project, "teardown", "clidemo", "--all-tags") == "torn down clidemo\n"
    assert cli(project, "ls") == "no deployments\n"

    assert json.loads(cli(project, "engine", "stop")) == {"pid": started["pid"], "running": False, "stopped": True}
    assert json.loads(cli(project, "engine", "status")) == {"deployments": [], "home": home, "running": False}
