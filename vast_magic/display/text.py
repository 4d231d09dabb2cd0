"""Text views: plain lines printed from the calling thread.

Text mode is what CI, nbval, terminals and scripts see. Every line goes
through ``print`` in the thread that runs the cell, never ``update_display``
(nbval ignores display updates), so the output lands in the calling cell.
"""
from __future__ import annotations

import sys

from ..events import DeployState, Event, format_deployment_status, format_event
from ..reports import DeploymentStatus
from .progress import MapState, format_map

__all__ = ["TextDeployView", "TextMapView", "print_status"]


class TextDeployView:
    """Exactly one line per event that has something to say (``events.format_event``)."""

    def render_event(self, event: Event, state: DeployState) -> None:
        line = format_event(event)
        if line is not None:
            print(line, file=sys.stdout, flush=True)

    def finish(self, state: DeployState) -> None:
        # Everything, failures included, was printed as its event arrived.
        return None


class TextMapView:
    """Silent while running (a scrolling bar would flood logs), one line at the end: on stderr when calls
    failed (Jupyter shows it red, like the widget's bar)."""

    def render(self, state: MapState) -> None:
        return None

    def finish(self, state: MapState) -> None:
        print(format_map(state), file=sys.stderr if state.failed else sys.stdout, flush=True)


def print_status(status: DeploymentStatus) -> None:
    """One snapshot of ``%vast_status``."""
    print(format_deployment_status(status), file=sys.stdout, flush=True)
