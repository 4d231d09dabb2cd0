"""Shared fixtures: an isolated VAST_MAGIC_HOME whose engine and workers are stopped by PID."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from vast_magic.backends.local import launcher, store
from vast_magic.backends.local.workers import proc_start_time

# Hypothesis keeps its example database in ./.hypothesis by default: the checkout stays clean instead.
set_hypothesis_home_dir(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vast_magic" / "hypothesis")


class EngineHome:
    """A private home; remembers every engine/worker pid it saw and proves they are gone at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.pids: set[tuple[int, int | None]] = set()

    def collect(self) -> None:
        info = launcher.running_engine(self.path)
        if info:
            self.pids.add((info["pid"], info["start_time"]))
        try:
            for rec in store.read_only(self.path, "workers"):
                self.pids.add((rec.pid, rec.start_time))
        except Exception:  # no state yet
            pass

    def alive(self) -> list[int]:
        return [pid for pid, start in self.pids if start is not None and proc_start_time(pid) == start]

    def stop_everything(self) -> None:
        self.collect()
        launcher.engine_stop(self.path)
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.alive(), f"orphan processes left: {self.alive()}"


@pytest.fixture
def engine_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("VAST_MAGIC_HOME", str(home))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    monkeypatch.setenv("VAST_MAGIC_ENGINE_IDLE_TIMEOUT", "120")
    handle = EngineHome(home)
    try:
        yield handle
    finally:
        handle.stop_everything()


@pytest.fixture(scope="module")
def module_engine_home(tmp_path_factory):
    """A private home shared by one module's tests (for servers they share, e.g. JupyterLab); its engine and
    workers are stopped by PID when the module is done. Nothing is set in this process's environment."""
    home = tmp_path_factory.mktemp("module-home")
    home.chmod(0o700)
    handle = EngineHome(home)
    try:
        yield handle
    finally:
        handle.stop_everything()
