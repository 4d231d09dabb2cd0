"""Fixtures of the Vast backend tests: ``h``, a fresh harness on the fake Vast API (no network)."""
from __future__ import annotations

import pytest

from tests.backends.vast.vast_harness import Harness


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.fake.close()          # its worker processes, by PID
