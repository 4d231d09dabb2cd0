"""The one error tree of vast_magic.

Every error a user can see derives from ``VastMagicError`` so that
``except VastMagicError`` catches everything we raise on purpose::

    VastMagicError
     ├── ConfigError        bad settings, arguments, queries, autoscaling, images
     ├── CaptureError       code or values that cannot be shipped to a worker
     ├── BundleError        the bundle cannot be built or read
     ├── CallCancelledError a spawned call was cancelled (``handle.cancel()``); ``outcome`` says what ran
     ├── BackendError       the engine / Vast API failed or refused
     │    ├── DeployError                a deployment did not become ready (carries the report)
     │    ├── CallTimeoutError           a call took longer than its timeout (also a TimeoutError)
     │    ├── OverloadedError            the queue is longer than the function's max_queue_time
     │    ├── WorkerLostError            the worker died while running the call
     │    ├── EngineUnavailableError     the local engine is not running and the request must not start it
     │    ├── EngineConnectionLostError  the local engine went away while a request was outstanding
     │    ├── UntrustedTypeError         a Vast worker answered with a type not allowed (see trusted_types)
     │    └── VastAPIError               the Vast API answered with an error or could not be reached (``status``)
     │         ├── VastAuthError         401/403: the API key was rejected
     │         ├── VastNotFoundError     404: the deployment, endpoint or workergroup does not exist (any more)
     │         ├── VastRejectedError     400/422 and other 4xx: Vast refused the request as sent
     │         ├── VastRateLimitedError  429 on every attempt
     │         ├── VastUnavailableError  5xx, timeouts or transport errors on every attempt
     │         └── VastUploadError       the bundle upload to the presigned URL failed
     └── RemoteError        the remote function raised; see ``remote_error_type``

A remote ``ValueError`` is raised as a class deriving from both ``RemoteError``
and ``ValueError`` so ``except ValueError`` keeps working in user code. No
Vast error message ever contains an API key: the Vast client scrubs every key
it knows from server texts before quoting them.
"""
from __future__ import annotations

import builtins
import importlib
import sys
from typing import Any

__all__ = [
    "VastMagicError", "ConfigError", "CaptureError", "BundleError", "CallCancelledError", "BackendError", "DeployError",
    "CallTimeoutError", "OverloadedError", "WorkerLostError", "EngineUnavailableError",
    "EngineConnectionLostError", "UntrustedTypeError", "VastAPIError", "VastAuthError", "VastNotFoundError", "VastRejectedError",
    "VastRateLimitedError", "VastUnavailableError", "VastUploadError", "RemoteError", "remote_error_type",
    "make_remote_error"
]


class VastMagicError(Exception):
    """Root of every error vast_magic raises on purpose."""


class ConfigError(VastMagicError):
    """Something the user configured is invalid; the message says how to fix it."""


class CaptureError(VastMagicError):
    """Code or a value reachable from a remote function cannot be shipped."""


class BundleError(VastMagicError):
    """The bundle could not be built, written or read."""


class CallCancelledError(VastMagicError):
    """The call was cancelled (``handle.cancel()``). ``outcome`` is what happened to it on the worker:
    ``"never_ran"``, ``"stopped"`` (interrupted while running) or ``"still_running"`` (a plain ``def``
    cannot be interrupted: it runs to its end and its result is dropped)."""

    def __init__(self, message: str, outcome: str = "never_ran"):
        super().__init__(message)
        self.outcome = outcome


class BackendError(VastMagicError):
    """The local engine or the Vast API failed, refused or could not be reached."""


class DeployError(BackendError):
    """A deployment did not become ready; ``report`` holds what was reached."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


class CallTimeoutError(BackendError, TimeoutError):
    """A remote call did not finish within its ``timeout``."""


class OverloadedError(BackendError):
    """The function's queue is longer than its ``max_queue_time``; retry later or scale up."""


class WorkerLostError(BackendError):
    """The worker running a call died; ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()):
        super().__init__(message)
        self.log_tail = tuple(log_tail)


class EngineUnavailableError(BackendError):
    """The local engine daemon is not running and this request must not start it."""


class EngineConnectionLostError(BackendError):
    """The local engine daemon went away while a request was outstanding; retry."""


class VastAPIError(BackendError):
    """The Vast API answered with an error or could not be reached; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class VastAuthError(VastAPIError):
    """401/403: the API key was rejected."""


class VastNotFoundError(VastAPIError):
    """404: the deployment, endpoint or workergroup does not exist (any more)."""


class VastRejectedError(VastAPIError):
    """400/422 (and other 4xx): Vast refused the request as sent."""


class VastRateLimitedError(VastAPIError):
    """429 on every attempt."""


class VastUnavailableError(VastAPIError):
    """5xx, timeouts or transport errors on every attempt."""


class VastUploadError(VastAPIError):
    """The bundle upload to the presigned URL failed."""


class UntrustedTypeError(BackendError):
    """A Vast worker's answer holds a type answers from Vast may not carry; nothing of it was used.

    A Vast host is a third party: unpickling an arbitrary type could run code
    on this machine. ``type_name`` is the refused ``module.name``; trust it with
    ``Deployment(trusted_types=[TheClass])`` or its module with ``["package"]``.
    """

    def __init__(self, message: str, type_name: str = ""):
        super().__init__(message)
        self.type_name = type_name


class RemoteError(VastMagicError):
    """The remote function raised. Carries the remote type, message and traceback."""

    remote_type: str = ""
    remote_message: str = ""
    remote_traceback: str = ""

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = ""):
        super().__init__(f"{remote_type}: {remote_message}" if remote_message else remote_type)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        return (_rebuild_remote_error, (self.remote_type, self.remote_message, self.remote_traceback))

    def _render_traceback_(self) -> list[str]:
        """IPython calls this instead of showing our own (uninteresting) frames."""
        lines = ["Remote traceback (most recent call last, on the worker):"]
        lines += self.remote_traceback.rstrip("\n").splitlines() or [f"{self.remote_type}: {self.remote_message}"]
        return lines


_REMOTE_CLASSES: dict[type, type] = {}


def _resolve_type(qualified: str, import_modules: bool = True) -> type | None:
    """``"builtins.ValueError"`` or ``"pkg.mod.Err"`` -> the class, if importable (or, without
    ``import_modules``, already imported: a name from an untrusted peer must not trigger an import)."""
    module, _, qualname = qualified.rpartition(".")
    try:
        if module in ("", "builtins"):
            obj: Any = builtins
        else:
            obj = importlib.import_module(module) if import_modules else sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def remote_error_type(qualified_type: str, import_modules: bool = True) -> type[RemoteError]:
    """The class to raise for a remote exception of type ``qualified_type``.

    It subclasses both ``RemoteError`` and the original type when that type is
    importable here (already imported, without ``import_modules``) and can be
    mixed in (plain ``Exception`` subclasses); otherwise plain ``RemoteError``.
    """
    original = _resolve_type(qualified_type, import_modules)
    if original is None or not issubclass(original, Exception) or issubclass(original, RemoteError):
        return RemoteError
    cached = _REMOTE_CLASSES.get(original)
    if cached is not None:
        return cached
    try:
        cls = type(f"Remote{original.__name__}", (RemoteError, original), {"__module__": __name__})
    except TypeError:  # layout conflicts (e.g. OSError subclasses with slots)
        return RemoteError
    _REMOTE_CLASSES[original] = cls
    return cls


def make_remote_error(qualified_type: str, message: str, traceback_text: str = "",
                      import_modules: bool = True) -> RemoteError:
    """Build the exception the caller sees for a failure on the worker (``import_modules=False`` for a
    third-party worker: its type name may not make us import anything)."""
    return remote_error_type(qualified_type, import_modules)(qualified_type.removeprefix("builtins."), message,
                                                             traceback_text)


def _rebuild_remote_error(remote_type: str, message: str, tb: str) -> RemoteError:
    return make_remote_error(remote_type if "." in remote_type else f"builtins.{remote_type}", message, tb)
