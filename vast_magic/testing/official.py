"""The official ``vastai`` worker on this machine: a venv with the pinned wheel, built once and cached.

The box (``vast_magic.testing.box``) and the compatibility test run the
official serve entry point from this venv. It lives outside any checkout, in
``$VAST_MAGIC_VASTAI_VENV`` when set, else
``${XDG_CACHE_HOME:-~/.cache}/vast_magic/vastai-<version>-py<major.minor>``
(a venv is tied to the interpreter that made it). It is created on first use
with ``python -m venv`` and ``pip install vastai==<version> numpy`` (numpy:
what the examples' remote functions use) under a file lock, so concurrent
test processes build it once; a marker file written after a successful import
probe says it is complete. Building needs the package index; when that fails
the error says so, with pip's own words, and nothing half-built is kept.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["VASTAI_VERSION", "PACKAGES", "VENV_ENV", "OfficialVenvError", "venv_path", "official_python"]

VASTAI_VERSION = "1.9.1"
PACKAGES = (f"vastai=={VASTAI_VERSION}", "numpy")
VENV_ENV = "VAST_MAGIC_VASTAI_VENV"
_PROBE = "import vastai.serverless.remote.serve_deployment, vastai.serverless.server.lib.backend, Crypto, numpy"
_MARKER = ".vast_magic_complete"
_INSTALL_TIMEOUT = 900


class OfficialVenvError(RuntimeError):
    """The official worker's venv could not be built (usually: no access to the package index)."""


def venv_path() -> Path:
    """Where the venv lives: ``$VAST_MAGIC_VASTAI_VENV``, else a per-interpreter folder in the user cache."""
    override = os.environ.get(VENV_ENV, "").strip()
    if override:
        return Path(os.path.expanduser(override)).absolute()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vast_magic" / f"vastai-{VASTAI_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"


def official_python() -> Path:
    """The venv's interpreter, building the venv first when it is missing or incomplete."""
    venv = venv_path()
    python = venv / "bin" / "python"
    if _complete(venv):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another process may be building it right now
        if not _complete(venv):
            _build(venv)
    return python


def _complete(venv: Path) -> bool:
    try:
        return (venv / _MARKER).read_text() == _marker_text() and (venv / "bin" / "python").exists()
    except OSError:
        return False


def _marker_text() -> str:
    return " ".join(PACKAGES) + "\n"


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    steps = [
        ("create the venv", [sys.executable, "-m", "venv", str(venv)]),
        (f"install {' '.join(PACKAGES)}", [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                          *PACKAGES]),
        ("import the official worker", [str(python), "-c", _PROBE]),
    ]
    for what, command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise OfficialVenvError(f"could not {what} in {venv}: {exc}") from None
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = (done.stdout + done.stderr).strip()[-2000:]
            raise OfficialVenvError(
                f"could not {what} in {venv} (exit {done.returncode}); building it needs the package index "
                f"(pip install {' '.join(PACKAGES)}), or set {VENV_ENV} to a venv that has them.\n{tail}")
    (venv / _MARKER).write_text(_marker_text())
