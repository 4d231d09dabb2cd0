"""Entering and exiting the deployment's contexts (model loads, clients, pools).

All contexts are entered at once (``asyncio.gather`` of their ``__aenter__``),
so start-up costs the slowest one, not the sum. Only contexts that were entered
are exited, also at once, and a failure carries every traceback as text because
it ends up in the notebook, far from this process.
"""
from __future__ import annotations

import asyncio
import traceback
from typing import Any

from .registry import LoadedApp, worker_app

__all__ = ["ContextError", "EnteredContexts", "enter_all"]


class ContextError(RuntimeError):
    """A context could not be created or entered; the message holds the tracebacks."""


class EnteredContexts:
    """The context managers that were entered, to exit them exactly once."""

    def __init__(self, managers: dict[str, Any]):
        self._managers = dict(managers)

    async def exit_all(self, timeout: float | None = None) -> list[str]:
        """Exit every entered context in parallel; return failure texts (never raises)."""
        managers, self._managers = self._managers, {}
        worker_app().set_contexts(None)
        if not managers:
            return []
        jobs = [asyncio.ensure_future(m.__aexit__(None, None, None)) for m in managers.values()]
        done, pending = await asyncio.wait(jobs, timeout=timeout)
        for job in pending:
            job.cancel()
        failures = [f"context {name} did not exit within {timeout} s"
                    for name, job in zip(managers, jobs) if job in pending]
        failures += [f"context {name} failed to exit:\n{_format(job.exception())}"
                     for name, job in zip(managers, jobs) if job in done and job.exception()]
        return failures


async def enter_all(app: LoadedApp) -> EnteredContexts:
    """Instantiate (here, on the worker) and enter every context; all or nothing."""
    managers: dict[str, Any] = {}
    for spec in app.contexts:
        cls = app.context_classes[spec["name"]]
        try:
            managers[spec["name"]] = cls(*spec.get("args", ()), **dict(spec.get("kwargs", {})))
        except Exception as exc:
            raise ContextError(f"context {spec['name']} could not be created:\n{_format(exc)}") from exc
    if not managers:
        worker_app().set_contexts({})
        return EnteredContexts({})
    jobs = {name: asyncio.ensure_future(m.__aenter__()) for name, m in managers.items()}
    try:
        await asyncio.wait(jobs.values())
    except asyncio.CancelledError:      # stopping during start-up: undo what did get entered
        for job in jobs.values():
            job.cancel()
        await asyncio.wait(jobs.values(), timeout=1.0)
        done = {n: managers[n] for n, j in jobs.items() if j.done() and not j.cancelled() and not j.exception()}
        await EnteredContexts(done).exit_all(timeout=1.0)
        raise
    entered = {n: managers[n] for n, job in jobs.items() if not job.cancelled() and job.exception() is None}
    failed = {n: job.exception() for n, job in jobs.items() if not job.cancelled() and job.exception() is not None}
    if failed:
        await EnteredContexts(entered).exit_all(timeout=10.0)
        text = "\n".join(f"context {n} failed to enter:\n{_format(e)}" for n, e in failed.items())
        raise ContextError(text)
    worker_app().set_contexts({n: jobs[n].result() for n in managers})
    return EnteredContexts(entered)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
