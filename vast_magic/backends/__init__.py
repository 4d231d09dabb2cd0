"""Backends: where deployments run. ``get_backend(kind)`` is the one way to get one."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["get_backend"]


def get_backend(kind: str, **opts: Any):
    """A backend instance: ``"local"`` (the embedded engine, default) or ``"vast"``."""
    if kind == "local":
        from .local.backend import LocalBackend
        return LocalBackend(home=opts.get("home"))
    if kind == "vast":
        from .vast.backend import VastBackend
        return VastBackend(**opts)
    raise ConfigError(f"unknown backend {kind!r}; use 'local' or 'vast'.")
