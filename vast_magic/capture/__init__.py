"""Code capture: live functions and classes from cells or modules -> shippable source and values.

``capture_code`` walks from the roots (remote functions, context classes,
helpers) through the globals they read and returns a ``CapturedCode``; the
digest functions give the canonical hashes the Manifest compares.
"""
from .closure import capture_code
from .digests import filter_ignored_lines, source_digest, value_digest
from .model import CapturedCode, ImportDef, ModuleFile, SourceDef, ValueDef

__all__ = ["capture_code", "filter_ignored_lines", "source_digest", "value_digest",
           "CapturedCode", "ImportDef", "ModuleFile", "SourceDef", "ValueDef"]
