"""The contract between ``Deployment`` and a backend (local engine or Vast).

A backend turns a ``DeployPlan`` into running workers (emitting events while it
works), routes calls to workers, and answers status/logs/teardown. Everything
here is data so both backends and the tests speak the same language.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CallTimeoutError, CaptureError, OverloadedError, make_remote_error
from ..events import EventSink, Retry, Waited
from ..reports import DeploymentStatus, LogLine, WorkerInfo

__all__ = [
    "DeployPlan", "ApplyResult", "CallSpec", "CallOutcome", "WORKER_TIMEOUT_MARK", "outcome_from_response",
    "unpicklable_arguments", "Backend"
]


@dataclass(frozen=True)
class DeployPlan:
    name: str
    tag: str
    tier: int                     # decided by decide_tier(previous, manifest)
    reasons: tuple[str, ...]
    manifest: Any                 # vast_magic.bundle.manifest.Manifest (backends only call .to_json(), .fingerprint())
    bundle_path: str              # the built tar.gz
    env: tuple[tuple[str, str], ...]       # plain env vars for workers (also in config.json)
    secrets: tuple[tuple[str, str], ...] = field(repr=False)  # revealed Secret values: never in a bundle, log or repr
    autoscaling: dict             # effective autoscaling settings (only the keys the user set for Vast)
    image: Any                    # vast_magic.image.ImageSpec
    ttl: float | None = None
    version_label: str | None = None
    wait: bool = True
    timeout: float = 600.0


@dataclass(frozen=True)
class ApplyResult:
    endpoint: str | None
    workers: tuple[WorkerInfo, ...]
    benchmark: float | None
    backend_action: str | None = None
    not_applied: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()          # what the backend adds to the tier's reasons (Vast's action, when it matters)


@dataclass(frozen=True)
class CallSpec:
    """What a call needs besides its arguments."""

    name: str                     # deployment name
    tag: str
    function: str
    timeout: float
    max_queue_time: float
    retries: int = 0
    cost: float = 100.0           # workload of this call, from workload_calculator
    trusted_types: tuple[str, ...] = ()    # Deployment(trusted_types=...), normalized (backends/vast/trusted.py)
    version: str | None = None    # manifest version (code fingerprint) the call must run on; None: any


@dataclass(frozen=True)
class CallOutcome:
    value: Any = None
    error: BaseException | None = None
    output: tuple[tuple[str, str], ...] = field(default=())   # (stream, text) printed on the worker
    retries: tuple[Retry, ...] = field(default=())            # one event per retry the backend made, in order
    waits: tuple[Waited, ...] = field(default=())             # what the backend said while the call waited


#: how the runtime executor words its own per-call timeout (runtime/executor.py)
WORKER_TIMEOUT_MARK = "did not finish within its timeout"


def outcome_from_response(response: dict, function: str | None = None, import_modules: bool = True) -> CallOutcome:
    """A worker's answer (docs/internals.md, "Worker call protocol") -> CallOutcome.

    Both backends receive the same answer dict, so it is decoded here once: a
    remote exception becomes our RemoteError subclass; the worker's own
    refusals are raised (overloaded -> OverloadedError, its per-call timeout ->
    CallTimeoutError). Answers from a third party (Vast) pass ``import_modules=False``: the
    error's type name then never makes us import a module.
    """
    printed = response.get("output")
    if not printed and response.get("ok"):                  # the common answer: a value, nothing printed
        return CallOutcome(value=response.get("value"))
    output = tuple((str(stream), str(text)) for stream, text in printed or ())
    if response.get("ok"):
        return CallOutcome(value=response.get("value"), output=output)
    prefix = f"{function}: " if function else ""
    if response.get("overloaded"):
        raise OverloadedError(f"{prefix}{response.get('message')}; retry later or raise max_workers.")
    envelope = response.get("error") or {}
    kind, text = str(envelope.get("type") or "builtins.Exception"), str(envelope.get("message") or "")
    if kind == "builtins.TimeoutError" and WORKER_TIMEOUT_MARK in text:
        raise CallTimeoutError(f"{text}; pass a larger timeout= to @app.remote.")
    return CallOutcome(error=make_remote_error(kind, text, str(envelope.get("traceback") or ""), import_modules),
                       output=output)


def unpicklable_arguments(function: str, exc: BaseException) -> CaptureError:
    """The error for arguments that cannot be pickled; each backend raises it ``from exc`` at the one
    step that pickles them, so a later failure (connection, worker, retry) is never blamed on them."""
    return CaptureError(f"the arguments of {function} cannot be sent to a worker ({exc}); nothing was sent. "
                        "Pass plain data (numbers, strings, lists, dicts, arrays, dataclasses) and create locks, "
                        "files, sockets or clients inside the remote function.")


class Backend(Protocol):
    kind: str

    async def previous_manifest_json(self, name: str, tag: str) -> str | None:
        """The JSON of the Manifest last applied for (name, tag), read without starting anything.

        The deploy pipeline parses it: backends never import the bundle layer above them.
        """

    async def apply(self, plan: DeployPlan, emit: EventSink) -> ApplyResult:
        """Make the workers run ``plan``; emit events; raise DeployError on failure."""

    async def call(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> CallOutcome:
        """Run one call on a worker; ``classes`` maps shipped classes for pickling by reference."""

    async def spawn(self, spec: CallSpec, args: tuple, kwargs: dict, classes: Any) -> str:
        """Start one call that the backend keeps (``f.spawn``); returns its id at once."""

    async def call_result(self, call_id: str, wait: float, classes: Any) -> CallOutcome | None:
        """The outcome of a spawned call, waiting up to ``wait`` s; None while it runs. ConfigError when
        the backend does not keep that call (any more)."""

    async def call_function(self, call_id: str) -> str:
        """The function a spawned call runs; ConfigError when the backend does not keep that call."""

    async def cancel_call(self, call_id: str) -> str:
        """``never_ran``, ``requested`` (its outcome tells the rest) or ``finished``."""

    async def status(self, name: str, tag: str) -> DeploymentStatus: ...

    async def known_deployments(self) -> list[tuple[str, str]]:
        """The (name, tag) pairs this backend knows of from this machine, read without starting anything."""

    async def logs(self, name: str, tag: str, function: str | None, tail: int) -> list[LogLine]: ...

    async def teardown(self, name: str, tag: str | None) -> None:
        """Stop (name, tag), or every tag of name when tag is None. Idempotent."""
