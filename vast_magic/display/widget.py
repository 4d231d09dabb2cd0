"""ipywidgets views of the same models the text views print.

``DeployWidget`` draws a deploy as a stepper (``steps.deploy_steps``): each
step with its state, time and one-line result, the tier decision as a table,
one row per worker with a state badge and a bar of its benchmark score;
worker output waits in a collapsed "worker output" section. ``StatusWidget``
draws ``%vast_status`` with score and load bars and the recent call rate and
latency. The pictures are ``html``'s; every text in them is a line of
``events.status_lines`` / ``events.deployment_lines`` or built from the same
state. The ``text/plain`` part of every widget's mimebundle is the text
rendering of its final state, which is what nbval and plain frontends record.
"""
from __future__ import annotations

import html
import threading
import time
from typing import Callable

import ipywidgets as w
from IPython.display import display

from ..events import DeployState, Event, format_deployment_status, format_status
from ..reports import DeploymentStatus
from .html import PHASE_COLORS, deploy_card, logs_block, status_card, status_color
from .progress import MapState, describe_error, format_map
from .steps import Step, StepClock, deploy_steps

__all__ = ["TICK", "MAX_TICKS", "STOPPED_STATES", "DeployWidget", "MapWidget", "StatusWidget"]

TICK = 0.5                 # seconds between redraws of a running step's time
MAX_TICKS = 4 * 3600 * 2   # a ticker never outlives four hours
STOPPED_STATES = ("stopped",)


def _divs(lines: list[str], color: str | None = None, bold: bool = False) -> str:
    style = (f"color:{color};" if color else "") + ("font-weight:bold;" if bold else "")
    return "".join(f'<div style="{style}white-space:pre-wrap">{html.escape(line)}</div>' for line in lines)


class _Displayed:
    """Shown once with a display id, then updated so the stored text/plain is the final one."""

    box: w.Box
    _handle = None

    def show(self) -> "_Displayed":
        self._handle = display(self, display_id=True)
        return self

    def _refresh_display(self) -> None:
        if self._handle is not None:
            self._handle.update(self)

    def plain_text(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = self.plain_text()
        return bundle


class DeployWidget(_Displayed):
    """Live deploy progress as a stepper; a running step's time is redrawn every ``TICK`` s by a thread
    that stops when the deploy finishes (widget updates are thread-safe in ipykernel)."""

    def __init__(self, name: str, workload_per_call: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.state = DeployState(name=name, workload_per_call=workload_per_call)
        self.clock, self._now, self._started = StepClock(), clock, clock()
        self.card, self.output = w.HTML(), w.HTML()
        self.logs = w.Accordion(children=[self.output], titles=("worker output",), selected_index=None)
        self.box = w.VBox([self.card, self.logs], layout=w.Layout(margin="2px 0"))
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self.ticker: threading.Thread | None = None
        self._render(self.state)

    @property
    def steps(self) -> tuple[Step, ...]:
        return deploy_steps(self.state)

    @property
    def color(self) -> str:
        return PHASE_COLORS[self.state.phase]

    def show(self) -> "DeployWidget":
        super().show()
        self._start_ticker()          # packaging runs before the first event: its time ticks too
        return self

    def render_event(self, event: Event, state: DeployState) -> None:
        self._render(state)
        self._start_ticker()

    def _start_ticker(self) -> None:
        if self.ticker is None and not self._finished.is_set():
            self.ticker = threading.Thread(target=self._tick, name="vast-magic-deploy-clock", daemon=True)
            self.ticker.start()

    def finish(self, state: DeployState) -> None:
        self._finished.set()
        self._render(state)
        self._refresh_display()

    def plain_text(self) -> str:
        return format_status(self.state)

    def _tick(self) -> None:
        for _ in range(MAX_TICKS):
            if self._finished.wait(TICK) or self.box.comm is None:    # finished, or closed in the frontend
                return
            self._render(None)

    def _render(self, state: DeployState | None) -> None:
        """Draw ``state`` (None: the current one again, with fresh times)."""
        with self._lock:
            if state is not None:
                self.state = state
            state, now = self.state, self._now()
            steps = deploy_steps(state)
            self.clock.observe(steps, now)
            total = state.elapsed if state.done and state.elapsed is not None else now - self._started
            self.card.value = deploy_card(state, steps, {s.key: self.clock.elapsed(s.key, now) for s in steps}, total)
            if state.logs:
                self.output.value = logs_block(state.logs)
                self.logs.set_title(0, f"worker output (last {len(state.logs)} lines)")
            self.logs.layout.display = None if state.logs else "none"


class MapWidget(_Displayed):
    """An IntProgress bar with the ``format_map`` line beside it; red when calls failed."""

    def __init__(self, state: MapState):
        self.state = state
        self.bar = w.IntProgress(value=0, min=0, max=max(state.total, 1))
        self.label = w.HTML()
        self.box = w.HBox([self.bar, self.label])
        self.render(state)
        self.show()

    def render(self, state: MapState) -> None:
        self.state = state
        self.bar.value = min(state.done, self.bar.max)
        self.bar.bar_style = "danger" if state.failed else ""
        self.label.value = _divs([format_map(state)])

    def finish(self, state: MapState) -> None:
        self.render(state)
        if not state.failed and state.done >= state.total:
            self.bar.bar_style = "success"
        self._refresh_display()

    def plain_text(self) -> str:
        return format_map(self.state)


class StatusWidget(_Displayed):
    """``%vast_status`` in a widget, refreshed by a bounded background thread.

    Widget trait updates are thread-safe in ipykernel (they go out on the
    IOPub thread), so the kernel stays free while the view keeps updating.
    """

    def __init__(self, status: DeploymentStatus):
        self.status = status
        self.note = ""
        self.card = w.HTML()
        self.box = w.VBox([self.card], layout=w.Layout(margin="2px 0"))
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.render(status)

    @property
    def color(self) -> str:
        return status_color(self.status)

    def render(self, status: DeploymentStatus, note: str = "") -> None:
        self.status, self.note = status, note
        self.card.value = status_card(status, note)

    def plain_text(self) -> str:
        return format_deployment_status(self.status)

    @property
    def closed(self) -> bool:
        return self._stop.is_set() or self.box.comm is None

    def stop(self) -> None:
        self._stop.set()

    def start_refresh(self, refresh: Callable[[], DeploymentStatus], interval: float = 2.0,
                      max_updates: int = 300) -> threading.Thread:
        """Poll ``refresh`` every ``interval`` s until closed, stopped, failing, or ``max_updates`` polls."""
        self.thread = threading.Thread(target=self._poll, args=(refresh, interval, max_updates),
                                       name="vast-magic-status", daemon=True)
        self.thread.start()
        return self.thread

    def _poll(self, refresh: Callable[[], DeploymentStatus], interval: float, max_updates: int) -> None:
        for _ in range(max_updates):
            if self._stop.wait(interval) or self.closed:
                return
            try:
                status = refresh()
            except Exception as exc:  # shown in the widget: a thread has nowhere else to report
                self.render(self.status, f"refresh stopped: {describe_error(exc)}")
                return
            if self.closed:
                return
            stopped = status.state in STOPPED_STATES
            self.render(status, "refresh stopped: deployment stopped" if stopped else
                        f"updated {time.strftime('%H:%M:%S')}")
            if stopped:
                return
        if not self.closed:
            self.render(self.status, f"refresh stopped after {max_updates} updates; run %vast_status again")

