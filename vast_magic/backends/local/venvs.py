"""Cached virtual environments for images with pip requirements.

A venv lives in ``home/venvs/<key>``, key = SHA-256 over (requirements,
interpreter path, interpreter version), so a re-deploy with the same
requirements reuses it. It is complete only when the marker file exists (written
last), so an interrupted install is redone rather than trusted. A ``.pth``
file appends the deploying client's site-packages: a
``--system-site-packages`` venv would only see the *base* interpreter, not the
client's own venv where cloudpickle, numpy etc. live.

Extra pip arguments (``--no-index --find-links DIR`` for offline installs,
an index URL, ...) come from ``VAST_MAGIC_PIP_ARGS`` in the deploying
client's environment, split like a shell would.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ...errors import DeployError

__all__ = ["MARKER", "PTH_NAME", "PIP_ARGS_ENV", "pip_args_from_env", "venv_key", "ensure_venv"]

MARKER = ".vast_magic_complete"
PTH_NAME = "vast_magic_caller_site.pth"
PIP_ARGS_ENV = "VAST_MAGIC_PIP_ARGS"


def pip_args_from_env(environ: dict | None = None) -> list[str]:
    return shlex.split((environ if environ is not None else os.environ).get(PIP_ARGS_ENV, ""))


def venv_key(requirements: list[str], python: str, version: str) -> str:
    blob = json.dumps([sorted(requirements), os.path.abspath(python), version])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _run(cmd: list[str], log: list[str], timeout: float) -> None:
    """Run one install step; on failure raise DeployError with the last 20 output lines."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"installing pip requirements failed: {exc}; the previous version keeps serving.") from exc
    log.extend(proc.stdout.splitlines())
    if proc.returncode != 0:
        tail = "\n".join(log[-20:])
        raise DeployError(f"installing pip requirements failed (exit {proc.returncode}); fix image.pip_install(...) "
                          f"or VAST_MAGIC_PIP_ARGS. The previous version keeps serving. Last lines:\n{tail}")


def _create(folder: Path, requirements: list[str], python: str, pip_args: list[str], timeout: float) -> list[str]:
    log: list[str] = []
    venv_python = str(folder / "bin" / "python")
    uv = shutil.which("uv")
    if uv:
        _run([uv, "venv", "--quiet", "--python", python, str(folder)], log, timeout)
        _run([uv, "pip", "install", "--python", venv_python, *pip_args, *requirements], log, timeout)
    else:
        _run([python, "-m", "venv", str(folder)], log, timeout)
        _run([venv_python, "-m", "pip", "install", "--disable-pip-version-check", *pip_args, *requirements], log, timeout)
    return log


def _add_caller_site(folder: Path, site_packages: list[str]) -> None:
    purelib = subprocess.run([str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             stdout=subprocess.PIPE, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, PTH_NAME).write_text("".join(f"{p}\n" for p in site_packages))


def ensure_venv(home: Path, requirements: list[str], python: str, version: str, site_packages: list[str],
                pip_args: list[str], timeout: float = 900.0) -> str:
    """The python of a complete venv with ``requirements`` installed (cached); DeployError on failure."""
    root = Path(home) / "venvs"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = root / venv_key(requirements, python, version)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # two applies with the same requirements install once
        if not (folder / MARKER).exists():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                _create(folder, requirements, python, pip_args, timeout)
                _add_caller_site(folder, site_packages)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            (folder / MARKER).write_text(json.dumps({"requirements": requirements, "python": python}))
    return str(folder / "bin" / "python")
