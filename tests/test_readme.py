"""The README's `.py` example runs as written and prints what it says."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_script_example_runs(tmp_path, engine_home):
    code = re.search(r"## In a `\.py` file\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "demo.py").write_text(code)
    proc = subprocess.run([sys.executable, "demo.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "4 49"


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
