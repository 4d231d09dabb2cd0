"""The deploy progress widget must really render in a browser, in a real JupyterLab.

nbval and nbclient only see the messages a kernel sends; whether ipywidgets
actually draws our ``%vast_deploy`` widget (rather than "Loading widget...",
"Error displaying widget" or the plain-text fallback) only shows in a browser.
This test starts JupyterLab on 127.0.0.1 with a random token, private Jupyter
dirs and a private ``VAST_MAGIC_HOME`` (the ``engine_home`` fixture, which
stops the engine and workers by PID and asserts none are left), writes a small
notebook that deploys ``square`` to the local engine, runs every cell in Debian's
Chromium driven by Playwright, and checks that ``await square(7)`` shows 49 and
that the deploy cell shows a rendered widget saying "ready". The screenshot
``deploy.png`` is left in the test's temp dir. Skipped only when Chromium,
Playwright or JupyterLab are not installed (``.ci/install-browser.sh`` installs them).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_MS = 120_000
DEPLOY_CELL = "%vast_deploy --app app"
CELLS = [
    "%load_ext vast_magic",
    'from vast_magic import Deployment\napp = Deployment(name="browser-test")',
    "%%vast_remote --app app --benchmark '[{\"x\": 2}, {\"x\": 3}]' --benchmark-runs 3\n"
    "async def square(x):\n    return x * x",
    DEPLOY_CELL,
    "await square(7)",
]


def _require_tools() -> None:
    missing = [name for name, ok in (("chromium", os.path.exists(CHROMIUM)),
                                     ("playwright", _importable("playwright.sync_api")),
                                     ("jupyterlab", _importable("jupyterlab"))) if not ok]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; run .ci/install-browser.sh")


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_notebook(folder: Path) -> str:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "browser_test.ipynb")
    return "browser_test.ipynb"


class JupyterLab:
    """A JupyterLab server of this test only (own port, token and Jupyter dirs), stopped by PID."""

    def __init__(self, folder: Path, vast_home: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        root, jupyter = folder / "root", folder / "jupyter"
        root.mkdir()
        self.root = root
        settings = jupyter / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)  # no news/update toast over the notebook
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in os.environ.items() if k != "VAST_MAGIC_DISPLAY"}  # the real widget
        env.update(VAST_MAGIC_HOME=str(vast_home), JUPYTER_CONFIG_DIR=str(jupyter / "config"),
                   JUPYTER_DATA_DIR=str(jupyter / "data"), JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(jupyter / "lab-settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(jupyter / "workspaces"))
        self.log_path = folder / "jupyter.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def api(self, method: str, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/{path}", params={"token": self.token}, timeout=timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.api("GET", "status", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"jupyter lab did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Shut the kernels down through the REST API, then the server by its PID."""
        try:
            for kernel in self.api("GET", "kernels").json():
                self.api("DELETE", f"kernels/{kernel['id']}", timeout=15)
        except (httpx.HTTPError, ValueError):
            pass  # the server is already gone: its kernels went with it
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}"""
# Resolves to "done" once the last cell shows 49 and the kernel is idle, or to the first error output.
RUN_FINISHED = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  for (const [i, cell] of cells.entries()) {
    const error = cell.model.outputs.toJSON().find(o => o.output_type === 'error');
    if (error) return `cell ${i + 1} failed: ${error.ename}: ${error.evalue}`;
  }
  const last = cells[cells.length - 1];
  const shown = last.outputArea.node.innerText.split('\\n').some(line => line.trim() === '49');
  return shown && panel.sessionContext.session.kernel.status === 'idle' ? 'done' : false;
}"""


def _run_all_cells(page, lab: JupyterLab, notebook: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}", timeout=60_000)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000, polling=250)
    commands = page.evaluate("window.jupyterapp.commands.listCommands()")
    command = next((c for c in ("notebook:run-all-cells", "runmenu:run-all") if c in commands), None)
    assert command, "JupyterLab has no run-all command"
    page.evaluate(f"window.jupyterapp.commands.execute('{command}')")
    outcome = page.wait_for_function(RUN_FINISHED, timeout=RUN_TIMEOUT_MS, polling=250).json_value()
    assert outcome == "done", outcome


def _save_failure(page, lab: JupyterLab, folder: Path) -> None:
    """What the page and the server showed when the test failed (printed with the failure)."""
    try:
        page.screenshot(path=str(folder / "failure.png"), timeout=10_000)
        print(f"failure screenshot: {folder / 'failure.png'}")
    except Exception as exc:  # the failure itself matters more than its picture
        print(f"no failure screenshot: {exc}")
    print(f"jupyter log tail:\n{lab.log_tail()}")


def test_deploy_widget_renders_in_jupyterlab(tmp_path, engine_home):
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    lab = JupyterLab(tmp_path, engine_home.path)
    notebook = _write_notebook(lab.root)
    try:
        lab.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = None
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                try:
                    _run_all_cells(page, lab, notebook)
                finally:
                    engine_home.collect()  # remember engine and worker PIDs for the fixture's orphan check
                cell = page.locator(".jp-CodeCell").filter(
                    has=page.locator(".jp-InputArea", has_text=DEPLOY_CELL)).last
                output = cell.locator(".jp-OutputArea")
                widget = output.locator(".jupyter-widgets.widget-vbox")
                expect(widget).to_have_count(1, timeout=10_000)
                expect(widget).to_contain_text("vast_magic deploy browser-test: ready", timeout=10_000)
                expect(widget).to_contain_text("ready at local://browser-test/default")
                expect(widget).to_be_visible()
                shown = output.inner_text()
                assert "Loading widget" not in shown and "Error displaying widget" not in shown, shown
                border = widget.evaluate("node => getComputedStyle(node).borderTopColor")
                assert border == "rgb(21, 128, 61)", border  # PHASE_COLORS["ready"]: the widget's styles applied
                page.keyboard.press("Escape")
                cell.scroll_into_view_if_needed()
                shot = tmp_path / "deploy.png"
                cell.screenshot(path=str(shot))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 2_000
                print(f"screenshot: {shot}")
            except BaseException:
                if page is not None:
                    _save_failure(page, lab, tmp_path)
                raise
            finally:
                browser.close()
    finally:
        lab.stop()
