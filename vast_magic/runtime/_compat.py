"""cloudpickle for the worker: the copy vendored in the bundle, else the installed one.

The vendored copy is loaded under the top-level name ``cloudpickle`` (not
``vast_magic_runtime._vendor.cloudpickle``) because pickles made on the client
refer to helpers as ``cloudpickle.cloudpickle._make_function`` and because some
cloudpickle releases import themselves absolutely (``from cloudpickle.cloudpickle
import *``). A cloudpickle already imported in this process wins, so one process
never holds two copies.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

_VENDORED_INIT = os.path.join(os.path.dirname(__file__), "_vendor", "cloudpickle", "__init__.py")


def _load_vendored():
    """Import the bundle's cloudpickle as the top-level package ``cloudpickle``."""
    spec = importlib.util.spec_from_file_location(
        "cloudpickle", _VENDORED_INIT, submodule_search_locations=[os.path.dirname(_VENDORED_INIT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cloudpickle"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("cloudpickle", None)
        raise
    return module


def _find_cloudpickle():
    if "cloudpickle" not in sys.modules and os.path.isfile(_VENDORED_INIT):
        return _load_vendored()
    return importlib.import_module("cloudpickle")


cloudpickle = _find_cloudpickle()
