"""Backends: where deployments run. ``get_backend(kind)`` is the one way to get one."""
from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import ConfigError


def get_backend(kind: str, **opts: Any):
    """A backend instance: ``"local"`` (the embedded engine, default) or ``"vast"``."""
    if kind == "local":
        from .local.backend import LocalBackend
        return LocalBackend(home=opts.get("home"))
    if kind == "vast":
        if importlib.util.find_spec("vast_magic.backends.vast.backend") is None:
            raise ConfigError("backend 'vast' is not available yet; use backend='local'.")
        from .vast.backend import VastBackend
        return VastBackend(**opts)
    raise ConfigError(f"unknown backend {kind!r}; use 'local' or 'vast'.")
