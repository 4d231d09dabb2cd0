"""The deploy pipeline reads a frozen snapshot of the Deployment; remote functions call through its Caller.

A deploy works on ``Deployment._snapshot()`` (a ``DeploymentSnapshot``), never on
the live object, so what is captured, decided and applied is one view of it; the
``Caller`` holds what the last deploy made callable and checks each call against it.
Backend ``vast`` runs against the fake Vast API (no processes, no network).
"""
from __future__ import annotations

import re

import pytest

from vast_magic import Deployment
from vast_magic.caller import Caller
from vast_magic.deploy_pipeline import DeployPipeline, DeploymentSnapshot
from vast_magic.errors import ConfigError
from vast_magic.testing import FakeVast

KEY = "user-key-0123456789"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")


def square(x):
    return x * x


def cube(x):
    return x ** 3


class Model:
    def __init__(self, size):
        self.size = size

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def declared(**options) -> Deployment:
    app = Deployment(name="snap", **options)
    app.image(storage=20).pip_install("numpy")
    app.remote(benchmark_dataset=[{"x": 2}])(square)
    app.context(size=1)(Model)
    app.configure_autoscaling(max_workers=2)
    return app


def manifest_of(snapshot: DeploymentSnapshot) -> str:
    return DeployPipeline(Caller(lambda: "a test")).prepare(snapshot).manifest.to_json()


def test_a_deploy_reads_the_snapshot_not_the_live_deployment():
    app = declared()
    snapshot = app._snapshot()
    before = manifest_of(snapshot)
    app.remote(cube)
    app.image(storage=40)
    app.configure_autoscaling(max_workers=3)
    app.tag = "canary"
    assert manifest_of(snapshot) == before                 # what was taken is what deploys
    assert app.manifest().to_json() != before              # the live deployment did change


def test_a_snapshot_built_as_data_deploys_like_the_deployment_it_describes():
    app = declared()
    taken = app._snapshot()
    (_, _, options), = taken.functions
    built = DeploymentSnapshot(label="built", name="snap", tag="default", backend="local", ttl=None,
                               version_label=None, image=taken.image, autoscaling=taken.autoscaling,
                               functions=(("square", square, options),), contexts=taken.contexts)
    assert manifest_of(built) == app.manifest().to_json()


@pytest.mark.parametrize("backend, key, transport", [("local", None, False), ("vast", KEY, True)])
def test_the_api_key_and_transport_are_taken_for_vast_only_and_the_key_never_shown(backend, key, transport):
    given = FakeVast(api_key=KEY).transport()
    snapshot = declared(backend=backend, api_key=KEY, transport=given)._snapshot()
    assert (snapshot.api_key, snapshot.transport is given) == (key, transport)
    assert KEY not in repr(snapshot)


def test_a_deployment_without_functions_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"^Deployment\(name='empty', tag='default', backend='local'\) has no remote "
                                          r"functions: decorate one with @app\.remote"):
        DeployPipeline(Caller(lambda: "unused")).prepare(Deployment(name="empty")._snapshot())


def test_calls_go_through_the_caller_which_checks_what_was_deployed():
    with FakeVast(api_key=KEY, ready_after=0) as fake:     # its worker runs the uploaded bundle
        _calls_are_checked(declared(backend="vast", api_key=KEY, transport=fake.transport()))


def _calls_are_checked(app):
    proxy = app.functions["square"]
    assert repr(app).startswith("Deployment(name='snap', tag='default', backend='vast'")
    assert repr(proxy) == f"<remote function square(x) on {app!r}>"
    with pytest.raises(ConfigError, match=rf"^square\(\) was called before {re.escape(repr(app))} was deployed in this "
                                          r"process; run app\.ensure_ready\(\)"):
        proxy.call(3)
    app.ensure_ready()
    assert proxy.call(3) == 9
    late = app.remote(cube)                                # registered after the deploy: not callable yet
    with pytest.raises(ConfigError, match=r"^cube is not part of the deployed version; "
                                          r"run app\.ensure_ready\(\) again"):
        late.call(2)
    app.teardown()
    with pytest.raises(ConfigError, match=r"^square\(\) was called before"):
        proxy.call(3)
