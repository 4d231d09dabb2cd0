"""The README's `.py` section runs as written: the module, imported by a script and by a notebook."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

README = Path(__file__).resolve().parent.parent / "README.md"


def py_section_blocks() -> list[str]:
    section = re.search(r"## In a `\.py` file\n(.*?)\n## ", README.read_text(), re.S).group(1)
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_module_deploys_from_a_script_and_from_a_notebook(tmp_path, engine_home):
    module, in_notebook, script = py_section_blocks()
    (tmp_path / "demo.py").write_text(module)
    (tmp_path / "run.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "4 49"          # the script tears the deployment down again

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(in_notebook)])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert [o["data"]["text/plain"] for o in outputs if o["output_type"] == "execute_result"] == ["49"]
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "tier 4: new deployment" in printed and "ready at local://demo/default" in printed
    engine_home.collect()


def test_readme_fake_vast_example_runs_offline(tmp_path, monkeypatch):
    code = re.search(r"## Testing your code offline against a fake Vast\n.*?```python\n(.*?)```", README.read_text(),
                     re.S).group(1)
    (tmp_path / "offline.py").write_text(code)
    env = {**os.environ, "VAST_MAGIC_HOME": str(tmp_path / "home"), "VAST_MAGIC_DISPLAY": "text"}
    proc = subprocess.run([sys.executable, "offline.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-2:] == ["created 49", "demo"]


def test_readme_box_example_runs_the_official_worker_offline(tmp_path):
    code = re.search(r"## Try `backend=\"vast\"` without an account: the box\n.*?```python\n(.*?)```",
                     README.read_text(), re.S).group(1)
    (tmp_path / "boxed.py").write_text(code)
    env = {k: v for k, v in os.environ.items()          # keep only the official venv's location, if chosen
           if not k.startswith(("VAST_API_KEY", "VAST_MAGIC_")) or k == "VAST_MAGIC_VASTAI_VENV"}
    env.update(VAST_MAGIC_HOME=str(tmp_path / "home"), VAST_MAGIC_DISPLAY="text")
    proc = subprocess.run([sys.executable, "boxed.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-2:] == ["squaring 7", "created 49"]


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text()
    block = re.search(r"## Set up on a fresh machine\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "run-notebook notebooks/quickstart.ipynb" in commands[0] and "pytest" in commands[1]
    assert "python -m pytest" in (README.parent / ".ci" / "run").read_text()


def readme_setup_commands() -> list[str]:
    """The two set-up commands, each cut to its main part: what follows the install, before the comment."""
    block = re.search(r"## Set up on a fresh machine\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    return [line.split("&&", 1)[1].split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_main_job_runs_the_quickstart_on_the_local_engine(engine_home):
    """The first command exactly as written (its console script from this Python's environment), on a
    machine with no Vast account: every local cell passes and the Vast section says why it is skipped."""
    main_job = readme_setup_commands()[0].split()
    script = Path(sys.executable).parent / main_job[0]
    assert script.is_file(), f"{main_job[0]} is not installed beside {sys.executable}: pip install -e '.[dev]'"
    env = {k: v for k, v in os.environ.items() if k not in ("VAST_API_KEY", "VAST_MAGIC_VAST_URL")}
    proc = subprocess.run([str(script), *main_job[1:]], cwd=README.parent, capture_output=True, text=True,
                          timeout=600, env=env)
    engine_home.collect()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    closing = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"--- 0 unexpected errors, \d+ cells skipped \(needs Vast\.ai\); notebook ran in", closing)
    assert "skipped: needs Vast.ai; set VAST_API_KEY" in proc.stdout
    assert "tier 4: new deployment" in proc.stdout and "quickstart: torn down" in proc.stdout


def test_readme_test_command_collects_the_whole_suite():
    """The second command is this suite: run as written with --collect-only, it finds every test folder."""
    command = readme_setup_commands()[1].split()
    assert command[:3] == ["python", "-m", "pytest"]
    proc = subprocess.run([sys.executable, *command[1:], "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=README.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = proc.stdout
    for folder in ("tests/e2e", "tests/backends", "tests/notebook", "notebooks/quickstart.ipynb"):
        assert folder in collected, f"{folder} is not collected by {' '.join(command)}"
