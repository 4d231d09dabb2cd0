"""ipywidgets views of the same models the text views print.

Each widget shows exactly the lines of ``events.status_lines`` /
``events.deployment_lines`` (header, packaging, tier, one row per worker,
retry, endpoint and time, failure), placed by each line's ``part``, so a
browser and a log show the same facts; colors only add the phase. The
``text/plain`` part of every widget's mimebundle is the text rendering of its
final state, which is what nbval and plain frontends record.
"""
from __future__ import annotations

import html
import threading
import time
from typing import Callable

import ipywidgets as w
from IPython.display import display

from ..events import DeployState, Event, Line, deployment_lines, format_deployment_status, format_status, status_lines
from ..reports import DeploymentStatus
from .progress import MapState, describe_error, format_map

__all__ = [
    "PHASE_COLORS", "WORKER_COLORS", "RETRY_COLOR", "FOOTER", "LOG_LINES", "STOPPED_STATES", "DeployWidget",
    "MapWidget", "StatusWidget"
]

PHASE_COLORS = {"packaging": "#4b5563", "deploying": "#1d4ed8", "ready": "#15803d", "dry run": "#4b5563",
                "failed": "#b91c1c"}
WORKER_COLORS = {"ready": "#15803d", "failed": "#b91c1c", "stopped": "#6b7280"}
RETRY_COLOR = "#b45309"
#: the footer's parts, in order, with their color and weight
FOOTER = (("retry", RETRY_COLOR, False), ("done", PHASE_COLORS["ready"], False),
          ("error", PHASE_COLORS["failed"], True))
LOG_LINES = 10
STOPPED_STATES = ("stopped",)


def _divs(lines: list[str], color: str | None = None, bold: bool = False) -> str:
    style = (f"color:{color};" if color else "") + ("font-weight:bold;" if bold else "")
    return "".join(f'<div style="{style}white-space:pre-wrap">{html.escape(line)}</div>' for line in lines)


def _pre(lines: list[str], color: str = "#374151") -> str:
    if not lines:
        return ""
    body = html.escape("\n".join(lines))
    return f'<pre style="color:{color};max-height:12em;overflow:auto;margin:2px 0">{body}</pre>'


def _texts(lines: tuple[Line, ...], part: str) -> list[str]:
    return [line.text for line in lines if line.part == part]


def _line_divs(lines: tuple[Line, ...], header_color: str) -> str:
    """Lines in their order: the header bold in the phase color, worker rows in their state's color."""
    return "".join(_divs([line.text], header_color, bold=True) if line.part == "header"
                   else _divs([line.text], WORKER_COLORS.get(line.state or "")) for line in lines)


def _set_html(widget: w.HTML, value: str) -> None:
    widget.value = value  # traitlets sends nothing when the value is unchanged
    widget.layout.display = None if value else "none"


def _box(children: list) -> w.VBox:
    return w.VBox(children, layout=w.Layout(padding="4px 8px", margin="2px 0"))


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
    """Live deploy progress: the lines of ``format_status`` in sections, colored by phase."""

    def __init__(self, name: str):
        self.state = DeployState(name=name)
        self.header, self.body, self.workers, self.footer, self.traceback, self.logs = (w.HTML() for _ in range(6))
        self.box = _box([self.header, self.body, self.workers, self.footer, self.traceback, self.logs])
        self._render(self.state)

    @property
    def color(self) -> str:
        return PHASE_COLORS[self.state.phase]

    def render_event(self, event: Event, state: DeployState) -> None:
        self._render(state)

    def finish(self, state: DeployState) -> None:
        self._render(state)
        self._refresh_display()

    def plain_text(self) -> str:
        return format_status(self.state)

    def _render(self, state: DeployState) -> None:
        self.state = state
        lines = status_lines(state)
        _set_html(self.header, _divs(_texts(lines, "header"), self.color, bold=True))
        _set_html(self.body, "".join(_divs([line.text], RETRY_COLOR if line.part == "warning" else None)
                                     for line in lines if line.part in ("body", "warning")))
        _set_html(self.workers, _line_divs(tuple(line for line in lines if line.part == "worker"), self.color))
        _set_html(self.footer, "".join(_divs(_texts(lines, part), color, bold) for part, color, bold in FOOTER))
        _set_html(self.traceback, _pre((state.error_traceback or "").rstrip().splitlines(), PHASE_COLORS["failed"]))
        _set_html(self.logs, _pre(list(state.logs[-LOG_LINES:])))
        self.box.layout.border = f"2px solid {self.color}"


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


def _status_color(status: DeploymentStatus) -> str:
    if any(worker.state == "failed" for worker in status.workers):
        return PHASE_COLORS["failed"]
    by_state = {"ready": PHASE_COLORS["ready"], "stopped": WORKER_COLORS["stopped"]}
    return by_state.get(status.state, PHASE_COLORS["deploying"])


class StatusWidget(_Displayed):
    """``%vast_status`` in a widget, refreshed by a bounded background thread.

    Widget trait updates are thread-safe in ipykernel (they go out on the
    IOPub thread), so the kernel stays free while the view keeps updating.
    """

    def __init__(self, status: DeploymentStatus):
        self.status = status
        self.lines, self.note = w.HTML(), w.HTML()
        self.box = _box([self.lines, self.note])
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.render(status)

    def render(self, status: DeploymentStatus, note: str = "") -> None:
        self.status = status
        color = _status_color(status)
        self.lines.value = _line_divs(deployment_lines(status), color)
        _set_html(self.note, _divs([note], "#6b7280") if note else "")
        self.box.layout.border = f"2px solid {color}"

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

