"""``%vast_deploy --watch``: redeploy the notebook's deployment when a local module it imports is saved.

A task on the kernel's own running loop (no thread, no loop patching) polls
the files the deployment's capture reads (``vast_magic.watch``). On a change
it reloads the changed modules in the kernel, as a cell would, and redeploys
on vast_magic's background loop without holding the kernel: cells keep
running meanwhile. What it does goes to a log shown under the cell that
started it, updated in place (a display with an id: a task that outlives its
cell has no cell of its own to print into). The next ``%vast_deploy`` or
``%vast_teardown`` stops it; the deployment keeps serving.
"""
from __future__ import annotations

import asyncio
import importlib
import sys
from collections import deque
from typing import Any

from IPython.core.error import UsageError

from ..capture.origins import module_name_for_file
from ..display import Progress, describe_error
from ..errors import VastMagicError
from ..events import DeployState, Event, format_event
from ..reports import LogLine
from ..watch import (DEFAULT_INTERVAL, DEPLOY, WAIT, WatchState, check_interval, describe_import_error, display_path,
                     error_files, refresh_sources, reload_order, watched_files)

__all__ = ["LOG_LINES", "WatchLog", "NotebookWatch", "kernel_loop_or_raise", "start_watch"]

LOG_LINES = 40          # the log shows the newest lines; older ones drop off


class WatchLog:
    """The watch's lines, newest last, shown in one display that each new line updates."""

    def __init__(self, show: bool = True):
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._handle = None
        self._show = show

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines() or [""])
        bundle = {"text/plain": "\n".join(self.lines)}
        if not self._show:
            return
        if self._handle is None:
            from IPython.display import display
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    # a DeployView, so a redeploy's events land here instead of a new progress view in some other cell
    def render_event(self, event: Event, state: DeployState) -> None:
        line = format_event(event)
        if line is not None and not isinstance(event, LogLine):
            self.write(line)

    def finish(self, state: DeployState) -> None:
        pass


class NotebookWatch:
    """One watch of one deployment: ``start`` it from a cell, ``stop`` it from a later one."""

    def __init__(self, app: Any, files: dict[str, str], *, overrides: dict[str, Any], wait: bool = True,
                 timeout: float | None = None, interval: float = DEFAULT_INTERVAL, show: bool = True):
        self.app, self.overrides, self.wait, self.timeout, self.interval = app, overrides, wait, timeout, interval
        self.modules = dict(files)                 # watched path -> module name
        self.state = WatchState(files)
        self.log = WatchLog(show)
        self.reports: list = []                    # every DeployReport this watch produced, in order
        self._task: asyncio.Task | None = None
        self._deploying = None                     # the loop.Started of a redeploy in flight
        self._stopped = False

    @property
    def running(self) -> bool:
        """Polling (False from the moment ``stop`` is called: the task ends when the kernel's loop next runs)."""
        return self._task is not None and not self._stopped and not self._task.done()

    def start(self, kernel_loop: asyncio.AbstractEventLoop) -> "NotebookWatch":
        self.state.poll()
        self.state.attempted_now()                 # the deploy that just ran is the first attempt
        self._say_watching()
        self._task = kernel_loop.create_task(self._run())
        return self

    def _say_watching(self) -> None:
        self.log.write(f"watching {', '.join(sorted(map(display_path, self.modules)))}: saving one redeploys; "
                       "the next %vast_deploy or %vast_teardown stops watching")

    def _watch_also(self, paths: set[str]) -> None:
        """Watch the files an error pointed at too (a module the changed one imports), so fixing them retries."""
        self.modules.update({path: module_name_for_file(path) for path in paths - set(self.modules)})
        self.state.attempted_now(self.modules)

    def stop(self, wait: float = 30.0) -> None:
        """Stop polling, and cancel a redeploy in flight, waiting until it let go of the engine."""
        if self._task is not None and not self._task.done() and not self._stopped:
            self._stopped = True
            self._task.cancel()
            self.log.write("stopped watching; the deployment keeps serving")
        if self._deploying is not None:
            self._deploying.cancel(wait)
            self._deploying = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                decision = self.state.poll()
                if decision.action == WAIT:
                    self.state.attempted_now()
                    self.log.write("not deployed; fix it and save (the last good version keeps serving):\n"
                                   + "\n".join(decision.problems))
                elif decision.action == DEPLOY:
                    await self._redeploy(decision.changed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the watch outlives any one failed redeploy
                detail = describe_error(exc) if isinstance(exc, VastMagicError) else describe_import_error(exc)
                self.log.write(f"redeploy failed: {detail}\nfix it and save; the last good version keeps serving.")

    async def _redeploy(self, changed: tuple[str, ...]) -> None:
        self.state.attempted_now()
        self.log.write(f"changed: {', '.join(map(display_path, changed))}")
        refresh_sources(changed)
        for name in reload_order(self.modules[path] for path in changed if path in self.modules):
            try:
                importlib.reload(sys.modules[name])
            except Exception as exc:  # noqa: BLE001 - a module that fails to run is reported and waited out
                self._watch_also(error_files(exc))
                self.log.write(f"cannot reload {name}; fix it and save (nothing was deployed):\n"
                               f"{describe_import_error(exc)}")
                return
        before, self.modules = set(self.modules), watched_files(self.app, **self.overrides)
        self.state.attempted_now(self.modules)
        if set(self.modules) != before:
            self._say_watching()
        snapshot = self.app._snapshot(**self.overrides)
        progress = Progress(snapshot.name, self.log)
        kernel_loop = asyncio.get_running_loop()
        self._deploying = self.app._start_deploy(
            snapshot, wait=self.wait, timeout=self.timeout,
            emit=lambda event: kernel_loop.call_soon_threadsafe(progress.emit, event))
        try:
            report = await self._deploying.wait()
        except asyncio.CancelledError:
            self.log.write("redeploy cancelled: the watch stopped (what served before keeps serving)")
            raise
        except BaseException as exc:
            await asyncio.sleep(0)                  # events queued by the deploy render before its failure
            progress.close(exc)
            raise
        finally:
            self._deploying = None
        await asyncio.sleep(0)
        progress.close(None)
        self.reports.append(report)
        self.log.write(f"deployed tier {report.tier} ({'; '.join(report.reasons) or 'no changes'})")


def kernel_loop_or_raise() -> asyncio.AbstractEventLoop:
    """The kernel's running event loop, which a watch runs on; a terminal IPython has none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise UsageError("%vast_deploy --watch runs as a task on the kernel's event loop, and this shell has none "
                         "running (a terminal IPython); run it in Jupyter, or watch from a shell with "
                         "`vast-magic watch app.py`.") from None


def start_watch(session: Any, app: Any, *, name: str | None = None, tag: str | None = None,
                ttl: float | None = None, backend: str | None = None, wait: bool = True,
                timeout: float | None = None, interval: float | None = None):
    """``%vast_deploy --watch`` after its deploy: redeploy ``app`` (with the same flags) whenever a local module
    file its code comes from is saved, until the next ``%vast_deploy`` or ``%vast_teardown``. Returns the
    ``NotebookWatch`` (None when the code reads no local file: cells are redeployed by running them)."""
    kernel_loop = kernel_loop_or_raise()
    session.stop_watch()
    overrides = dict(name=name, tag=tag, ttl=ttl, backend=backend)
    files = watched_files(app, **overrides)
    if not files:
        print(f"{app.effective_name}: nothing to watch; its code comes from cells only (no local module files), "
              "so re-run a changed cell and %vast_deploy.")
        return None
    interval = check_interval(interval if interval is not None else DEFAULT_INTERVAL)
    session.watch = NotebookWatch(app, files, overrides=overrides, wait=wait, timeout=timeout,
                                  interval=interval).start(kernel_loop)
    return session.watch
