"""A deploy as five steps: what the stepper of the deploy widget draws (pure, no widgets).

``deploy_steps(state)`` turns a ``DeployState`` into package -> tier ->
apply -> workers -> ready, each pending, running, done, failed or skipped
(a dry run skips apply and workers), with its one-line result. The lines of
``events.status_lines`` hang under the step their ``step`` names (the
running step takes the retry and the failure), so the widget shows the same
facts, in the same words, as text mode; what only the stepper says (what was
applied, how many workers are ready) is built here from the state.

``StepClock`` is the one impure part: a view feeds it the steps it drew and
the time, and it says how long each step has been running or took.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..events import DeployState, Line, status_lines
from .figures import format_rate

__all__ = ["STEPS", "STEP_STATES", "LOCAL_APPLIED", "VAST_APPLIED", "Step", "deploy_steps", "StepClock"]

#: (key, title) in order
STEPS = (("package", "Package"), ("tier", "Decide tier"), ("apply", "Apply"), ("workers", "Workers"),
         ("ready", "Ready"))
STEP_STATES = ("pending", "running", "done", "failed", "skipped")

#: what the local engine does for each tier
LOCAL_APPLIED = {0: "nothing to change: the workers keep serving",
                 1: "autoscaling updated: the same workers keep serving",
                 2: "rolling update: new workers replace the old ones one at a time",
                 3: "every worker replaced (image or environment changed)",
                 4: "new endpoint: workers started"}
#: what Vast did, by the action it answered
VAST_APPLIED = {"exists": "Vast: nothing to change (exists)",
                "autoscale_update": "Vast: autoscaling updated (autoscale_update)",
                "soft_update": "Vast: bundle uploaded, workers reload it (soft_update)",
                "created": "Vast: endpoint created, bundle uploaded (created)"}


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    state: str                      # one of STEP_STATES
    result: str                     # one line: what it found or did, or what it is doing
    lines: tuple[Line, ...] = ()    # status lines shown under it (warnings, retry, failure)


def _complete(state: DeployState) -> dict[str, bool]:
    finished = state.done and not state.error      # a Ready after a failure finishes nothing
    return {"package": state.files is not None, "tier": state.tier is not None,
            "apply": finished or state.backend_action is not None or bool(state.workers),
            "workers": finished, "ready": finished}


def _applied(state: DeployState) -> str:
    if state.backend_action is not None:
        return VAST_APPLIED.get(state.backend_action, f"Vast answered {state.backend_action!r}")
    return LOCAL_APPLIED.get(state.tier if state.tier is not None else -1, "applied")


def _workers(state: DeployState, finished: bool) -> str:
    rows = state.workers
    if not rows:
        if not finished:
            return "waiting for the first worker"
        return "the same workers keep serving" if (state.tier or 0) <= 1 else "no worker reported"
    ready = [row for row in rows if row.state == "ready"]
    failed = sum(row.state == "failed" for row in rows)
    text = f"{len(ready)} of {len(rows)} ready" + (f", {failed} failed" if failed else "")
    perfs = [row.perf for row in ready if row.perf is not None]
    return text + (f", best {format_rate(max(perfs), state.workload_per_call)}" if perfs else "")


def _running(key: str, state: DeployState) -> str:
    if key == "package":
        return "capturing the code, writing the bundle"
    if key == "tier":
        return "comparing with what is deployed"
    if key == "apply":
        return "starting workers" if (state.tier or 0) >= 2 else "applying"
    return ""


def _result(key: str, step_state: str, state: DeployState, lines: tuple[Line, ...]) -> str:
    if step_state == "skipped":
        return "nothing applied: dry run" if key == "apply" else "no worker started: dry run"
    own = [line.text for line in lines if line.step == key and line.part in ("body", "done")]
    if own:
        return own[0]
    if key == "apply" and step_state == "done":
        return _applied(state)
    if key == "workers" and step_state != "pending":
        return _workers(state, step_state == "done")
    return _running(key, state) if step_state in ("running", "failed") else ""


def deploy_steps(state: DeployState) -> tuple[Step, ...]:
    """The five steps of a deploy, from its state alone."""
    complete = _complete(state)
    skipped = {"apply", "workers"} if complete["ready"] and state.dry_run else set()
    current = next((key for key, _ in STEPS if not complete[key]), None)
    lines = status_lines(state)
    steps = []
    for key, title in STEPS:
        if key in skipped:
            step_state = "skipped"
        elif complete[key]:
            step_state = "done"
        elif key == current:
            step_state = "failed" if state.error else "running"
        else:
            step_state = "pending"
        under = tuple(line for line in lines if line.part in ("warning", "retry", "error")
                      and (line.step == key or (line.step is None and key == current)))
        steps.append(Step(key, title, step_state, _result(key, step_state, state, lines), under))
    return tuple(steps)


class StepClock:
    """When each step started running and when it stopped, from what a view drew and when."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def observe(self, steps: tuple[Step, ...], now: float) -> None:
        for step in steps:
            if step.state == "pending":
                continue
            self.started.setdefault(step.key, now)
            if step.state != "running":
                self.ended.setdefault(step.key, now)

    def elapsed(self, key: str, now: float) -> float | None:
        """Seconds the step ran (so far, while running); None before it started."""
        if key not in self.started:
            return None
        return self.ended.get(key, now) - self.started[key]
