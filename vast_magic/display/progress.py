"""The progress models the views render: one model, two renderers (like tqdm).

``Progress`` folds deploy events into a ``DeployState`` with the pure
``events.apply_event`` and hands every step to a view (text or widget); the
views only decide how the lines of ``events.status_lines`` look.
``MapProgress`` does the same for ``f.map``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..errors import VastMagicError
from ..events import DeployState, Event, Failed, apply_event

__all__ = ["DeployView", "describe_error", "Progress", "MapState", "format_map", "MapView", "MapProgress"]


class DeployView(Protocol):
    def render_event(self, event: Event, state: DeployState) -> None: ...
    def finish(self, state: DeployState) -> None: ...


def describe_error(error: BaseException) -> str:
    """The one-line reason a deploy stopped: our errors speak for themselves, others get their type."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    text = str(error).strip()
    if isinstance(error, VastMagicError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Progress:
    """The progress of one ``ensure_ready``: call ``emit`` and ``close`` from the calling thread.

    Events come from the background loop through a queue, so views never write
    to the notebook from another thread (nbval and Jupyter attribute output to
    the cell whose thread writes it).
    """

    def __init__(self, name: str, view: DeployView, workload_per_call: float | None = None):
        self.state = DeployState(name=name, workload_per_call=workload_per_call)
        self.view = view
        self.closed = False

    def emit(self, event: Event) -> None:
        if self.closed:
            return
        self.state = apply_event(self.state, event)
        self.view.render_event(event, self.state)

    def close(self, error: BaseException | None = None) -> None:
        """Final render; an error not reported by a ``Failed`` event becomes one (red, sticky)."""
        if self.closed:
            return
        if error is not None and self.state.error is None:
            self.emit(Failed(describe_error(error)))
        self.closed = True
        self.view.finish(self.state)


@dataclass(frozen=True)
class MapState:
    """What a ``map`` progress bar shows."""

    total: int
    done: int = 0
    failed: int = 0
    elapsed: float = 0.0
    label: str = "map"


def format_map(state: MapState) -> str:
    failed = f", {state.failed} failed" if state.failed else ""
    return f"{state.label}: {state.done}/{state.total} done{failed} in {state.elapsed:.2f}s"


class MapView(Protocol):
    def render(self, state: MapState) -> None: ...
    def finish(self, state: MapState) -> None: ...


class MapProgress:
    """A tqdm-like bar for ``f.map``: counts calls and hands each step to its view (widget or text)."""

    def __init__(self, total: int, view_for: Callable[[MapState], MapView], label: str = "map"):
        self.state = MapState(total=int(total), label=label)
        self._started = time.perf_counter()
        self.closed = False
        self.view = view_for(self.state)

    def update(self, n_done: int, n_failed: int = 0) -> None:
        if self.closed or (n_done, n_failed) == (self.state.done, self.state.failed):
            return
        self.state = MapState(self.state.total, n_done, n_failed, time.perf_counter() - self._started, self.state.label)
        self.view.render(self.state)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        s = self.state
        self.state = MapState(s.total, s.done, s.failed, time.perf_counter() - self._started, s.label)
        self.view.finish(self.state)
