"""The pictures: the deploy stepper, worker rows, the tier table, the status card and the HTML reprs.

The matrices here come from the code: every event type is ``typing.get_args(events.Event)``, each built
from its own fields' types; every phase is what folding those events produces (checked against
``events.PHASES``); every step state is what ``deploy_steps`` produces (checked against ``STEP_STATES``).
The widget is asserted through its state (``view.steps``, ``view.state``) and the ``data-`` attributes of
its picture, never by parsing its layout.
"""
from __future__ import annotations

import dataclasses
import html
import itertools
import re
import typing
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from vast_magic import settings
from vast_magic.display import open_progress, show_status
from vast_magic.display.figures import format_number, format_rate, format_seconds, format_share
from vast_magic.display.html import (PHASE_COLORS, STEP_COLORS, STEP_ICONS, TIER_MEANINGS, WORKER_COLORS,
                                     deploy_card, report_card, status_card)
from vast_magic.display.steps import LOCAL_APPLIED, STEP_STATES, STEPS, VAST_APPLIED, StepClock, deploy_steps
from vast_magic.display.widget import DeployWidget
from vast_magic.events import (PHASES, BenchmarkScored, DeployState, Event, Failed, Packaging, Ready, Retry,
                               TierDecided, Warned, WorkerRow, WorkerState, apply_event, format_event,
                               format_status, status_lines)
from vast_magic.reports import (WORKER_STATES, CallStats, DeploymentStatus, DeployReport, Fingerprint, LogLine,
                                WorkerInfo)

EVENT_TYPES = typing.get_args(Event)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    settings.set_config_source(None)
    yield
    settings.set_config_source(None)


def fold(events, name="demo", **initial) -> DeployState:
    state = DeployState(name=name, **initial)
    for event in events:
        state = apply_event(state, event)
    return state


# -- events built from their own field types -------------------------------------------------------------
POOLS = {bool: (False, True), int: (0, 3), float: (0.0, 1.5), str: ("", "w1")}


def _pool(annotation) -> tuple:
    """Two values of a field type: the least (empty, zero, None) and a typical one."""
    if annotation in POOLS:
        return POOLS[annotation]
    args = typing.get_args(annotation)
    if type(None) in args:                                   # X | None
        (inner,) = [a for a in args if a is not type(None)]
        return (None, _pool(inner)[1])
    if typing.get_origin(annotation) is tuple:               # tuple[X, ...]
        return ((), (_pool(args[0])[1],))
    raise AssertionError(f"no sample values for {annotation!r}: add them to POOLS")


def event_samples(cls) -> list:
    """The least and a typical instance, one per worker state for a ``state`` field, each bool flipped."""
    hints = typing.get_type_hints(cls)
    pools = {f.name: _pool(hints[f.name]) for f in fields(cls)}
    samples = [cls(**{k: p[0] for k, p in pools.items()}), cls(**{k: p[1] for k, p in pools.items()})]
    typical = {k: p[1] for k, p in pools.items()}
    if "state" in pools:
        samples += [cls(**{**typical, "state": state}) for state in WORKER_STATES]
    samples += [cls(**{**typical, k: not typical[k]}) for k, p in pools.items() if p == POOLS[bool]]
    return samples


SAMPLES = [sample for cls in EVENT_TYPES for sample in event_samples(cls)]


def render_through_both_views(events, capsys) -> DeployWidget:
    capsys.readouterr()
    progress = open_progress("demo", "text")
    for event in events:
        progress.emit(event)
    printed = capsys.readouterr().out
    assert printed == "".join(f"{line}\n" for line in map(format_event, events) if line is not None)
    progress = open_progress("demo", "widget")
    for event in events:
        progress.emit(event)
    view = progress.view
    assert view.state == progress.state == fold(events)
    assert f'data-phase="{html.escape(view.state.phase)}"' in view.card.value
    assert view._repr_mimebundle_()["text/plain"] == format_status(view.state)
    progress.close(None)
    view.ticker is None or view.ticker.join(5)
    return view


def test_every_phase_and_every_event_type_renders_in_both_views(capsys):
    """Issue 14 item 1 (a KeyError for the "dry run" phase): nothing the state machine reaches can break a view."""
    assert {type(sample) for sample in SAMPLES} == set(EVENT_TYPES)
    phases, step_states = set(), set()
    for length in (0, 1, 2):
        for events in itertools.product(SAMPLES, repeat=length):
            view = render_through_both_views(list(events), capsys)
            phases.add(view.state.phase)
            step_states |= {step.state for step in view.steps}
    assert phases == set(PHASES) == set(PHASE_COLORS)
    assert step_states == set(STEP_STATES) == set(STEP_COLORS) == set(STEP_ICONS)
    assert set(WORKER_STATES) <= set(WORKER_COLORS)


@given(st.lists(st.one_of([st.builds(cls) for cls in EVENT_TYPES]), max_size=8))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
def test_any_event_sequence_renders_in_both_views(capsys, events):
    view = render_through_both_views(events, capsys)
    assert [step.key for step in view.steps] == [key for key, _ in STEPS]
    assert sum(step.state in ("running", "failed") for step in view.steps) <= 1


@pytest.mark.parametrize("figure", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_figure_is_no_figure_in_a_worker_row(figure):
    """Found by the property test above on Python 3.13: a NaN score made the row unequal to itself."""
    state = fold([BenchmarkScored("w1", figure), WorkerState("w1", "ready", perf=figure, load=figure,
                                                             reliability=figure)])
    assert state.workers == (WorkerRow("w1", "ready"),)
    assert "nan" not in format_status(state) and "inf" not in format_status(state)
    status = DeploymentStatus("demo", "default", None, "ready",
                              (WorkerInfo("w1", "ready", figure, load=figure, reliability=figure),))
    assert status.workers == (WorkerInfo("w1", "ready"),)


@given(st.builds(DeploymentStatus))
@hsettings(max_examples=40, deadline=None)
def test_any_status_renders_as_text_and_as_a_picture(status):
    card = status_card(status, "note <b>")
    assert f'data-state="{html.escape(status.state)}"' in card and "note &lt;b&gt;" in card
    assert card.count('class="vm-worker"') == len(status.workers)


# -- the stepper ---------------------------------------------------------------------------------------------
DEPLOY = [Packaging(24, 41_000), Warned("remote code imports 'yaml'"),
          TierDecided(2, ("code: square changed", "autoscaling: max_workers 2 -> 3"), tiers=(2, 1)),
          WorkerState("w1", "starting", pid=7), WorkerState("w1", "installing"), WorkerState("w1", "contexts"),
          WorkerState("w1", "benchmarking"), BenchmarkScored("w1", 2_475_112.7),
          WorkerState("w1", "ready", perf=2_475_112.7),
          Ready("local://demo/default", 0.46)]


def states_after(events, **initial) -> list[tuple[str, str]]:
    return [(step.key, step.state) for step in deploy_steps(fold(events, **initial))]


@pytest.mark.parametrize("count, expected", [
    (0, ["running", "pending", "pending", "pending", "pending"]),
    (1, ["done", "running", "pending", "pending", "pending"]),
    (3, ["done", "done", "running", "pending", "pending"]),
    (4, ["done", "done", "done", "running", "pending"]),
    (9, ["done", "done", "done", "running", "pending"]),
    (10, ["done", "done", "done", "done", "done"]),
])
def test_each_step_runs_in_turn(count, expected):
    assert states_after(DEPLOY[:count]) == list(zip([key for key, _ in STEPS], expected))


@pytest.mark.parametrize("count, failed", [(0, "package"), (1, "tier"), (3, "apply"), (4, "workers"), (9, "workers")])
def test_a_failure_turns_the_running_step_red_and_keeps_its_message(count, failed):
    events = [*DEPLOY[:count], Failed("worker w1 failed while starting", "Traceback\nValueError: boom")]
    steps = deploy_steps(fold(events))
    keys = [key for key, _ in STEPS]
    position = keys.index(failed)
    assert [step.state for step in steps] == ["done"] * position + ["failed"] + ["pending"] * (len(keys) - position - 1)
    assert [line.text for line in steps[position].lines] == ["FAILED: worker w1 failed while starting"]
    card = deploy_card(fold(events), steps, {})
    step_html = card.split(f'data-step="{failed}"', 1)[1].split('class="vm-step"', 1)[0]
    assert STEP_COLORS["failed"] in step_html and "worker w1 failed while starting" in step_html
    assert "ValueError: boom" in step_html                 # the traceback stays visible under the failed step


def test_a_dry_run_says_nothing_was_applied():
    steps = deploy_steps(fold([*DEPLOY[:3], Ready(None, 0.05, dry_run=True)]))
    by_key = {step.key: step for step in steps}
    assert [step.state for step in steps] == ["done", "done", "skipped", "skipped", "done"]
    assert by_key["apply"].result == "nothing applied: dry run"
    assert by_key["workers"].result == "no worker started: dry run"
    assert by_key["ready"].result.startswith("dry run: nothing changed or started")


@pytest.mark.parametrize("events, applied", [
    ([Packaging(1, 1), TierDecided(4, ("new deployment",), tiers=(4,)), WorkerState("w1", "starting")],
     LOCAL_APPLIED[4]),
    ([Packaging(1, 1), TierDecided(1, ("autoscaling: max_workers 2 -> 3",), tiers=(1,)), Ready("local://d/t", 0.1)],
     LOCAL_APPLIED[1]),
    ([Packaging(1, 1), TierDecided(2, ("code: f changed",), tiers=(2,)),
      TierDecided(2, ("code: f changed",), "soft_update")], VAST_APPLIED["soft_update"]),
    ([Packaging(1, 1), TierDecided(4, ("new deployment",), tiers=(4,)), TierDecided(4, ("new deployment",), "mystery")],
     "Vast answered 'mystery'"),
])
def test_the_apply_step_says_what_was_applied(events, applied):
    apply = deploy_steps(fold(events))[2]
    assert (apply.state, apply.result) == ("done", applied)


def test_the_tier_table_gives_each_change_the_tier_it_implies():
    note = "Vast answered 'created' (tier 4), predicted tier 2"
    state = fold([TierDecided(2, ("code: f changed", "autoscaling: max_workers 2 -> 3"), tiers=(2, 1)),
                  TierDecided(2, ("code: f changed", "autoscaling: max_workers 2 -> 3", note), "created")])
    assert state.tiers == (2, 1, None)            # the backend's note implies no tier of its own
    card = deploy_card(state, deploy_steps(state), {})
    rows = re.findall(r'<tr class="vm-tier-row"(?: data-tier="(\d)")?[^>]*><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>',
                      card)
    assert rows == [("2", "code: f changed", f"2 · {TIER_MEANINGS[2]}"),
                    ("1", "autoscaling: max_workers 2 -&gt; 3", f"1 · {TIER_MEANINGS[1]}"),
                    ("", html.escape(note), "–")]


def test_worker_rows_draw_badges_score_bars_relative_to_the_best_and_load():
    events = [WorkerState("w1", "ready", perf=2_000_000.0, load=500_000.0, reliability=0.992),
              WorkerState("w2", "ready", perf=500_000.0), WorkerState("w3", "contexts"),
              WorkerState("w4", "failed", error="Traceback ...\nValueError: bad model"),
              WorkerState("w5", "starting", detail="model_loading")]
    state = fold(events, workload_per_call=100.0)
    card = deploy_card(state, deploy_steps(state), {})
    rows = dict(re.findall(r'data-worker="(w\d)" data-state="([a-z]+)"', card))
    assert rows == {"w1": "ready", "w2": "ready", "w3": "contexts", "w4": "failed", "w5": "starting"}
    assert re.findall(r'data-score="([\d.]+)"', card) == ["1.0000", "0.2500"]
    assert "20.0 k calls/s" in card and "5.00 k calls/s" in card       # perf 2e6 at 100 per call
    assert "load 25% · reliability 99%" in card and "entering contexts" in card
    assert "error: ValueError: bad model" in card and "vast: model_loading" in card    # Vast's own word


def test_the_step_clock_times_running_steps_and_freezes_finished_ones():
    clock = StepClock()
    clock.observe(deploy_steps(fold([])), 10.0)
    assert clock.elapsed("package", 12.5) == 2.5 and clock.elapsed("tier", 12.5) is None
    clock.observe(deploy_steps(fold(DEPLOY[:3])), 13.0)
    assert clock.elapsed("package", 20.0) == 3.0 and clock.elapsed("apply", 20.0) == 7.0
    state = fold(DEPLOY[:3])
    card = deploy_card(state, deploy_steps(state), {"package": 3.0, "tier": 0.0, "apply": 7.0})
    assert "running 7.00 s" in card and "3.00 s" in card


def test_the_widget_redraws_a_running_step_until_it_finishes():
    now = [100.0]
    view = DeployWidget("demo", clock=lambda: now[0])
    view.render_event(DEPLOY[0], fold(DEPLOY[:1]))
    now[0] = 102.0
    view._render(None)               # what the ticker does every TICK seconds
    assert "running 2.00 s" in view.card.value
    view.finish(fold(DEPLOY))
    view.ticker.join(5)
    assert not view.ticker.is_alive()
    assert "running" not in view.card.value and " · 460 ms" in view.card.value     # the deploy's own total


# -- the status card ------------------------------------------------------------------------------------------
def test_the_status_card_draws_score_and_load_bars_and_the_call_figures():
    status = DeploymentStatus("demo", "default", "local://demo/default", "ready",
                              (WorkerInfo("w1", "ready", 4_000_000.0, load=2_000_000.0),
                               WorkerInfo("w2", "ready", 1_000_000.0, load=0.0),
                               WorkerInfo("w3", "starting")),
                              ("apt: ffmpeg",), calls=CallStats(120, 2, 60.0, 2.0, 0.00031, 0.0042, 500),
                              workload_per_call=100.0)
    card = status_card(status)
    assert re.findall(r'data-score="([\d.]+)"', card) == ["1.0000", "0.2500"]
    assert re.findall(r'data-load="([\d.]+)"', card) == ["0.5000", "0.0000"]
    assert "load 50%" in card and "idle" in card and "40.0 k calls/s" in card
    assert "2.00 calls/s · p50 310 µs · p99 4.20 ms · 120 calls in the last 60.0 s, 2 failed" in card
    assert 'data-p50="0.00031"' in card and "not applied locally: apt: ffmpeg" in card


@pytest.mark.parametrize("calls, text", [(None, None),
                                         (CallStats(0, 0, 60.0, 0.0, None, None, 0), "no calls from this notebook yet"),
                                         (CallStats(0, 0, 60.0, 0.0, None, None, 9), "in the last minute")])
def test_the_status_card_without_recent_calls(calls, text):
    card = status_card(DeploymentStatus("demo", "default", None, "stopped", (), calls=calls))
    assert ("vm-calls" in card) == (text is not None) and (text is None or text in card)


def test_the_status_widget_shows_the_card():
    view = show_status(DeploymentStatus("demo", "default", None, "ready", (WorkerInfo("w1", "ready", 5.0),)),
                       mode="widget")
    assert 'data-worker="w1"' in view.card.value and view.color == STEP_COLORS["done"]


# -- the HTML reprs -----------------------------------------------------------------------------------------------
REPORT = DeployReport(2, ("code: square changed",), Fingerprint("a", "b", "c", "d"), 41_000, 24,
                      "local://demo/default", (WorkerInfo("w1", "ready", 2_000_000.0),), 2_000_000.0, False)


@pytest.mark.parametrize("value", [REPORT, DeploymentStatus("demo", "default", None, "ready", ())],
                         ids=["DeployReport", "DeploymentStatus"])
@pytest.mark.parametrize("mode, drawn", [(None, True), ("widget", True), ("text", False)])
def test_reports_draw_themselves_in_jupyter_and_keep_their_text(value, mode, drawn, monkeypatch):
    text = repr(value)
    if mode:
        monkeypatch.setenv("VAST_MAGIC_DISPLAY", mode)
    picture = value._repr_html_()
    assert (picture is not None) == drawn
    assert picture is None or picture.startswith('<div class="vm-card')
    assert repr(value) == text and text.startswith(type(value).__name__ + "(")


def test_report_card_says_what_a_dry_run_did():
    card = report_card(DeployReport(4, ("new deployment",), Fingerprint("a", "b", "c", "d"), 10, 1, None, (), None,
                                    True))
    assert 'data-state="dry run"' in card and "nothing was applied" in card and "• new deployment" in card
    assert "2.00 M workload/s" in report_card(REPORT)           # a calculator decides what a call weighs
    weighed = dataclasses.replace(REPORT, workload_per_call=100.0)
    assert "20.0 k calls/s" in report_card(weighed)
    assert weighed == REPORT and repr(weighed) == repr(REPORT)   # a drawing hint, not part of the report


# -- figures ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [(2_475_112.7, "2.48 M"), (24_751.1, "24.8 k"), (950, "950"), (999.4, "999"),
                                         (999.6, "1.00 k"), (999_999, "1.00 M"), (9.996, "10.0"), (0.5, "0.5"),
                                         (0, "0"), (-1500, "-1.50 k"), (3e12, "3.00 T")])
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("perf, per_call, text", [(2_475_112.7, None, "2.48 M workload/s"),
                                                  (2_475_112.7, 100.0, "24.8 k calls/s"),
                                                  (248.0, 1.0, "248 calls/s")])
def test_format_rate(perf, per_call, text):
    assert format_rate(perf, per_call) == text


@pytest.mark.parametrize("seconds, text", [(0.00031, "310 µs"), (0.0123, "12.3 ms"), (1.5, "1.50 s"), (75, "75.0 s"),
                                           (4000, "4000 s")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


@pytest.mark.parametrize("fraction, text", [(0.4, "40%"), (0.004, "0.4%"), (2.5, "250%"), (0, "0%")])
def test_format_share(fraction, text):
    assert format_share(fraction) == text


def test_status_lines_name_the_step_of_each_line():
    lines = status_lines(fold([*DEPLOY, Retry("engine", 1, 3, 0.5, "refused")]))
    assert {(line.part, line.step) for line in lines} == {
        ("header", None), ("body", "package"), ("warning", "package"), ("body", "tier"), ("worker", "workers"),
        ("retry", None), ("done", "ready")}


def test_log_lines_stay_out_of_the_deploy_picture():
    view = DeployWidget("demo")
    events = [*DEPLOY[:4], LogLine(1.0, "w1", "stdout", "benchmark square: perf 2.47e+06/s")]
    view.render_event(events[-1], fold(events))
    assert "benchmark square" not in view.card.value and "benchmark square" in view.output.value
    assert view.logs.selected_index is None and view.logs.get_title(0) == "worker output (last 1 lines)"
    view.finish(view.state)


def test_vast_workers_fill_the_stepper_live(tmp_path):
    """On the Vast backend (the fake API), the stepper learns Vast's action and the worker rows update per poll."""
    from tests.backends.vast.vast_harness import KEY, Harness, make_plan
    from vast_magic.testing import FakeVast
    harness = Harness(tmp_path, fake=FakeVast(api_key=KEY, ready_after=2))
    harness.apply(make_plan(tmp_path, wait=True))
    opening = [Packaging(3, 900), TierDecided(4, ("new deployment",), tiers=(4,))]
    drawn = []
    state = fold(opening, workload_per_call=100.0)
    for event in harness.events:
        state = apply_event(state, event)
        drawn.append(tuple(row.state for row in state.workers))
    rows = [(row.worker, row.state) for row in state.workers]
    assert len(rows) == 1 and rows[0][1] == "ready"
    steps = {step.key: step for step in deploy_steps(state)}
    assert steps["apply"].result == VAST_APPLIED["created"] and steps["workers"].state == "running"
    assert [d for i, d in enumerate(drawn) if d and d != drawn[i - 1]] == [("starting",), ("benchmarking",), ("ready",)]
    assert state.tiers == (4,)                                      # Vast's repeated decision kept each tier
