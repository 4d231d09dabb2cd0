"""Notebook integration: the magics (``magics``), what they do (``session``), their settings (``config``)."""

__all__ = []
