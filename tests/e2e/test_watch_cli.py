"""``vast-magic watch`` as a real process on the real local engine: edit, break, fix, stop.

Each test starts the watch in a project folder, edits its files the way an
editor saves them, reads the watch's output line by line (bounded waits,
generous ceilings, no timing assertions), calls the deployment from this
process to prove what serves, and stops the watch by PID with SIGINT (Ctrl-C).
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from vast_magic import loop
from vast_magic.backends import get_backend
from vast_magic.backends.base import CallSpec

APP = '''
from vast_magic import Deployment
import helpers

app = Deployment(name="watchcli")
app.configure_autoscaling(max_workers=1)


@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
def square(x):
    return helpers.twice(x) * x
'''

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/helpers.py": "def scale(x):\n    return 2 * x\n",
    "pkg/app.py": '''
from vast_magic import Deployment

from .helpers import scale

app = Deployment(name="watchpkg")
app.configure_autoscaling(max_workers=1)


@app.remote(benchmark_dataset=[{"x": 1}], benchmark_runs=1)
def double(x):
    return scale(x)
''',
}

CEILING = 180.0


class Watch:
    """A running ``vast-magic watch``: its output read line by line on a thread, stopped by PID."""

    def __init__(self, cwd: Path, *argv: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "vast_magic", "watch", *argv], cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, text: str) -> list[str]:
        """The lines printed up to and including the first one containing ``text``."""
        start, deadline = len(self.seen), time.monotonic() + CEILING
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return self.seen[start:]
        raise AssertionError(f"watch never printed {text!r}; it printed:\n" + "\n".join(self.seen[-60:]))

    def interrupt(self) -> int:
        os.kill(self.proc.pid, signal.SIGINT)
        return self.proc.wait(CEILING)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(CEILING)


def write(folder: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def call(home: Path, name: str, function: str, x: int):
    """Call the deployment from this process, the way any client reaches what serves."""
    backend = get_backend("local", home=str(home))
    spec = CallSpec(name=name, tag="default", function=function, timeout=60.0, max_queue_time=30.0)
    outcome = loop.run_sync(backend.call(spec, (x,), {}, {}))
    assert outcome.error is None, outcome.error
    return outcome.value


@pytest.mark.slow
def test_watch_a_script_edit_break_fix_and_stop(tmp_path, engine_home):
    project = write(tmp_path / "project", {"app.py": APP, "helpers.py": "def twice(x):\n    return 2 * x\n"})
    watch = Watch(project, "app.py", "--interval", "0.2")
    try:
        started = watch.until("watching ")
        assert "deployed tier 4 (new deployment); endpoint local://watchcli/default" in started
        assert started[-1].startswith("watching app.py, helpers.py; Ctrl-C stops watching")
        assert call(engine_home.path, "watchcli", "square", 3) == 18

        (project / "helpers.py").write_text("def twice(x):\n    return 3 * x\n")     # a module app.py imports
        edited = watch.until("deployed tier 2")
        assert "changed: helpers.py" in edited and "tier 2: code: helpers.twice changed" in edited
        assert call(engine_home.path, "watchcli", "square", 3) == 27

        good = (project / "app.py").read_text()
        (project / "app.py").write_text(good.replace("return helpers.twice(x) * x", "return helpers.twice(x) * x +"))
        broken = watch.until("SyntaxError")
        assert broken[0] == "not deployed; fix it and save (the last good version keeps serving):"
        assert 'File "app.py", line 10' in "\n".join(broken)
        assert call(engine_home.path, "watchcli", "square", 3) == 27          # still serving, nothing torn down

        (project / "app.py").write_text(good.replace("return helpers.twice(x) * x", "return helpers.twice(x) * x + 1"))
        fixed = watch.until("deployed tier 2")
        assert fixed[0] == "changed: app.py" and fixed[-1].startswith("deployed tier 2 (code: square changed)")
        assert call(engine_home.path, "watchcli", "square", 3) == 28
        engine_home.collect()

        assert watch.interrupt() == 0
        stopped = watch.until("stopped watching")
        assert stopped[-1] == "stopped watching; the deployment keeps serving (vast-magic teardown watchcli stops it)"
        assert call(engine_home.path, "watchcli", "square", 3) == 28          # Ctrl-C left it serving
    finally:
        watch.kill()


@pytest.mark.slow
def test_watch_a_package_module_through_an_import_error(tmp_path, engine_home):
    project = write(tmp_path / "project", PACKAGE)
    watch = Watch(project, "pkg.app:app", "--interval", "0.2")
    try:
        started = watch.until("watching ")
        assert started[-1].startswith("watching pkg/__init__.py, pkg/app.py, pkg/helpers.py;")
        assert call(engine_home.path, "watchpkg", "double", 21) == 42

        (project / "pkg" / "helpers.py").write_text("def scale(x):\n    return 3 * x\n")
        assert "tier 2: code: pkg.helpers.scale changed" in watch.until("deployed tier 2")
        assert call(engine_home.path, "watchpkg", "double", 21) == 63

        app = project / "pkg" / "app.py"
        good = app.read_text()
        app.write_text(good.replace("from .helpers import scale", "from .helpers import scale, missing"))
        failed = watch.until("ImportError")
        assert failed[0] == "changed: pkg/app.py"
        assert failed[1] == "cannot load pkg.app:app; fix it and save (nothing was deployed or torn down):"
        assert failed[-1].startswith("ImportError: cannot import name 'missing' from 'pkg.helpers'")
        assert call(engine_home.path, "watchpkg", "double", 21) == 63

        app.write_text(good)
        assert watch.until("deployed tier")[-1].startswith("deployed tier 0 (no changes)")  # back to what serves
        engine_home.collect()
        assert watch.interrupt() == 0
        assert "stopped watching" in watch.until("stopped watching")[-1]
    finally:
        watch.kill()


@pytest.mark.slow
def test_watch_starts_broken_and_follows_what_the_code_imports(tmp_path, engine_home):
    """Started while a module the target imports does not compile, the watch waits on that file too; the
    files it watches are those the capture reads, so a module the code starts importing is watched from then
    on, and one it does not is not."""
    project = write(tmp_path / "project", {"app.py": APP, "helpers.py": "def twice(x)\n    return 2 * x\n",
                                           "extra.py": "BONUS = 1\n", "unused.py": "X = 1\n"})
    watch = Watch(project, "app.py:app", "--interval", "0.2")
    try:
        started = watch.until("watching ")
        assert "cannot load app.py:app; fix it and save (nothing was deployed or torn down):" in started
        assert "SyntaxError: expected ':'" in started and started[-1].startswith("watching app.py, helpers.py; Ctrl-C")

        (project / "helpers.py").write_text("def twice(x):\n    return 2 * x\n")
        assert "deployed tier 4 (new deployment)" in " ".join(watch.until("deployed tier"))

        (project / "unused.py").write_text("X = 2\n")                  # not read by the deployment's code
        (project / "app.py").write_text(textwrap.dedent(APP).lstrip("\n").replace(
            "import helpers", "import extra\nimport helpers").replace("* x\n", "* x + extra.BONUS\n"))
        redeployed = watch.until("deployed tier")[-1]
        assert redeployed.startswith("deployed tier 2 (code: +extra; ") and "code: square changed" in redeployed
        assert watch.until("watching ")[-1].startswith("watching app.py, extra.py, helpers.py; Ctrl-C")
        assert call(engine_home.path, "watchcli", "square", 3) == 19

        (project / "extra.py").write_text("BONUS = 2\n")
        changed = watch.until("deployed tier")
        assert changed[0] == "changed: extra.py" and "unused.py" not in " ".join(watch.seen)
        assert call(engine_home.path, "watchcli", "square", 3) == 20
        engine_home.collect()
        assert watch.interrupt() == 0
    finally:
        watch.kill()
