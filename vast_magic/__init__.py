"""vast_magic: Vast.ai Serverless deployments native to Jupyter.

Public names only; see DESIGN.md for the contract.
"""
from __future__ import annotations

from .errors import (
    BackendError, BundleError, CallCancelledError, CallTimeoutError, CaptureError, ConfigError, DeployError,
    EngineConnectionLostError, EngineUnavailableError, OverloadedError, RemoteError, UntrustedTypeError, VastAPIError,
    VastAuthError, VastMagicError, VastNotFoundError, VastRateLimitedError, VastRejectedError, VastUnavailableError,
    VastUploadError, WorkerLostError,
)
from .reports import Bundle, DeploymentStatus, DeployReport, Fingerprint, LogLine, WorkerInfo
from .secret import Secret

__version__ = "0.1.0"

__all__ = [
    "BackendError", "Bundle", "BundleError", "CallCancelledError", "CallTimeoutError", "CaptureError", "ConfigError",
    "DeployError", "Deployment", "DeploymentStatus", "DeployReport", "EngineConnectionLostError",
    "EngineUnavailableError", "Fingerprint", "Image", "load_ipython_extension", "LogLine", "OverloadedError",
    "RemoteError", "Secret", "unload_ipython_extension", "UntrustedTypeError", "VastAPIError", "VastAuthError",
    "VastMagicError", "VastNotFoundError", "VastRateLimitedError", "VastRejectedError", "VastUnavailableError",
    "VastUploadError", "WorkerInfo", "WorkerLostError",
]


def __getattr__(name: str):
    # Deployment pulls in capture/bundle/backends: import it only when asked.
    if name == "Deployment":
        from .deployment import Deployment
        return Deployment
    if name == "Image":
        from .image import Image
        return Image
    raise AttributeError(f"module 'vast_magic' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """``%load_ext vast_magic``."""
    from .notebook.magics import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .notebook.magics import unload_ipython_extension as unload
    unload(ipython)
