"""Progress and status display: one model, a widget view and a text view.

``open_progress`` is what ``ensure_ready`` renders its events with,
``open_map_progress`` what ``f.map`` counts with, ``show_status`` what
``%vast_status`` shows. Each chooses its view here, in one place; the
models in ``progress`` never import a view. The mode comes from the ``display`` setting:
``auto`` means a widget inside a Jupyter kernel when ipywidgets imports, text
everywhere else (terminals, scripts, CI with ``VAST_MAGIC_DISPLAY=text``).

Importing this package also gives ``DeployReport`` and ``DeploymentStatus``
their HTML in Jupyter (``reports.register_html``), except in text mode, where
they keep showing their text (so nbval records what it always did).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from .. import settings
from ..errors import ConfigError
from ..events import format_deployment_status
from ..reports import DeploymentStatus, DeployReport, register_html
from .html import report_card, status_card
from .progress import MapProgress, Progress, describe_error, format_map

__all__ = ["open_progress", "open_map_progress", "Progress", "MapProgress", "resolve_display_mode", "show_status",
           "format_deployment_status", "format_map", "describe_error"]


def _in_jupyter_kernel() -> bool:
    zmqshell = sys.modules.get("ipykernel.zmqshell")  # never import ipykernel just to ask
    if zmqshell is None:
        return False
    from IPython import get_ipython
    return isinstance(get_ipython(), zmqshell.ZMQInteractiveShell)


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_display_mode(explicit: str | None = None) -> str:
    """``"widget"`` or ``"text"``: the ``display`` setting, with ``auto`` decided here.

    An explicit ``widget`` without ipywidgets degrades to text rather than
    failing a deploy over how it is shown.
    """
    mode = settings.resolve("display", explicit)
    if mode == "auto":
        return "widget" if _in_jupyter_kernel() and _widgets_available() else "text"
    if mode == "widget" and not _widgets_available():
        return "text"
    return mode


def open_progress(name: str, mode: str | None = None, workload_per_call: float | None = None) -> Progress:
    """Start showing a deploy's progress in the calling cell (``workload_per_call``: see ``figures``)."""
    if resolve_display_mode(mode) == "widget":
        from .widget import DeployWidget
        return Progress(name, DeployWidget(name, workload_per_call).show(), workload_per_call)
    from .text import TextDeployView
    return Progress(name, TextDeployView(), workload_per_call)


def open_map_progress(total: int, mode: str | None = None, label: str = "map") -> MapProgress:
    """Start counting a ``map`` of ``total`` calls in the calling cell."""
    if resolve_display_mode(mode) == "widget":
        from .widget import MapWidget
        return MapProgress(total, MapWidget, label)
    from .text import TextMapView
    return MapProgress(total, lambda _state: TextMapView(), label)


def show_status(status: DeploymentStatus, mode: str | None = None,
                refresh: Callable[[], DeploymentStatus] | None = None, interval: float = 2.0,
                max_updates: int = 300):
    """Show a status snapshot; in widget mode keep it fresh with ``refresh`` (background, bounded).

    Returns the ``StatusWidget`` (``.stop()`` ends its refreshing) or None in text mode.
    """
    if resolve_display_mode(mode) == "widget":
        from .widget import StatusWidget
        view = StatusWidget(status)
        view.show()
        if refresh is not None and status.state != "stopped":
            view.start_refresh(refresh, interval, max_updates)
        return view
    from .text import print_status
    print_status(status)
    return None


def _html_unless_text_mode(render: Callable[[Any], str]) -> Callable[[Any], "str | None"]:
    def html_or_none(value: Any) -> str | None:
        try:
            if settings.resolve("display") == "text":
                return None
        except ConfigError:          # a bad setting is reported where a deploy resolves it, not by a repr
            return None
        return render(value)
    return html_or_none


register_html(DeployReport, _html_unless_text_mode(report_card))
register_html(DeploymentStatus, _html_unless_text_mode(status_card))
