"""Fixtures of the local engine tests: ``harness``, one engine home per test, proven empty at the end."""
from __future__ import annotations

import pytest

from tests.backends.local.engine_harness import Harness


@pytest.fixture
def harness(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("VAST_MAGIC_HOME", str(home))
    monkeypatch.setenv("VAST_MAGIC_ENGINE_IDLE_TIMEOUT", "120")
    h = Harness(home, tmp_path)
    try:
        yield h
    finally:
        h.close()
