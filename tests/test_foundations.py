"""The foundations every part uses: loop bridge, settings precedence, error tree, events, Secret."""
from __future__ import annotations

import asyncio
import pickle
import re
import threading
import typing

import pytest

from vast_magic import errors, events, loop, settings
from vast_magic.errors import ConfigError, RemoteError, make_remote_error
from vast_magic.reports import LogLine, WorkerInfo
from vast_magic.secret import Secret


# -- loop ---------------------------------------------------------------------
async def _answer(x):
    await asyncio.sleep(0)
    return x, threading.current_thread().name


def test_run_sync_without_a_running_loop():
    assert loop.run_sync(_answer(42)) == (42, "vast-magic-loop")


def test_run_sync_inside_a_running_loop_like_jupyter():
    async def cell():
        return loop.run_sync(_answer(7))  # a sync entry point called from a running loop
    assert asyncio.run(cell()) == (7, "vast-magic-loop")


def test_run_on_loop_from_another_loop():
    async def cell():
        return await loop.run_on_loop(_answer(3))
    assert asyncio.run(cell()) == (3, "vast-magic-loop")


def test_run_sync_on_the_loop_thread_is_a_clear_error():
    async def nested():
        return loop.run_sync(_answer(1))
    with pytest.raises(RuntimeError, match="would deadlock"):
        loop.run_sync(nested())


def test_run_sync_propagates_exceptions():
    async def boom():
        raise KeyError("x")
    with pytest.raises(KeyError):
        loop.run_sync(boom())


# -- settings -------------------------------------------------------------------
@pytest.fixture
def clean_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAST_MAGIC_BACKEND", raising=False)
    settings.set_config_source(None)
    yield tmp_path
    settings.set_config_source(None)


@pytest.mark.parametrize("explicit, config, env, pyproject, expected", [
    (None, None, None, None, "local"),
    (None, None, None, "vast", "vast"),
    (None, None, "vast", "local", "vast"),
    (None, "local", "vast", "vast", "local"),
    ("vast", "local", "local", "local", "vast"),
])
def test_settings_precedence(clean_settings, monkeypatch, explicit, config, env, pyproject, expected):
    if pyproject:
        (clean_settings / "pyproject.toml").write_text(f'[tool.vast_magic]\nbackend = "{pyproject}"\n')
    if env:
        monkeypatch.setenv("VAST_MAGIC_BACKEND", env)
    if config:
        settings.set_config_source(lambda name: config if name == "backend" else None)
    assert settings.resolve("backend", explicit) == expected


@pytest.mark.parametrize("name, value, message", [
    ("backend", "cloud", "Setting backend='cloud' from argument is invalid: expected one of local, vast"),
    ("display", "html", "expected one of auto, widget, text"),
    ("deploy_timeout", "-1", "expected a positive number of seconds"),
    ("nonsense", None, "Unknown setting 'nonsense'"),
])
def test_settings_bad_values(clean_settings, name, value, message):
    with pytest.raises(ConfigError, match=message):
        settings.resolve(name, value)


def test_settings_home_is_private(clean_settings, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(clean_settings / "h"))
    home = settings.home()
    assert home == clean_settings / "h" and (home.stat().st_mode & 0o777) == 0o700


# -- errors ---------------------------------------------------------------------
def test_remote_value_error_is_both_remote_and_value_error():
    exc = make_remote_error("builtins.ValueError", "boom", "Traceback ...\nValueError: boom\n")
    assert isinstance(exc, RemoteError) and isinstance(exc, ValueError)
    assert (exc.remote_type, exc.remote_message) == ("ValueError", "boom")
    assert exc._render_traceback_()[-1] == "ValueError: boom"
    assert isinstance(pickle.loads(pickle.dumps(exc)), ValueError)


def test_remote_error_of_an_unknown_type_is_plain_remote_error():
    exc = make_remote_error("nowhere.CustomError", "bad", "")
    assert type(exc) is RemoteError and str(exc) == "nowhere.CustomError: bad"


def test_error_tree():
    assert issubclass(errors.CallTimeoutError, TimeoutError) and issubclass(errors.CallTimeoutError, errors.BackendError)
    for cls in (errors.ConfigError, errors.CaptureError, errors.BundleError, errors.BackendError, errors.RemoteError):
        assert issubclass(cls, errors.VastMagicError)
    for cls in (errors.EngineUnavailableError, errors.EngineConnectionLostError, errors.VastAPIError):
        assert issubclass(cls, errors.BackendError)
    for name in ("Auth", "NotFound", "Rejected", "RateLimited", "Unavailable", "Upload"):
        assert issubclass(getattr(errors, f"Vast{name}Error"), errors.VastAPIError)


def _documented_tree() -> list[tuple[int, str]]:
    """(depth, class name) of each row of the tree drawn in errors.py's docstring (5 columns per level)."""
    lines = errors.__doc__.splitlines()
    root = next(line for line in lines if line.strip() == "VastMagicError")
    indent = root.index("VastMagicError")
    rows = [(0, "VastMagicError")]
    for line in lines[lines.index(root) + 1:]:
        found = re.search(r"[├└]── ([A-Za-z]+)", line)
        if not found:
            break
        rows.append(((found.start(1) - indent) // 5, found.group(1)))
    return rows


def test_every_error_class_is_in_the_documented_tree_under_its_parent():
    classes = {name: cls for name, cls in vars(errors).items()
               if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__
               and not name.startswith("_")}
    documented = _documented_tree()
    assert sorted(name for _, name in documented) == sorted(classes)
    assert all(name.endswith("Error") for name in classes)
    parents: dict[int, str] = {}
    for depth, name in documented:
        parents[depth] = name
        if depth:
            assert classes[parents[depth - 1]] in classes[name].__bases__, (name, parents[depth - 1])


# -- events -----------------------------------------------------------------------
def _fold(sequence):
    state = events.DeployState(name="demo")
    for event in sequence:
        state = events.apply_event(state, event)
    return state


def test_format_status_of_a_successful_deploy():
    state = _fold([events.Packaging(7, 2048), events.TierDecided(2, ("code: square changed",)),
                   events.WorkerState("w1", "contexts"), events.BenchmarkScored("w1", 1234.5),
                   events.WorkerState("w1", "ready", perf=1234.5), events.Ready("local://demo/default", 1.25)])
    assert events.format_status(state).splitlines() == [
        "vast_magic deploy demo: ready", "packaged 7 files, 2.0 KiB", "tier 2: code: square changed",
        "worker w1: ready perf=1,234.5/s", "ready at local://demo/default in 1.25s"]


def test_failure_is_sticky_and_shows_last_error_line():
    state = _fold([events.WorkerState("w1", "failed", error="Traceback\nRuntimeError: no GPU"),
                   events.Failed("worker w1 failed")])
    text = events.format_status(state)
    assert state.phase == "failed" and "error: RuntimeError: no GPU" in text and text.endswith("FAILED: worker w1 failed")


EVENT_SAMPLES = [events.Packaging(1, 10), events.TierDecided(0, ()), events.WorkerState("w", "ready"),
                 events.BenchmarkScored("w", 1.0), events.Ready(None, 0.1), events.Ready(None, 0.1, dry_run=True),
                 events.Retry("PUT", 1, 3, 0.5, "HTTP 503"), events.Failed("x"), events.Warned("w"), LogLine(0.0, "w", "stdout", "hi")]
#: events whose line says more than the state keeps (the benchmark score line, a log line)
NOT_IN_STATUS = (events.BenchmarkScored, LogLine)


def test_format_event_covers_every_event_type():
    assert {type(e) for e in EVENT_SAMPLES} == set(typing.get_args(events.Event))
    assert all(events.format_event(e) for e in EVENT_SAMPLES)
    assert events.format_event(events.Waited("f", "1 loading", 2, 1.25)) == \
        "f: waiting for a worker after 1.2s (vast: 1 loading)"


@pytest.mark.parametrize("event", [e for e in EVENT_SAMPLES if not isinstance(e, NOT_IN_STATUS)],
                         ids=lambda e: type(e).__name__)
def test_an_events_line_is_the_line_it_adds_to_the_status(event):
    before = events.status_lines(events.DeployState(name="demo"))
    after = events.status_lines(events.apply_event(events.DeployState(name="demo"), event))
    added = [line.text for line in after[1:] if line not in before]
    assert added == [events.format_event(event)]


def test_status_lines_say_where_each_line_goes():
    state = _fold([events.Packaging(7, 2048), events.TierDecided(2, ("code: f changed",)),
                   events.WorkerState("w1", "failed", error="boom"), events.Retry("engine", 1, 3, 0.5, "refused"),
                   events.Failed("worker w1 failed")])
    assert [(line.part, line.state) for line in events.status_lines(state)] == [
        ("header", None), ("body", None), ("body", None), ("worker", "failed"), ("retry", None), ("error", None)]
    ready = events.apply_event(state, events.Ready(None, 1.0))       # ready clears the retry line
    assert [line.part for line in events.status_lines(ready)][-2:] == ["done", "error"]


def test_deployment_lines_and_summary():
    from vast_magic.reports import DeploymentStatus, WorkerInfo
    status = DeploymentStatus("demo", "v2", "local://demo/v2", "ready",
                              (WorkerInfo("w1", "ready", 12.5), WorkerInfo("w2", "starting")), ("apt: ffmpeg",))
    assert [(line.part, line.text) for line in events.deployment_lines(status)] == [
        ("header", "vast_magic demo (tag v2): ready"), ("body", "endpoint local://demo/v2"),
        ("worker", "worker w1: ready perf=12.5/s"), ("worker", "worker w2: starting"),
        ("body", "not applied locally: apt: ffmpeg")]
    assert events.format_deployment_status(status).splitlines()[0] == "vast_magic demo (tag v2): ready"
    assert events.deployment_summary(status) == "demo\tv2\tready\t1/2 ready\tlocal://demo/v2"


def test_deployment_lines_show_the_services_and_vast_worker_status():
    from vast_magic.reports import DeploymentStatus, WorkerInfo
    status = DeploymentStatus("demo", "default", "vast endpoint 9", "deploying",
                              (WorkerInfo("4", "starting", detail="model_loading"),),
                              services=(("webserver", "http://127.0.0.1:1"), ("autoscaler", "http://127.0.0.1:2")))
    assert [line.text for line in events.deployment_lines(status)][1:] == [
        "endpoint vast endpoint 9", "webserver http://127.0.0.1:1, autoscaler http://127.0.0.1:2",
        "worker 4: starting (vast: model_loading)"]


@pytest.mark.parametrize("env, explicit, shown", [
    ({}, {}, ("https://console.vast.ai", "https://run.vast.ai")),
    ({"VAST_MAGIC_VAST_URL": "http://127.0.0.1:9/", "VAST_MAGIC_AUTOSCALER_URL": "http://[::1]:8"}, {},
     ("http://127.0.0.1:9", "http://[::1]:8")),
    ({"VAST_MAGIC_VAST_URL": "http://127.0.0.1:9"}, {"vast_url": "https://vast.example.com/"},
     ("https://vast.example.com", "https://run.vast.ai")),
])
def test_endpoint_urls_resolve_like_every_setting_and_show_in_repr(clean_settings, monkeypatch, env, explicit, shown):
    from vast_magic import Deployment
    for name in ("VAST_MAGIC_VAST_URL", "VAST_MAGIC_AUTOSCALER_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = Deployment(name="d", backend="vast", **explicit)
    assert (app.vast_url, app.autoscaler_url) == shown
    assert repr(app) == (f"Deployment(name='d', tag='default', backend='vast', vast_url={shown[0]!r}, "
                         f"autoscaler_url={shown[1]!r})")
    assert repr(Deployment(name="d", backend="local")) == "Deployment(name='d', tag='default', backend='local')"


# -- Secret -----------------------------------------------------------------------
def test_secret_never_renders(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecret")
    secret = Secret.from_env("HF_TOKEN")
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"k": secret})):
        assert "hf_supersecret" not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    assert secret.digest(b"k1") != secret.digest(b"k2") and "hf_supersecret" not in secret.digest(b"k1")


def test_secret_from_missing_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="environment variable NOPE_TOKEN is not set"):
        Secret.from_env("NOPE_TOKEN")


def test_a_worker_from_a_newer_engine_keeps_the_fields_this_client_knows():
    info = WorkerInfo.from_wire({"id": "w1", "state": "ready", "perf": 2.0, "start": "forked", "added_later": 1})
    assert info == WorkerInfo("w1", "ready", perf=2.0, start="forked")
