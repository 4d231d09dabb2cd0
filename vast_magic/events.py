"""The typed event stream of a deployment, and the one way to render states as lines.

``ensure_ready`` emits these events; widgets, text output, the CLI and tests
all consume the same stream. ``apply_event`` folds an event into a
``DeployState``; ``status_lines`` turns a state into lines (``format_status``
joins them) and ``deployment_lines`` does the same for a ``DeploymentStatus``
snapshot. Every view (text, widget, CLI) shows these lines and only decides
how they look; ``format_event`` is the line one event adds, built from the same
pieces. All pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Union

from .reports import DeploymentStatus, LogLine, figure_or_none

__all__ = [
    "Packaging", "TierDecided", "WorkerState", "BenchmarkScored", "Ready", "Retry", "Waited", "Failed", "Warned",
    "Event",
    "EventSink", "WorkerRow", "DeployState", "PHASES", "apply_event", "Line", "last_line", "format_worker",
    "format_retry", "status_lines", "format_status", "format_event", "deployment_lines", "format_deployment_status",
    "deployment_summary"
]


@dataclass(frozen=True)
class Packaging:
    files: int
    bytes: int


@dataclass(frozen=True)
class TierDecided:
    """``tiers[i]`` is the tier ``reasons[i]`` implies (``decide_tier`` owns that); a backend that repeats the
    decision with a note of its own may leave ``tiers`` short, the notes then imply no tier."""

    tier: int
    reasons: tuple[str, ...]
    backend_action: str | None = None
    tiers: tuple[int, ...] = ()


@dataclass(frozen=True)
class WorkerState:
    """``load``: the workload the worker has now, in the unit of ``perf`` (the local engine's in-flight
    workload, Vast's ``cur_load``), so ``load / perf`` is how busy it is; ``reliability`` (0-1) is Vast's."""

    worker: str
    state: str
    perf: float | None = None
    pid: int | None = None
    version: str | None = None
    error: str | None = None
    detail: str | None = None        # the backend's own status text (Vast's), shown next to the state
    load: float | None = None
    reliability: float | None = None
    start: str | None = None         # local engine: how the process was made, "forked" (from a template) or "fresh"
    startup: float | None = None     # local engine, on "ready": seconds from the engine wanting it to ready


@dataclass(frozen=True)
class BenchmarkScored:
    worker: str
    perf: float
    median: float | None = None


@dataclass(frozen=True)
class Ready:
    endpoint: str | None
    elapsed: float
    dry_run: bool = False


@dataclass(frozen=True)
class Retry:
    what: str
    attempt: int
    max_attempts: int
    delay: float
    reason: str


@dataclass(frozen=True)
class Waited:
    """A call waited for a worker (a note in the call's outcome, like its ``Retry`` events); ``status`` is the backend's own words (Vast's ``/route/`` ``status``:
    the endpoint's workers by state, or "endpoint stopped"), first given on poll ``polls``, ``after`` s in."""

    what: str
    status: str
    polls: int
    after: float


@dataclass(frozen=True)
class Failed:
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class Warned:
    """Something the deploy goes ahead with but the user should read (a package the image lacks)."""

    message: str


Event = Union[Packaging, TierDecided, WorkerState, BenchmarkScored, Ready, LogLine, Retry, Failed, Warned]
EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class WorkerRow:
    worker: str
    state: str
    perf: float | None = None
    error: str | None = None
    detail: str | None = None
    load: float | None = None
    reliability: float | None = None


@dataclass(frozen=True)
class DeployState:
    """Everything a progress view shows, rebuilt from events only."""

    name: str = ""
    files: int | None = None
    bytes: int | None = None
    tier: int | None = None
    reasons: tuple[str, ...] = ()
    tiers: tuple[int | None, ...] = ()   # the tier each reason implies (None: a backend's note)
    backend_action: str | None = None
    workers: tuple[WorkerRow, ...] = ()
    endpoint: str | None = None
    elapsed: float | None = None
    retry: Retry | None = None          # the latest retry, until the deploy is ready
    error: str | None = None
    error_traceback: str | None = None
    done: bool = False
    dry_run: bool = False
    logs: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = ()
    workload_per_call: float | None = None   # set by whoever opens the progress: perf / this = calls/s

    @property
    def phase(self) -> str:
        """One of ``PHASES``."""
        if self.error:
            return "failed"
        if self.done:
            return "dry run" if self.dry_run else "ready"
        if self.tier is None:
            return "packaging"
        return "deploying"


#: every value of ``DeployState.phase`` (tests check the state machine reaches exactly these)
PHASES = ("packaging", "deploying", "ready", "dry run", "failed")


def _reason_tiers(state: DeployState, event: TierDecided) -> tuple[int | None, ...]:
    """The tier of each reason: the event's, else what an earlier decision said of the same reason."""
    known = dict(zip(state.reasons, state.tiers))
    return tuple(event.tiers[i] if i < len(event.tiers) else known.get(reason)
                 for i, reason in enumerate(event.reasons))


def _upsert_worker(rows: tuple[WorkerRow, ...], worker: str, **changes) -> tuple[WorkerRow, ...]:
    changes = {k: figure_or_none(v) for k, v in changes.items()}
    out, found = [], False
    for row in rows:
        if row.worker == worker:
            row, found = replace(row, **{k: v for k, v in changes.items() if v is not None or k == "error"}), True
        out.append(row)
    if not found:
        out.append(WorkerRow(worker=worker, **{k: v for k, v in changes.items()}))
    return tuple(out)


def apply_event(state: DeployState, event: Event) -> DeployState:
    """Fold one event into the state (pure)."""
    if isinstance(event, Packaging):
        return replace(state, files=event.files, bytes=event.bytes)
    if isinstance(event, TierDecided):
        return replace(state, tier=event.tier, reasons=event.reasons, tiers=_reason_tiers(state, event),
                       backend_action=event.backend_action)
    if isinstance(event, WorkerState):
        return replace(state, workers=_upsert_worker(state.workers, event.worker, state=event.state,
                                                     perf=event.perf, error=event.error, detail=event.detail,
                                                     load=event.load, reliability=event.reliability))
    if isinstance(event, BenchmarkScored):
        return replace(state, workers=_upsert_worker(state.workers, event.worker, state="benchmarking", perf=event.perf))
    if isinstance(event, Ready):
        return replace(state, endpoint=event.endpoint, elapsed=event.elapsed, done=True, dry_run=event.dry_run, retry=None)
    if isinstance(event, Retry):
        return replace(state, retry=event)
    if isinstance(event, Failed):        # a failure without words still fails
        return replace(state, error=event.message or "failed", error_traceback=event.traceback)
    if isinstance(event, LogLine):
        return replace(state, logs=(state.logs + (f"[{event.worker}] {event.text}",))[-20:])
    if isinstance(event, Warned):
        return replace(state, warnings=state.warnings + (event.message,))
    return state


# -- rendering: the one place a state becomes lines -------------------------------------------
@dataclass(frozen=True)
class Line:
    """One rendered line; ``part`` says where a view puts it, ``state`` is the worker's state on worker rows,
    ``step`` the deploy step it reports on (``display.steps`` hangs it under that step; None: the running one)."""

    part: str                      # header | body | warning | worker | retry | done | error
    text: str
    state: str | None = None
    step: str | None = None


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _packaging(files: int, size: int) -> str:
    return f"packaged {files} files, {_human_bytes(size)}"


def _tier(tier: int, reasons: tuple[str, ...], backend_action: str | None) -> str:
    action = f" (backend: {backend_action})" if backend_action else ""
    return f"tier {tier}{action}: " + ("; ".join(reasons) or "no changes")


def last_line(text: str) -> str:
    """The last non-blank line of a traceback or message: what it ended with."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def format_worker(row: WorkerRow) -> str:
    """One worker as a line: our state, the backend's own status word, measured perf (never a placeholder:
    backends leave ``perf`` unset until it is measured), then load and reliability when the backend gives them."""
    detail = f" (vast: {row.detail})" if row.detail and row.detail.lower() != row.state else ""
    perf = f" perf={row.perf:,.1f}/s" if row.perf is not None else ""
    load = f" load={row.load:,.1f}" if row.load is not None else ""
    reliability = f" reliability={row.reliability * 100:.1f}%" if row.reliability is not None else ""
    error = f" error: {last_line(row.error)}" if row.error and row.error.strip() else ""
    return f"worker {row.worker}: {row.state}{detail}{perf}{load}{reliability}{error}"


def format_retry(event: Retry) -> str:
    return f"{event.what}: retry {event.attempt}/{event.max_attempts} in {event.delay:.1f}s ({event.reason})"


def _ready(endpoint: str | None, elapsed: float, dry_run: bool) -> str:
    if dry_run:
        return f"dry run: nothing changed or started ({elapsed:.2f}s)"
    return f"ready at {endpoint} in {elapsed:.2f}s" if endpoint else f"ready in {elapsed:.2f}s"


def status_lines(state: DeployState) -> tuple[Line, ...]:
    """The lines of a deploy's state: header, packaging, tier, one per worker, retry, result, failure."""
    lines = [Line("header", f"vast_magic deploy {state.name}: {state.phase}".rstrip())]
    if state.files is not None:
        lines.append(Line("body", _packaging(state.files, state.bytes or 0), step="package"))
    lines += [Line("warning", f"warning: {message}", step="package") for message in state.warnings]
    if state.tier is not None:
        lines.append(Line("body", _tier(state.tier, state.reasons, state.backend_action), step="tier"))
    lines += [Line("worker", format_worker(row), row.state, step="workers") for row in state.workers]
    if state.retry is not None:
        lines.append(Line("retry", format_retry(state.retry)))
    if state.done:
        lines.append(Line("done", _ready(state.endpoint, state.elapsed or 0.0, state.dry_run), step="ready"))
    if state.error:
        lines.append(Line("error", f"FAILED: {state.error}"))
    return tuple(lines)


def format_status(state: DeployState) -> str:
    """A DeployState as plain text (the widget's text/plain too)."""
    return "\n".join(line.text for line in status_lines(state))


def format_event(event: Event | Waited) -> str | None:
    """The one line an event adds, for text mode and logs (None: nothing to print); also the line of a call's
    ``Waited`` note (a call's, never a deploy's event)."""
    if isinstance(event, Packaging):
        return _packaging(event.files, event.bytes)
    if isinstance(event, TierDecided):
        return _tier(event.tier, event.reasons, event.backend_action)
    if isinstance(event, WorkerState):
        return format_worker(WorkerRow(event.worker, event.state, event.perf, event.error, event.detail,
                                       event.load, event.reliability))
    if isinstance(event, BenchmarkScored):
        return f"worker {event.worker}: benchmark {event.perf:,.1f}/s"
    if isinstance(event, Ready):
        return _ready(event.endpoint, event.elapsed, event.dry_run)
    if isinstance(event, Retry):
        return format_retry(event)
    if isinstance(event, Waited):
        return f"{event.what}: waiting for a worker after {event.after:.1f}s (vast: {event.status})"
    if isinstance(event, Failed):
        return f"FAILED: {event.message}"
    if isinstance(event, LogLine):
        return f"[{event.worker}] {event.text}"
    if isinstance(event, Warned):
        return f"warning: {event.message}"
    return None


def deployment_lines(status: DeploymentStatus) -> tuple[Line, ...]:
    """A status snapshot (``%vast_status``, ``vast-magic status``); worker rows read like the deploy's."""
    lines = [Line("header", f"vast_magic {status.name} (tag {status.tag}): {status.state}")]
    if status.endpoint:
        lines.append(Line("body", f"endpoint {status.endpoint}"))
    if status.services:
        lines.append(Line("body", ", ".join(f"{role} {url}" for role, url in status.services)))
    lines += [Line("worker", format_worker(WorkerRow(w.id, w.state, w.perf, w.error, w.detail)), w.state)
              for w in status.workers]
    if status.not_applied_locally:
        lines.append(Line("body", "not applied locally: " + ", ".join(status.not_applied_locally)))
    return tuple(lines)


def format_deployment_status(status: DeploymentStatus) -> str:
    return "\n".join(line.text for line in deployment_lines(status))


def deployment_summary(status: DeploymentStatus) -> str:
    """One row per deployment for listings (``vast-magic ls``): name, tag, state, ready workers, endpoint."""
    ready = sum(worker.state == "ready" for worker in status.workers)
    return "\t".join((status.name, status.tag, status.state, f"{ready}/{len(status.workers)} ready",
                      status.endpoint or "-"))
