"""Failed workers: kept with their cause for a bounded time and count, then pruned.

The decisions are pure functions with tables; then real workers are SIGKILLed
and status must say why each died and what replaced it, with no more than
``KEEP_COUNT`` failures listed however many crashes there were.
"""
from __future__ import annotations

import os
import re
import signal

import pytest

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.local.failures import (KEEP_COUNT, KEEP_SECONDS, FailedWorker, add_failure, as_info,
                                                exit_cause, failures_to_keep, mark_replaced, summary)
from vast_magic.events import deployment_lines, format_deployment_status
from vast_magic.reports import WorkerInfo


def _failure(worker: str, at: float, replaced_by: str | None = None) -> FailedWorker:
    return FailedWorker(WorkerInfo(worker, "failed", error="Traceback ...\nboom"), at, "killed by SIGKILL",
                        "last words", replaced_by)


@pytest.mark.parametrize("failed_at, now, keep_seconds, keep_count, kept", [
    ([], 100.0, 600, 5, []),
    ([10.0, 20.0, 30.0], 100.0, 600, 5, [10.0, 20.0, 30.0]),            # young enough, few enough
    ([10.0, 20.0, 30.0], 615.0, 600, 5, [20.0, 30.0]),                  # the oldest is older than 600 s
    ([10.0, 20.0, 30.0], 610.0, 600, 5, [10.0, 20.0, 30.0]),            # exactly 600 s old: still shown
    ([float(t) for t in range(1000)], 1000.0, 600, 5, [995.0, 996.0, 997.0, 998.0, 999.0]),   # 1000 crashes
    ([30.0, 10.0, 20.0], 100.0, 600, 2, [20.0, 30.0]),                  # the newest, oldest first
    ([10.0], 100.0, 600, 0, []),
    ([10.0], 100.0, 0, 5, []),
])
def test_which_failures_status_keeps(failed_at, now, keep_seconds, keep_count, kept):
    failures = [_failure(f"w{i}", at) for i, at in enumerate(failed_at)]
    result = failures_to_keep(failures, now, keep_seconds, keep_count)
    assert [f.failed_at for f in result] == kept


def test_the_defaults_are_documented_constants():
    assert (KEEP_SECONDS, KEEP_COUNT) == (600.0, 5)
    failures = ()
    for index in range(50):
        failures = add_failure(failures, WorkerInfo(f"w{index}", "failed", error="x"), "killed by SIGKILL", None,
                               float(index))
    assert len(failures) == KEEP_COUNT and failures[-1].info.id == "w49"


@pytest.mark.parametrize("code, cause", [
    (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"), (-11, "killed by SIGSEGV"), (1, "exited with code 1"),
    (0, "exited with code 0"), (None, "exited (status unknown)"), (-200, "killed by signal 200"),
])
def test_exit_cause(code, cause):
    assert exit_cause(code) == cause


@pytest.mark.parametrize("replaced, new, expected", [
    ([None, None], "n1", ["n1", None]),             # the oldest waiting failure gets the new worker
    (["a", None], "n2", ["a", "n2"]),
    (["a", "b"], "n3", ["a", "b"]),                 # nothing waits: nothing changes
    ([], "n4", []),
])
def test_a_new_worker_replaces_the_oldest_unreplaced_failure(replaced, new, expected):
    failures = [_failure(f"w{i}", float(i), r) for i, r in enumerate(replaced)]
    assert [f.replaced_by for f in mark_replaced(failures, new)] == expected


@pytest.mark.parametrize("failure, now, line", [
    (_failure("w", 100.0, "w2"), 112.0, "killed by SIGKILL 12s ago; replaced by w2; last log line: last words"),
    (FailedWorker(WorkerInfo("w", "failed"), 0.0, "exited with code 3"), 600.0, "exited with code 3 10 min ago"),
    (FailedWorker(WorkerInfo("w", "failed"), 0.0, "ValueError: bad", "x" * 300), 1.0,
     "ValueError: bad 1s ago; last log line: " + "x" * 117 + "..."),
])
def test_the_summary_is_one_line(failure, now, line):
    assert summary(failure, now) == line


def test_status_shows_each_failure_as_one_compact_line():
    from vast_magic.reports import DeploymentStatus
    info = as_info(_failure("w1", 100.0, "w2"), 105.0)
    assert info.error.splitlines()[0] == "Traceback ..." and info.state == "failed"   # details kept
    status = DeploymentStatus("demo", "default", "local://demo/default", "ready",
                              (WorkerInfo("w2", "ready", 5.0), info))
    worker_lines = [line.text for line in deployment_lines(status) if line.part == "worker"]
    assert worker_lines[1] == ("worker w1: failed error: killed by SIGKILL 5s ago; replaced by w2; "
                               "last log line: last words")
    assert "Traceback" not in format_deployment_status(status)


# -- real workers, SIGKILLed ------------------------------------------------------------------------
def _ready(harness) -> list:
    status = harness.run(harness.backend.status("demo", "default"))
    return [w for w in status.workers if w.state == "ready"]


def test_sigkilled_workers_are_listed_with_their_cause_and_replacement_then_bounded(harness):
    harness.apply(plan(make_bundle(harness.folder), autoscaling={"cold_workers": 1, "max_workers": 1}))
    assert harness.call("shout", "last words before the crash") == "LAST WORDS BEFORE THE CRASH"
    crashes = KEEP_COUNT + 2
    killed: list[str] = []
    for _ in range(crashes):
        [worker] = harness.wait_for(lambda: _ready(harness), timeout=60, what="a ready worker")
        os.kill(worker.pid, signal.SIGKILL)
        killed.append(worker.id)
        harness.wait_for(lambda: any(w.id == killed[-1] and w.state == "failed" for w in harness.run(
            harness.backend.status("demo", "default")).workers), what="the failure recorded")
    [replacement] = harness.wait_for(lambda: _ready(harness), timeout=60, what="the last replacement")
    status = harness.run(harness.backend.status("demo", "default"))
    failed = [w for w in status.workers if w.state == "failed"]
    assert [w.id for w in failed] == killed[-KEEP_COUNT:]                       # bounded: the newest only
    first_shown = failed[0].error.splitlines()[-1]
    assert first_shown.startswith("killed by SIGKILL ") and f"replaced by {killed[-KEEP_COUNT + 1]}" in first_shown
    assert f"replaced by {replacement.id}" in failed[-1].error.splitlines()[-1]
    assert "last log line: " in failed[-1].error.splitlines()[-1]
    text = format_deployment_status(status).splitlines()
    assert len(text) == 2 + 1 + KEEP_COUNT                 # header, endpoint, the ready worker, one line per failure
    assert all(re.fullmatch(r"worker \S+: failed( perf=\S+)? error: killed by SIGKILL \d+s ago; .*", line) for line in text[3:]), text
    assert harness.call("square", 5) == 25


def test_the_first_crash_keeps_the_last_log_line(harness):
    harness.apply(plan(make_bundle(harness.folder), autoscaling={"cold_workers": 1, "max_workers": 1}))
    harness.call("shout", "famous last words")
    [worker] = _ready(harness)
    harness.wait_for(lambda: any("famous last words" in line.text for line in harness.run(
        harness.backend.logs("demo", "default", None, 5))), what="the line logged")
    os.kill(worker.pid, signal.SIGKILL)
    failed = harness.wait_for(lambda: [w for w in harness.run(harness.backend.status("demo", "default")).workers
                                       if w.state == "failed"], what="the failure recorded")
    summary_line = failed[0].error.splitlines()[-1]
    assert summary_line.startswith("killed by SIGKILL") and "last log line: shouting famous last words" in summary_line
    assert "worker killed by SIGKILL" in failed[0].error                      # the details above the summary
