"""The quickstart notebook in a real JupyterLab in a real browser: the deploy widget must render.

nbval and nbclient only see the messages a kernel sends; whether ipywidgets
really draws our progress widget (rather than "Loading widget..." or a plain
text fallback) only shows in a browser. This test starts JupyterLab on
127.0.0.1 with a private token and a private ``VAST_MAGIC_HOME``, opens
``notebooks/quickstart.ipynb`` (outputs cleared) in Debian's Chromium driven by
Playwright, runs every cell through the app's command registry, and checks the
first ``%vast_deploy`` cell shows a rendered widget that says "ready". The
screenshot is saved next to the test's temp files. Skipped only when Chromium,
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

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]
RUN_TIMEOUT_MS = 180_000

pytestmark = pytest.mark.browser


def _require_tools() -> None:
    missing = [what for what, ok in (("chromium", os.path.exists(CHROMIUM)),
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


def _notebook_without_outputs(folder: Path) -> Path:
    """The quickstart without outputs, and without its Vast section (nbval-skip: it needs an account or the
    box; tests/testing/test_box.py runs it in a kernel)."""
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    notebook.cells = [c for c in notebook.cells if "nbval-skip" not in c.metadata.get("tags", [])]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    path = folder / "quickstart.ipynb"
    nbformat.write(notebook, path)
    return path


def _settings_without_popups(folder: Path) -> Path:
    """User settings that keep JupyterLab from asking about news and updates (no toast over the screenshot)."""
    settings = folder / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    return folder / "lab-settings"


class JupyterLab:
    """A JupyterLab server of this test only, stopped by PID."""

    def __init__(self, folder: Path, vast_home: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "VAST_MAGIC_DISPLAY"}    # the real widget, please
        env.update(VAST_MAGIC_HOME=str(vast_home), JUPYTER_CONFIG_DIR=str(folder / "config"),
                   JUPYTER_RUNTIME_DIR=str(folder / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"),
                   JUPYTERLAB_SETTINGS_DIR=str(_settings_without_popups(folder)))
        self.log = open(folder / "jupyter.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={folder}",
             "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/api/status", params={"token": self.token}, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"jupyter lab did not answer within {timeout:.0f}s; see {self.log.name}")

    def stop(self) -> None:
        """Shut the kernels down through the API (they stop their own engine clients), then the server."""
        try:
            kernels = httpx.get(f"{self.url}/api/kernels", params={"token": self.token}, timeout=5).json()
            for kernel in kernels:
                httpx.delete(f"{self.url}/api/kernels/{kernel['id']}", params={"token": self.token}, timeout=15)
        except (httpx.HTTPError, ValueError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}"""
ALL_CELLS_RAN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session.kernel;
  return cells.every(c => c.model.executionCount !== null) && kernel.status === 'idle';
}"""


def _run_all_cells(page, lab: JupyterLab) -> None:
    page.goto(f"{lab.url}/lab/tree/quickstart.ipynb?token={lab.token}")
    page.wait_for_function(KERNEL_IDLE, timeout=RUN_TIMEOUT_MS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_TIMEOUT_MS, polling=250)


def _close_popups(page) -> None:
    page.keyboard.press("Escape")
    for button in page.locator(".jp-Notification-Toast-close, .Toastify__close-button").all():
        button.click()


def test_quickstart_deploy_widget_renders_in_jupyterlab(tmp_path, engine_home):
    _require_tools()
    from playwright.sync_api import sync_playwright
    _notebook_without_outputs(tmp_path)
    lab = JupyterLab(tmp_path, engine_home.path)
    try:
        lab.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                _run_all_cells(page, lab)
                engine_home.collect()
                errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
                assert errors.count() == 0, errors.first.inner_text()
                deploy_cell = page.locator(".jp-CodeCell").filter(has_text="report = %vast_deploy --app app").first
                output = deploy_cell.locator(".jp-OutputArea")
                widget = output.locator(".widget-vbox")
                assert widget.count() == 1, output.inner_html()[:2000]
                text = widget.inner_text()
                assert "ready at local://quickstart/default" in text, text
                assert "tier 4" in text and "worker" in text, text
                border = widget.evaluate("el => getComputedStyle(el).borderTopColor")
                assert border == "rgb(21, 128, 61)", border               # the "ready" green: our styling applied
                assert "Loading widget" not in output.inner_text()
                assert "Error displaying widget" not in output.inner_text()
                answer = page.locator(".jp-CodeCell").filter(has_text="await square(5)").first
                assert answer.locator(".jp-OutputArea").inner_text().strip().endswith("25")
                _close_popups(page)
                deploy_cell.scroll_into_view_if_needed()
                shot = tmp_path / "quickstart-deploy.png"
                deploy_cell.screenshot(path=str(shot))
                page.screenshot(path=str(tmp_path / "quickstart-page.png"))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
                print(f"screenshot: {shot}")
            finally:
                browser.close()
    finally:
        lab.stop()
