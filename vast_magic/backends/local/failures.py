"""Failed workers: why each one failed, and for how long status keeps saying so.

A worker that dies is replaced, but the user should still see that it died
and why (exit code or signal, its last log line, which worker replaced it).
Keeping every failure forever would bury the live workers under a thousand
rows after a thousand crashes, so each failure stays ``KEEP_SECONDS`` and
only the newest ``KEEP_COUNT`` stay (``failures_to_keep``, pure). A new
version committed clears them (they were about the old code).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from typing import Sequence

from ...reports import WorkerInfo

__all__ = ["KEEP_SECONDS", "KEEP_COUNT", "FailedWorker", "exit_cause", "failures_to_keep", "add_failure",
           "mark_replaced", "summary", "as_info"]

KEEP_SECONDS = 600.0     # a failed worker is shown for 10 minutes ...
KEEP_COUNT = 5           # ... and only the 5 newest failures are shown


@dataclass(frozen=True)
class FailedWorker:
    info: WorkerInfo             # as it was when it failed; ``error`` holds its traceback or last log lines
    failed_at: float             # time.time()
    cause: str                   # "killed by SIGKILL", "exited with code 3", "ValueError: bad model id"
    last_line: str | None = None
    replaced_by: str | None = None


def exit_cause(code: int | None) -> str:
    """How a process ended, from ``Popen.returncode`` (negative: the signal that killed it)."""
    if code is None:
        return "exited (status unknown)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def failures_to_keep(failures: Sequence[FailedWorker], now: float, keep_seconds: float = KEEP_SECONDS,
                     keep_count: int = KEEP_COUNT) -> tuple[FailedWorker, ...]:
    """The failures status still shows: younger than ``keep_seconds``, the newest ``keep_count``; oldest first."""
    young = [f for f in failures if now - f.failed_at <= keep_seconds]
    young.sort(key=lambda f: f.failed_at)
    return tuple(young[-keep_count:]) if keep_count > 0 else ()


def add_failure(failures: Sequence[FailedWorker], info: WorkerInfo, cause: str | None, last_line: str | None,
                now: float) -> tuple[FailedWorker, ...]:
    """``failures`` with one more (its cause by default the last line of its error), pruned."""
    lines = (info.error or "").strip().splitlines()
    failure = FailedWorker(info, now, cause or (lines[-1] if lines else "failed"), last_line)
    return failures_to_keep((*failures, failure), now)


def mark_replaced(failures: Sequence[FailedWorker], worker: str) -> tuple[FailedWorker, ...]:
    """A new worker took a failed one's place: the oldest failure not yet replaced says so."""
    out, marked = [], False
    for failure in failures:
        if not marked and failure.replaced_by is None:
            failure, marked = replace(failure, replaced_by=worker), True
        out.append(failure)
    return tuple(out)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def summary(failure: FailedWorker, now: float) -> str:
    """One line: cause, when, replacement, last log line."""
    parts = [f"{failure.cause} {_ago(now - failure.failed_at)}"]
    if failure.replaced_by:
        parts.append(f"replaced by {failure.replaced_by}")
    if failure.last_line:
        last = failure.last_line if len(failure.last_line) <= 120 else failure.last_line[:117] + "..."
        parts.append(f"last log line: {last}")
    return "; ".join(parts)


def as_info(failure: FailedWorker, now: float) -> WorkerInfo:
    """The WorkerInfo status reports: the details, then the summary as the last line (what views show)."""
    detail = (failure.info.error or "").rstrip()
    error = f"{detail}\n{summary(failure, now)}" if detail else summary(failure, now)
    return replace(failure.info, state="failed", error=error)
