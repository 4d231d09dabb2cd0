"""nbval runs the shipped notebooks in real kernels against a private engine home.

The kernels inherit this process's environment, so the home and the text
display mode are set here, before any kernel starts; the engine those
notebooks start is stopped (by PID) when the session ends.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="vast-magic-nbval-"))
os.environ["VAST_MAGIC_HOME"] = str(_HOME)
os.environ["VAST_MAGIC_DISPLAY"] = "text"


def pytest_sessionfinish(session, exitstatus):
    from vast_magic.backends.local import launcher
    launcher.engine_stop(_HOME)
    shutil.rmtree(_HOME, ignore_errors=True)
