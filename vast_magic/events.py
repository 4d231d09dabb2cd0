"""The typed event stream of a deployment, and the one way to render it.

``ensure_ready`` emits these events; widgets, text output, the CLI and tests
all consume the same stream. ``apply_event`` folds an event into a
``DeployState`` and ``format_status`` renders a state: both are pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Union

from .reports import LogLine


@dataclass(frozen=True)
class Packaging:
    files: int
    bytes: int


@dataclass(frozen=True)
class TierDecided:
    tier: int
    reasons: tuple[str, ...]
    backend_action: str | None = None


@dataclass(frozen=True)
class WorkerState:
    worker: str
    state: str
    perf: float | None = None
    pid: int | None = None
    version: str | None = None
    error: str | None = None


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


@dataclass(frozen=True)
class DeployState:
    """Everything a progress view shows, rebuilt from events only."""

    name: str = ""
    files: int | None = None
    bytes: int | None = None
    tier: int | None = None
    reasons: tuple[str, ...] = ()
    backend_action: str | None = None
    workers: tuple[WorkerRow, ...] = ()
    endpoint: str | None = None
    elapsed: float | None = None
    retry: str | None = None
    error: str | None = None
    error_traceback: str | None = None
    done: bool = False
    dry_run: bool = False
    logs: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = ()

    @property
    def phase(self) -> str:
        if self.error:
            return "failed"
        if self.done:
            return "dry run" if self.dry_run else "ready"
        if self.tier is None:
            return "packaging"
        return "deploying"


def _upsert_worker(rows: tuple[WorkerRow, ...], worker: str, **changes) -> tuple[WorkerRow, ...]:
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
        return replace(state, tier=event.tier, reasons=event.reasons, backend_action=event.backend_action)
    if isinstance(event, WorkerState):
        return replace(state, workers=_upsert_worker(state.workers, event.worker, state=event.state,
                                                     perf=event.perf, error=event.error))
    if isinstance(event, BenchmarkScored):
        return replace(state, workers=_upsert_worker(state.workers, event.worker, state="benchmarking", perf=event.perf))
    if isinstance(event, Ready):
        return replace(state, endpoint=event.endpoint, elapsed=event.elapsed, done=True, dry_run=event.dry_run, retry=None)
    if isinstance(event, Retry):
        return replace(state, retry=f"{event.what}: retry {event.attempt}/{event.max_attempts} in {event.delay:.1f}s ({event.reason})")
    if isinstance(event, Failed):
        return replace(state, error=event.message, error_traceback=event.traceback)
    if isinstance(event, LogLine):
        return replace(state, logs=(state.logs + (f"[{event.worker}] {event.text}",))[-20:])
    if isinstance(event, Warned):
        return replace(state, warnings=state.warnings + (event.message,))
    return state


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_worker(row: WorkerRow) -> str:
    perf = f" perf={row.perf:,.1f}/s" if row.perf is not None else ""
    error = f" error: {row.error.strip().splitlines()[-1]}" if row.error else ""
    return f"worker {row.worker}: {row.state}{perf}{error}"


def format_status(state: DeployState) -> str:
    """Render a DeployState as plain text lines (the widget's text/plain too)."""
    lines = [f"vast_magic deploy {state.name}: {state.phase}".rstrip()]
    if state.files is not None:
        lines.append(f"packaged {state.files} files, {_human_bytes(state.bytes or 0)}")
    lines += [f"warning: {message}" for message in state.warnings]
    if state.tier is not None:
        action = f" (backend: {state.backend_action})" if state.backend_action else ""
        lines.append(f"tier {state.tier}{action}: " + ("; ".join(state.reasons) or "no changes"))
    lines += [format_worker(row) for row in state.workers]
    if state.retry:
        lines.append(state.retry)
    if state.done and state.dry_run:
        lines.append(f"dry run: nothing changed or started ({state.elapsed:.2f}s)")
    elif state.done:
        lines.append(f"ready at {state.endpoint} in {state.elapsed:.2f}s" if state.endpoint else f"ready in {state.elapsed:.2f}s")
    if state.error:
        lines.append(f"FAILED: {state.error}")
    return "\n".join(lines)


def format_event(event: Event) -> str | None:
    """One text line per event, for text mode and the CLI (None: nothing to print)."""
    if isinstance(event, Packaging):
        return f"packaged {event.files} files, {_human_bytes(event.bytes)}"
    if isinstance(event, TierDecided):
        action = f" (backend: {event.backend_action})" if event.backend_action else ""
        return f"tier {event.tier}{action}: " + ("; ".join(event.reasons) or "no changes")
    if isinstance(event, WorkerState):
        return format_worker(WorkerRow(event.worker, event.state, event.perf, event.error))
    if isinstance(event, BenchmarkScored):
        return f"worker {event.worker}: benchmark {event.perf:,.1f}/s"
    if isinstance(event, Ready) and event.dry_run:
        return f"dry run: nothing changed or started ({event.elapsed:.2f}s)"
    if isinstance(event, Ready):
        return f"ready at {event.endpoint} in {event.elapsed:.2f}s" if event.endpoint else f"ready in {event.elapsed:.2f}s"
    if isinstance(event, Retry):
        return f"{event.what}: retry {event.attempt}/{event.max_attempts} in {event.delay:.1f}s ({event.reason})"
    if isinstance(event, Failed):
        return f"FAILED: {event.message}"
    if isinstance(event, LogLine):
        return f"[{event.worker}] {event.text}"
    if isinstance(event, Warned):
        return f"warning: {event.message}"
    return None
