"""The frozen value types the public API returns (a contract: see DESIGN.md).

``DeployReport`` and ``DeploymentStatus`` draw themselves as HTML in Jupyter
(``_repr_html_``) with a renderer the display layer registers
(``register_html``): this module sits below the display and cannot import it.
Their text (``repr``) stays what it was; without a registered renderer, or when
the renderer declines (text display mode), Jupyter shows that text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["WORKER_STATES", "figure_or_none", "Fingerprint", "WorkerInfo", "DeployReport", "Bundle", "CallStats", "DeploymentStatus",
           "LogLine", "register_html"]

_HTML_RENDERERS: dict[type, Callable[[Any], "str | None"]] = {}


def figure_or_none(value):
    """A worker's score, load or reliability as shown: a non-finite number (NaN from a broken benchmark or a
    bad answer from Vast) is no figure at all, never a score, and keeps values comparable (NaN != NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def register_html(cls: type, render: Callable[[Any], "str | None"]) -> None:
    """Let instances of ``cls`` show as ``render(instance)`` in Jupyter (None: show the text instead)."""
    _HTML_RENDERERS[cls] = render


class _HTMLRepr:
    def _repr_html_(self) -> str | None:
        render = _HTML_RENDERERS.get(type(self))
        return render(self) if render is not None else None

WORKER_STATES = ("starting", "installing", "contexts", "benchmarking", "ready", "failed", "stopped")


@dataclass(frozen=True)
class Fingerprint:
    """Four hex SHA-256 digests over a Manifest; equal fingerprints mean nothing to deploy."""

    code: str
    image: str
    autoscaling: str
    tag: str


@dataclass(frozen=True)
class WorkerInfo:
    """One worker; ``state`` is one of WORKER_STATES, ``detail`` the backend's own status text (Vast's).
    ``load``: the workload it has now, in the unit of ``perf`` (so ``load / perf`` is how busy it is);
    ``reliability`` (0-1): the host's, as Vast reports it. Both None when unknown. ``start`` (local engine):
    how its process was made, ``forked`` from its version's template or a ``fresh`` interpreter."""

    id: str
    state: str
    perf: float | None = None
    pid: int | None = None
    version: str | None = None
    error: str | None = None
    detail: str | None = None
    load: float | None = None
    reliability: float | None = None
    start: str | None = None

    def __post_init__(self) -> None:
        for name in ("perf", "load", "reliability"):
            object.__setattr__(self, name, figure_or_none(getattr(self, name)))

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> "WorkerInfo":
        """A worker as the engine sent it; fields this client does not know (an engine newer than the client
        that talks to it) are left out instead of failing the status."""
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DeployReport(_HTMLRepr):
    """``workload_per_call`` only helps drawing perf as calls/s; it is not part of the report's text or identity."""

    tier: int
    reasons: tuple[str, ...]
    fingerprint: Fingerprint
    bundle_size: int
    files: int
    endpoint: str | None
    workers: tuple[WorkerInfo, ...]
    benchmark: float | None
    dry_run: bool
    backend_action: str | None = None
    workload_per_call: float | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Bundle:
    path: str
    fingerprint: Fingerprint
    files: tuple[str, ...]


@dataclass(frozen=True)
class CallStats:
    """This process's recent calls to one deployment, counted on the client (``window`` seconds back)."""

    calls: int                  # calls that ended in the window
    failed: int                 # of which raised or failed
    window: float               # seconds the figures cover
    rate: float                 # calls per second over the window
    p50: float | None           # latency percentiles in seconds (None without calls)
    p99: float | None
    total: int = 0              # calls since this process first called the deployment


@dataclass(frozen=True)
class DeploymentStatus(_HTMLRepr):
    """``services``: (role, URL) of what the backend talks to (Vast's webserver and autoscaler);
    ``calls``: this process's recent calls (None where nothing counts them, e.g. the CLI);
    ``workload_per_call``: what one call weighs in the unit of ``perf`` (None: a workload calculator decides),
    only for drawing perf as calls/s, so not part of the text or identity."""

    name: str
    tag: str
    endpoint: str | None
    state: str
    workers: tuple[WorkerInfo, ...]
    not_applied_locally: tuple[str, ...] = field(default=())
    services: tuple[tuple[str, str], ...] = field(default=())
    calls: CallStats | None = None
    workload_per_call: float | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LogLine:
    time: float
    worker: str
    stream: str  # "stdout" | "stderr" | "system"
    text: str
    function: str | None = None
