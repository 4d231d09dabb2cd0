"""Code capture: live functions and classes from cells or modules -> shippable source and values.

``capture_code`` walks from the roots (remote functions, context classes,
helpers) through the globals they read and returns a ``CapturedCode``: one
generated module per origin module that ships as source, local module files,
and where each root lives on the worker. The digest functions give the
canonical hashes the Manifest compares.
"""
from .closure import capture_code
from .digests import filter_ignored_lines, source_digest, value_digest
from .model import (CELLS_MODULE, CapturedCode, DeploymentRef, ImportDef, LinkDef, ModuleFile, SourceDef,
                    SourceModule, ValueDef, location, qualified)
from .origins import is_deployment
from .requirements import requirement_warnings

__all__ = ["capture_code", "filter_ignored_lines", "source_digest", "value_digest", "requirement_warnings",
           "is_deployment", "CELLS_MODULE", "CapturedCode", "DeploymentRef", "ImportDef", "LinkDef", "ModuleFile", "SourceDef",
           "SourceModule", "ValueDef", "location", "qualified"]
