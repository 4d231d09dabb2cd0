"""The widgets in a real JupyterLab in a real browser: what nbclient cannot see.

nbval and nbclient only see the messages a kernel sends; whether ipywidgets
really draws our widgets (rather than "Loading widget..." or a plain text
fallback), and whether they read well in both themes, only shows in a browser.
One JupyterLab on 127.0.0.1 (private token, config and ``VAST_MAGIC_HOME``)
and one headless Chromium driven by Playwright serve two tests:

- ``notebooks/quickstart.ipynb`` (outputs cleared) runs cell by cell as a user
  would: its first deploy widget says "ready";
- a notebook written here deploys two workers, dry-runs, calls, shows
  ``%vast_status``, the HTML reprs of a ``DeployReport`` and a
  ``DeploymentStatus``, and a deploy that fails. The stepper, the worker rows,
  the status bars and the failure are asserted through the page's DOM (the
  ``vm-`` classes and ``data-`` attributes, and colours computed from the
  theme's CSS variables), in the light theme and then the dark one, never by
  pixels.

Screenshots go to ``$VAST_MAGIC_ARTIFACTS`` (else the test's temp folder),
never into the checkout; ``deploy-and-status-light.png`` is the README's
``docs/images/deploy-and-status.png`` (copy it there to refresh the README).
Without Chromium, Playwright or JupyterLab the tests skip, saying why; under
CI (``CI`` or ``VAST_MAGIC_REQUIRE_BROWSER`` set) they fail instead, so a
broken install cannot pass silently. ``.ci/install-browser.sh`` installs them.
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
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]
RUN_TIMEOUT_MS = 180_000
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}

pytestmark = pytest.mark.browser


def _require_tools() -> None:
    missing = [what for what, ok in (("chromium", os.path.exists(CHROMIUM)),
                                     ("playwright", _importable("playwright.sync_api")),
                                     ("jupyterlab", _importable("jupyterlab"))) if not ok]
    if missing:
        reason = f"{', '.join(missing)} not installed; run .ci/install-browser.sh"
        if os.environ.get("CI") or os.environ.get("VAST_MAGIC_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test is required here (CI): {reason}")
        pytest.skip(reason)


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


def _quickstart_without_outputs(folder: Path) -> None:
    """The quickstart without outputs, and without its Vast section (nbval-skip: it needs an account or the
    box; tests/testing/test_box.py runs it in a kernel)."""
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    notebook.cells = [c for c in notebook.cells if "nbval-skip" not in c.metadata.get("tags", [])]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, folder / "quickstart.ipynb")


#: the pictures notebook: (name, source, tags); names are how the test finds each cell's output
PICTURES = [
    ("setup", '%load_ext vast_magic\nfrom vast_magic import Deployment\n\napp = Deployment(name="pictures")\n'
              'app.configure_autoscaling(cold_workers=2, max_workers=2)', ()),
    ("remote", "%%vast_remote --app app --benchmark '[{\"x\": 2}, {\"x\": 3}]' --benchmark-runs 3\n"
               "async def square(x):\n    return x * x", ()),
    ("deploy", "report = %vast_deploy --app app", ()),
    ("calls", "for i in range(300):\n    await square(i)", ()),
    ("status", "%vast_status --app app", ()),
    ("dry run", "dry = %vast_deploy --app app --dry-run", ()),
    ("report", "report", ()),
    ("status repr", "app.status()", ()),
    ("failed", 'bad = Deployment(name="pictures-bad")\n\n@bad.remote(benchmark_dataset=[{"x": 1}])\n'
               'async def broken(x):\n    raise ValueError("the model file is missing")\n\n%vast_deploy --app bad',
     ("raises-exception",)),
]


def _pictures_notebook(folder: Path) -> None:
    cells = []
    for name, source, tags in PICTURES:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [f"test-{name.replace(' ', '-')}", *tags]
        cells.append(cell)
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=kernel), folder / "pictures.ipynb")


def _settings_without_popups(folder: Path) -> Path:
    """User settings that keep JupyterLab from asking about news and updates (no toast over the screenshot)."""
    settings = folder / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    return folder / "lab-settings"


class JupyterLab:
    """A JupyterLab server of these tests only, stopped by PID."""

    def __init__(self, folder: Path, vast_home: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "VAST_MAGIC_DISPLAY"}    # the real widget, please
        env.update(VAST_MAGIC_HOME=str(vast_home), JUPYTER_CONFIG_DIR=str(folder / "config"),
                   JUPYTER_RUNTIME_DIR=str(folder / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"),
                   JUPYTERLAB_SETTINGS_DIR=str(_settings_without_popups(folder)), IPYTHONDIR=str(folder / "ipython"))
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


@dataclass
class Session:
    lab: JupyterLab
    page: object
    engine: object          # conftest.EngineHome
    shots: Path

    def run_all(self, notebook: str) -> None:
        """Open ``notebook`` alone (a fresh workspace, so no other notebook is restored) and run every cell."""
        workspace = notebook.removesuffix(".ipynb")
        self.page.goto(f"{self.lab.url}/lab/workspaces/{workspace}/tree/{notebook}?token={self.lab.token}&reset")
        self.page.wait_for_function(KERNEL_IDLE, arg=notebook, timeout=RUN_TIMEOUT_MS)
        self.page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_TIMEOUT_MS, polling=250)
        self.engine.collect()

    def screenshot(self, locator, name: str) -> Path:
        path = self.shots / f"{name}.png"
        locator.screenshot(path=str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="module")
def session(tmp_path_factory, module_engine_home):
    _require_tools()
    from playwright.sync_api import sync_playwright
    folder = tmp_path_factory.mktemp("lab")
    shots = Path(os.environ.get("VAST_MAGIC_ARTIFACTS") or folder / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    _quickstart_without_outputs(folder)
    _pictures_notebook(folder)
    engine = module_engine_home
    lab = JupyterLab(folder, engine.path)
    try:
        lab.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield Session(lab, browser.new_page(viewport={"width": 1300, "height": 1100}), engine, shots)
            finally:
                browser.close()
    finally:
        lab.stop()


KERNEL_IDLE = """(path) => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path) return false;
  const kernel = panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}"""
ALL_CELLS_RAN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const session = panel && panel.sessionContext && panel.sessionContext.session;
  if (!session || !session.kernel) return false;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return cells.every(c => c.model.executionCount !== null) && session.kernel.status === 'idle';
}"""
#: the colour a CSS variable of the current theme computes to
THEME_COLOR = """(name) => {
  const probe = document.createElement('span');
  probe.style.color = `var(${name})`;
  document.body.appendChild(probe);
  const color = getComputedStyle(probe).color;
  probe.remove();
  return color;
}"""


def _close_popups(page) -> None:
    page.keyboard.press("Escape")
    for button in page.locator(".jp-Notification-Toast-close, .Toastify__close-button").all():
        button.click()


def _index(page, name: str) -> int:
    """Where the cell the pictures notebook tagged ``test-<name>`` is, found through JupyterLab's model."""
    index = page.evaluate("""(tag) => window.jupyterapp.shell.currentWidget.content.widgets
        .findIndex(c => (c.model.getMetadata('tags') || []).includes(tag))""", f"test-{name.replace(' ', '-')}")
    assert index >= 0, name
    return index


def _cell(page, name: str):
    return page.locator(".jp-Notebook .jp-Cell").nth(_index(page, name))


def _errors(page) -> dict[int, list[dict]]:
    """The error outputs of the open notebook by cell index, from JupyterLab's output models."""
    found = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets.map(c =>
        c.model.type === 'code' ? c.model.outputs.toJSON().filter(o => o.output_type === 'error') : [])""")
    return {index: errors for index, errors in enumerate(found) if errors}


#: the notebook cell an element is in
CELL_OF = "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' jp-Cell ')][1]"
#: an element's innerText once the browser has drawn two frames: a cell JupyterLab has just scrolled into
#: view is still skipped (content-visibility) until the next rendering update, and reads as empty before it
TEXT_AFTER_RENDER = """el => new Promise(done =>
  requestAnimationFrame(() => requestAnimationFrame(() => done(el.innerText))))"""


def _shown_text(locator) -> str:
    """The text a user reads in ``locator``: JupyterLab skips rendering cells outside the viewport, and the
    text of a skipped cell reads as empty, so scroll it into view and read it once it is drawn. The cell is
    what scrolls: a live card (``%vast_status``) redraws itself, so its own elements do not stay attached."""
    locator.locator(CELL_OF).scroll_into_view_if_needed()
    return locator.evaluate(TEXT_AFTER_RENDER)


def _no_broken_widgets(page) -> None:
    text = page.locator(".jp-Notebook").text_content()      # every cell's text, rendered or skipped
    assert "Loading widget" not in text and "Error displaying widget" not in text


def test_quickstart_deploy_widget_renders_in_jupyterlab(session):
    page = session.page
    session.run_all("quickstart.ipynb")
    assert _errors(page) == {}
    deploy_cell = page.locator(".jp-CodeCell").filter(has_text="report = %vast_deploy --app app").first
    card = deploy_cell.locator(".vm-card.vm-deploy")
    assert card.count() == 1, deploy_cell.locator(".jp-OutputArea").inner_html()[:2000]
    assert card.get_attribute("data-phase") == "ready"
    text = _shown_text(card)
    assert "ready at local://quickstart/default" in text and "tier 4: new deployment" in text, text
    _no_broken_widgets(page)
    answer = page.locator(".jp-CodeCell").filter(has_text="await square(5)").first
    assert _shown_text(answer.locator(".jp-OutputArea")).strip().endswith("25")
    _close_popups(page)
    deploy_cell.scroll_into_view_if_needed()
    session.screenshot(deploy_cell, "quickstart-deploy")


def _steps(card) -> list[tuple[str, str]]:
    return [(step.get_attribute("data-step"), step.get_attribute("data-state"))
            for step in card.locator(".vm-step").all()]


def _check_deploy(page) -> None:
    card = _cell(page, "deploy").locator(".vm-card.vm-deploy")
    assert card.get_attribute("data-phase") == "ready"
    assert _steps(card) == [(key, "done") for key in ("package", "tier", "apply", "workers", "ready")]
    step = card.locator('.vm-step[data-step="package"] .vm-step-result')
    assert _shown_text(step).startswith("packaged ") and "files" in _shown_text(step)
    tiers = card.locator(".vm-tier-row")
    assert tiers.count() == 1 and tiers.get_attribute("data-tier") == "4" and "new deployment" in _shown_text(tiers)
    assert "new endpoint: workers started" in _shown_text(card.locator('.vm-step[data-step="apply"]'))
    workers = card.locator(".vm-worker")
    assert workers.count() == 2                                               # cold_workers=2: two rows
    assert [row.get_attribute("data-state") for row in workers.all()] == ["ready", "ready"]
    scores = sorted(float(bar.get_attribute("data-score")) for bar in card.locator(".vm-score").all())
    assert scores[-1] == 1.0 and 0 < scores[0] <= 1.0                         # relative to the best worker
    assert all(_shown_text(figure).endswith(" calls/s") for figure in card.locator(".vm-figure").all())
    assert "benchmark square" not in _shown_text(card)                        # worker output is not in the picture
    output = _cell(page, "deploy").locator(".jupyter-widget-Collapse-header")
    assert output.count() == 1 and "worker output" in _shown_text(output)
    assert not _cell(page, "deploy").locator(".vm-logs").is_visible()        # collapsed


def _check_dry_run_and_failure(page) -> None:
    dry = _cell(page, "dry run").locator(".vm-card.vm-deploy")
    assert dry.get_attribute("data-phase") == "dry run"
    assert [state for _, state in _steps(dry)] == ["done", "done", "skipped", "skipped", "done"]
    assert "nothing applied: dry run" in _shown_text(dry)
    failed = _cell(page, "failed").locator(".vm-card.vm-deploy")
    assert failed.get_attribute("data-phase") == "failed"
    states = dict(_steps(failed))
    assert list(states.values()).count("failed") == 1 and states["ready"] == "pending"
    failed_step = failed.locator('.vm-step[data-state="failed"]')
    assert "the model file is missing" in _shown_text(failed_step)           # the error stays visible, in its step
    assert [error["ename"] for error in _errors(page).get(_index(page, "failed"), [])] == ["DeployError"]


def _check_status(page) -> None:
    card = _cell(page, "status").locator(".vm-card.vm-status")
    assert card.get_attribute("data-state") == "ready"
    assert card.locator(".vm-worker").count() == 2
    assert card.locator(".vm-score").count() == 2 and card.locator(".vm-load").count() >= 2
    calls = card.locator(".vm-calls")
    assert float(calls.get_attribute("data-rate")) > 0
    assert float(calls.get_attribute("data-p50")) <= float(calls.get_attribute("data-p99"))
    assert "p50" in _shown_text(calls) and "p99" in _shown_text(calls) and "300 calls in the last" in _shown_text(calls)
    report = _cell(page, "report").locator(".vm-card.vm-report")
    assert report.count() == 1 and "DeployReport: tier 4" in _shown_text(report)
    assert _cell(page, "status repr").locator(".vm-card.vm-status .vm-worker").count() == 2


def _check_theme_colors(page, icon) -> str:
    """The done icon is drawn in the theme's success colour (a CSS variable, not a fixed colour)."""
    success = page.evaluate(THEME_COLOR, "--jp-success-color1")
    assert icon.evaluate("el => getComputedStyle(el).color") == success
    card = icon.locator("xpath=ancestor::div[contains(@class, 'vm-card')]")
    assert card.evaluate("el => getComputedStyle(el).color") == page.evaluate(THEME_COLOR, "--jp-ui-font-color1")
    return success


def test_deploy_and_status_pictures_in_both_themes(session):
    page = session.page
    session.run_all("pictures.ipynb")
    assert list(_errors(page)) == [_index(page, "failed")]            # only the deploy meant to fail raised
    _no_broken_widgets(page)
    _check_deploy(page)
    _check_dry_run_and_failure(page)
    _check_status(page)
    _close_popups(page)
    icon = _cell(page, "deploy").locator('.vm-step[data-step="ready"] .vm-step-icon')
    colors = {}
    for theme, label in THEMES.items():
        page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", label)
        page.wait_for_function("(light) => document.body.dataset.jpThemeLight === light",
                               arg=str(theme == "light").lower(), timeout=30_000)
        page.wait_for_timeout(300)     # the theme's stylesheet applies after the attribute changes
        colors[theme] = _check_theme_colors(page, icon)
        deploy, status = _cell(page, "deploy"), _cell(page, "status")
        deploy.scroll_into_view_if_needed()
        top, bottom = deploy.bounding_box(), status.bounding_box()
        session.page.screenshot(path=str(session.shots / f"deploy-and-status-{theme}.png"),
                                clip={"x": top["x"], "y": top["y"], "width": top["width"],
                                      "height": bottom["y"] + bottom["height"] - top["y"]})
        for name in ("dry run", "failed", "report", "status repr"):
            session.screenshot(_cell(page, name).locator(".vm-card"), f"{name.replace(' ', '-')}-{theme}")
        print(f"screenshot: {session.shots / f'deploy-and-status-{theme}.png'}")
    assert colors["light"] != colors["dark"], colors                        # the pictures follow the theme


@pytest.mark.parametrize("missing", ["chromium", "playwright", "jupyterlab"])
def test_missing_tools_skip_locally_and_fail_under_ci(monkeypatch, tmp_path, missing):
    """Whatever is installed here: each tool missing alone skips locally and fails under CI, naming it."""
    module = sys.modules[__name__]
    chromium = tmp_path / "chromium"
    if missing != "chromium":
        chromium.write_text("")
    monkeypatch.setattr(module, "CHROMIUM", str(chromium))
    monkeypatch.setattr(module, "_importable", lambda name: not name.startswith(missing))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("VAST_MAGIC_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"^{missing} not installed; run .ci/install-browser.sh"):
        _require_tools()
    for variable in ("CI", "VAST_MAGIC_REQUIRE_BROWSER"):
        with monkeypatch.context() as patch:
            patch.setenv(variable, "1")
            with pytest.raises(pytest.fail.Exception, match=f"required here .CI.: {missing} not installed"):
                _require_tools()