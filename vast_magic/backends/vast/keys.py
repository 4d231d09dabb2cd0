"""Finding the Vast API key, in the order of the official SDK (reference 1.1).

Argument, then ``VAST_API_KEY``, then ``$XDG_CONFIG_HOME/vastai/vast_api_key``
(``~/.config/vastai/vast_api_key`` when XDG_CONFIG_HOME is unset), then
``~/.vast_api_key``. The key itself is never printed or put in a message.
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import ConfigError

__all__ = ["MISSING_KEY", "key_files", "find_api_key", "require_api_key"]

MISSING_KEY = ("backend='vast' needs a Vast.ai API key: set VAST_API_KEY, pass api_key= to Deployment(...), "
               "or save it with `vastai set api-key` (~/.config/vastai/vast_api_key).")


def key_files() -> tuple[Path, ...]:
    """The files searched after the environment, in order."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "vastai" / "vast_api_key", Path.home() / ".vast_api_key"


def find_api_key(explicit: str | None = None) -> str | None:
    """The first key found, or None."""
    if explicit and explicit.strip():
        return explicit.strip()
    from_env = os.environ.get("VAST_API_KEY", "").strip()
    if from_env:
        return from_env
    for path in key_files():
        try:
            key = path.read_text().strip()
        except OSError:
            continue
        if key:
            return key
    return None


def require_api_key(explicit: str | None = None) -> str:
    """The key, or a ConfigError that says how to provide one."""
    key = find_api_key(explicit)
    if key is None:
        raise ConfigError(MISSING_KEY)
    return key
