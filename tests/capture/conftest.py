"""Fixtures of the capture tests: ``shell``, a real IPython shell whose cells land in its history."""
from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


@pytest.fixture
def shell():
    """A real InteractiveShell with an in-memory history, fresh for each test."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    instance = InteractiveShell.instance(config=config)
    yield instance
    instance.reset(new_session=False)
    InteractiveShell.clear_instance()
