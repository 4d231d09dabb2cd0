"""Test scripts run as a user runs them (``python script.py``, a real process), and what they report.

A script prints its findings as one JSON line that starts with ``RESULT ``; the test reads that
line back. Scripts that deploy get a private engine home, and every engine and worker process
they started is stopped by pid afterwards, whether the script passed or not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from tests.conftest import EngineHome

__all__ = ["RESULT", "result_of", "run_script", "private_engine_home"]

#: how a script's findings line starts
RESULT = "RESULT "


def result_of(stdout: str) -> Any:
    """The JSON of the last ``RESULT`` line a script printed."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    assert lines, f"the script printed no {RESULT.strip()} line:\n{stdout}"
    return json.loads(lines[-1][len(RESULT):])


def run_script(folder: Path, name: str, source: str, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess:
    """Write ``source`` to ``folder/name`` and run it there with this Python; it must exit 0."""
    (folder / name).write_text(source)
    proc = subprocess.run([sys.executable, name, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=folder, env=dict(os.environ if env is None else env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@contextmanager
def private_engine_home(folder: Path) -> Iterator[EngineHome]:
    """``folder/home`` as a fresh engine home (0700); its engine and workers are stopped on the way out."""
    home = folder / "home"
    home.mkdir(mode=0o700)
    handle = EngineHome(home)
    try:
        yield handle
    finally:
        handle.stop_everything()
