"""The progress display: one model, a widget view and a text view showing the same facts."""
from __future__ import annotations

import html
import sys
import threading

import pytest

from vast_magic import settings
from vast_magic.display import (format_deployment_status, open_map_progress, open_progress, resolve_display_mode,
                                show_status)
from vast_magic.display.html import PHASE_COLORS
from vast_magic.display.progress import describe_error
from vast_magic.display.widget import StatusWidget
from vast_magic.errors import ConfigError, DeployError
from vast_magic.events import (
    BenchmarkScored, DeployState, Failed, Packaging, Ready, Retry, TierDecided, Warned, WorkerState, apply_event,
    deployment_lines, format_event, format_status, status_lines,
)
from vast_magic.reports import DeploymentStatus, LogLine, WorkerInfo

RED = PHASE_COLORS["failed"]

DEPLOY = [
    Packaging(12, 34_000),
    Warned("remote code imports 'yaml', which the image does not pip-install"),
    TierDecided(2, ("code: square changed", "pip: +numpy")),
    WorkerState("w1", "starting", pid=101),
    Retry("engine", 1, 3, 0.5, "connection refused"),
    WorkerState("w1", "installing"),
    LogLine(1.0, "w1", "stdout", "loading model"),
    WorkerState("w2", "starting"),
    BenchmarkScored("w1", 120.5, 118.0),
    WorkerState("w1", "ready", perf=120.5),
    WorkerState("w2", "failed", error="Traceback...\nValueError: bad input"),
    LogLine(2.0, "w2", "stderr", "ValueError: bad input"),
    Ready("http://127.0.0.1:4242", 3.25),
]
FAILING = [Packaging(3, 900), TierDecided(4, ("new deployment",)), Failed("worker w1 failed", "Traceback\nboom")]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above: the default applies
    settings.set_config_source(None)
    yield
    settings.set_config_source(None)


def fold(events, name="demo") -> DeployState:
    state = DeployState(name=name)
    for event in events:
        state = apply_event(state, event)
    return state


def run_text(events, capsys, error=None) -> list[str]:
    capsys.readouterr()
    progress = open_progress("demo", "text")
    for event in events:
        progress.emit(event)
    progress.close(error)
    return capsys.readouterr().out.splitlines()


def assert_widget_shows_its_state(widget) -> None:
    """Every line of the widget's state is in its picture (escaped, as HTML shows text), worker output is not."""
    for line in status_lines(widget.state):
        assert html.escape(line.text) in widget.card.value, line
    assert f'data-phase="{html.escape(widget.state.phase)}"' in widget.card.value
    for log in widget.state.logs:
        assert html.escape(log) not in widget.card.value, log


def run_widget(events, error=None):
    progress = open_progress("demo", "widget")
    for event in events:
        progress.emit(event)
    progress.close(error)
    return progress


@pytest.mark.parametrize("events", [DEPLOY, FAILING, DEPLOY[:3], [*DEPLOY[:3], Ready(None, 0.05, dry_run=True)]],
                         ids=["ready", "failed", "unfinished", "dry-run"])
def test_widget_and_text_show_the_same_information(events, capsys):
    lines = run_text(events, capsys)
    widget = run_widget(events).view
    final = fold(events)
    assert lines == [format_event(e) for e in events]
    assert widget.state == final
    assert_widget_shows_its_state(widget)
    # every fact of the final status (header aside) was printed by text mode, worker rows included
    for line in format_status(final).splitlines()[1:]:
        if not line.startswith("worker ") or final.done:
            assert line in lines
    assert list(final.logs) == [line for line in lines if line.startswith("[")]
    # worker output waits in the collapsed "worker output" section, not in the picture
    assert all(html.escape(line) in widget.output.value for line in final.logs)
    assert widget.logs.selected_index is None
    assert widget.logs.layout.display == (None if final.logs else "none")


def test_widget_plain_text_is_the_final_format_status():
    widget = run_widget(DEPLOY).view
    bundle = widget._repr_mimebundle_()
    assert bundle["text/plain"] == format_status(fold(DEPLOY))
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_text_mode_prints_exactly_one_line_per_event(capsys):
    events = DEPLOY + [WorkerState("w3", "starting")] * 3
    assert len(run_text(events, capsys)) == len(events)


@pytest.mark.parametrize("events, error, last_line, count", [
    (FAILING, None, "FAILED: worker w1 failed", 3),
    (FAILING, DeployError("worker w1 failed"), "FAILED: worker w1 failed", 3),  # already reported: not twice
    (FAILING[:2], DeployError("no worker became ready in 5s"), "FAILED: no worker became ready in 5s", 3),
    (FAILING[:1], KeyboardInterrupt(), "FAILED: interrupted (KeyboardInterrupt)", 2),
    (FAILING[:1], RuntimeError("boom"), "FAILED: RuntimeError: boom", 2),
])
def test_failure_is_one_failed_line(events, error, last_line, count, capsys):
    lines = run_text(events, capsys, error)
    assert lines[-1] == last_line
    assert len(lines) == count


def test_failure_turns_the_widget_red_and_it_stays_red():
    progress = run_widget(FAILING[:2])
    view = progress.view
    assert view.color == PHASE_COLORS["deploying"]
    progress = open_progress("demo", "widget")
    for event in FAILING:
        progress.emit(event)
    progress.emit(Ready(None, 1.0))  # a late event cannot turn a failure green
    assert progress.view.color == RED and f"border-left:3px solid {RED}" in progress.view.card.value
    progress.close(None)
    progress.emit(WorkerState("w1", "ready"))  # ignored after close
    view = progress.view
    assert view.color == RED and f"border-left:3px solid {RED}" in view.card.value
    assert view.state == fold([*FAILING, Ready(None, 1.0)]) and view.state.phase == "failed"
    assert_widget_shows_its_state(view)
    assert [(step.key, step.state) for step in view.steps] == [
        ("package", "done"), ("tier", "done"), ("apply", "failed"), ("workers", "pending"), ("ready", "pending")]
    assert [line.text for line in view.steps[2].lines] == ["FAILED: worker w1 failed"]   # under the failed step
    assert "boom" in view.card.value and "worker w1: ready" not in view.card.value


def test_close_error_turns_a_running_widget_red():
    view = run_widget(DEPLOY[:3], error=DeployError("no worker became ready")).view
    assert view.color == RED
    assert view.state.error == "no worker became ready"
    assert [(line.part, line.text) for line in status_lines(view.state)][::len(status_lines(view.state)) - 1] == [
        ("header", "vast_magic deploy demo: failed"), ("error", "FAILED: no worker became ready")]
    assert_widget_shows_its_state(view)


def test_widget_html_escapes_user_text():
    view = run_widget([TierDecided(2, ("code: <script>alert(1)</script> changed",), tiers=(2,)),
                       WorkerState("<b>w1</b>", "failed", error="<img src=x onerror=alert(1)>")]).view
    assert "<script>" not in view.card.value and "<b>" not in view.card.value and "<img" not in view.card.value
    assert "tier 2: code: &lt;script&gt;alert(1)&lt;/script&gt; changed" in view.card.value


@pytest.mark.parametrize("error, text", [
    (ConfigError("bad image"), "bad image"),
    (ValueError("x"), "ValueError: x"),
    (TimeoutError(), "TimeoutError"),
    (KeyboardInterrupt(), "interrupted (KeyboardInterrupt)"),
])
def test_describe_error(error, text):
    assert describe_error(error) == text


@pytest.mark.parametrize("explicit, env, config, expected", [
    (None, None, None, "text"),          # auto outside a Jupyter kernel
    ("widget", None, None, "widget"),
    ("text", "widget", None, "text"),   # explicit beats env
    (None, "widget", None, "widget"),
    (None, "widget", "text", "text"),   # %config beats env
    (None, "auto", None, "text"),
])
def test_resolve_display_mode(explicit, env, config, expected, monkeypatch):
    if env:
        monkeypatch.setenv("VAST_MAGIC_DISPLAY", env)
    settings.set_config_source(lambda name: config if name == "display" else None)
    assert resolve_display_mode(explicit) == expected


def test_resolve_display_mode_rejects_unknown_modes(monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "fancy")
    with pytest.raises(ConfigError, match="VAST_MAGIC_DISPLAY.*expected one of auto, widget, text"):
        resolve_display_mode()


@pytest.mark.parametrize("failed, stream", [(1, "err"), (0, "out")])
def test_map_progress_text_prints_one_final_line(capsys, failed, stream):
    """One line at the end; on stderr when calls failed (red in Jupyter, as the widget's bar)."""
    bar = open_map_progress(5, "text")
    for done in range(6):
        bar.update(done, failed if done > 3 else 0)
    assert capsys.readouterr() == ("", "")
    bar.close()
    bar.close()
    captured = capsys.readouterr()
    lines = getattr(captured, stream).splitlines()
    assert len(lines) == 1 and lines[0].startswith("map: 5/5 done" + (", 1 failed in " if failed else " in "))
    assert getattr(captured, "out" if stream == "err" else "err") == ""


@pytest.mark.parametrize("done, failed, style", [(4, 0, "success"), (4, 1, "danger"), (2, 0, "")])
def test_map_progress_widget(done, failed, style):
    bar = open_map_progress(4, "widget")
    bar.update(done, failed)
    assert bar.view.bar.value == done and bar.view.bar.max == 4
    bar.close()
    assert bar.view.bar.bar_style == style
    assert bar.view._repr_mimebundle_()["text/plain"] == bar.view.plain_text()
    assert bar.view.plain_text().startswith(f"map: {done}/4 done")


def status(state="ready", workers=(("w1", "ready", 10.0), ("w2", "starting", None))):
    return DeploymentStatus("demo", "default", "http://127.0.0.1:1" if state == "ready" else None, state,
                            tuple(WorkerInfo(i, s, p) for i, s, p in workers), ("apt: ffmpeg",))


def test_show_status_text_is_one_snapshot(capsys):
    snapshot = status()
    assert show_status(snapshot, mode="text", refresh=lambda: pytest.fail("text mode never refreshes")) is None
    out = capsys.readouterr().out
    assert out == format_deployment_status(snapshot) + "\n"
    assert out.splitlines() == ["vast_magic demo (tag default): ready", "endpoint http://127.0.0.1:1",
                                "worker w1: ready perf=10.0/s", "worker w2: starting", "not applied locally: apt: ffmpeg"]


def test_status_widget_refreshes_until_the_deployment_stops():
    snapshots = iter([status(workers=(("w1", "ready", 10.0), ("w2", "ready", 9.0))), status("stopped", ())])
    calls = []

    def refresh():
        calls.append(1)
        return next(snapshots)

    view = show_status(status(), mode="widget", refresh=refresh, interval=0.01, max_updates=50)
    view.thread.join(5)
    assert not view.thread.is_alive() and len(calls) == 2
    assert view.status == status("stopped", ())
    assert all(html.escape(line.text) in view.card.value for line in deployment_lines(view.status))
    assert "deployment stopped" in view.note and "deployment stopped" in view.card.value


@pytest.mark.parametrize("how, note", [("bounded", "after 3 updates"), ("error", "refresh stopped: RuntimeError: down"),
                                       ("stop", None), ("closed", None)])
def test_status_widget_refresh_always_ends(how, note):
    started = threading.Event()

    def refresh():
        started.set()
        if how == "error":
            raise RuntimeError("down")
        return status()

    view = StatusWidget(status())
    view.start_refresh(refresh, interval=0.01, max_updates=3 if how == "bounded" else 10_000)
    assert started.wait(5)
    if how == "stop":
        view.stop()
    if how == "closed":
        view.box.close()
    view.thread.join(5)
    assert not view.thread.is_alive()
    if note:
        assert note in view.note and html.escape(note) in view.card.value


def test_without_ipywidgets_widget_mode_degrades_to_text(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    assert resolve_display_mode("widget") == "text"
    progress = open_progress("demo", "widget")
    progress.emit(DEPLOY[0])
    assert capsys.readouterr().out == "packaged 12 files, 33.2 KiB\n"
