"""Which environments run the quickstart's Vast section (cells tagged needs-vast)."""
from __future__ import annotations

import pytest

from vast_magic.notebook.runner import VAST_VARIABLES, vast_skip_reason


@pytest.mark.parametrize("environ, runs", [
    ({}, False),
    ({"VAST_API_KEY": ""}, False),
    ({"HOME": "/somewhere"}, False),
    ({"VAST_API_KEY": "k"}, True),
    ({"VAST_MAGIC_VAST_URL": "http://127.0.0.1:1"}, True),
])
def test_vast_cells_run_only_when_the_environment_names_vast(environ, runs):
    reason = vast_skip_reason(environ)
    assert (reason is None) is runs
    if not runs:
        assert all(name in reason for name in VAST_VARIABLES)
