"""Notebook integration: the magics (``magics``), what they do (``actions``), their settings (``config``)."""

__all__ = []
