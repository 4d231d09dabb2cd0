"""WorkerApp, load_bundle and contexts: what user code sees on the worker."""
from __future__ import annotations

import asyncio
import sys

import pytest

from vast_magic.runtime import contexts, registry
from tests.runtime.worker_harness import remote_spec, write_bundle

APP = """
import asyncio
from vast_magic.runtime.registry import worker_app
app = worker_app()
ORDER = []

class Point:
    pass

class Ctx:
    def __init__(self, name, delay=0.3, fail=False):
        self.name, self.delay, self.fail = name, delay, fail
    async def __aenter__(self):
        ORDER.append(("start", self.name))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError(f"{self.name} cannot start")
        ORDER.append(("enter", self.name))
        return self.name.upper()
    async def __aexit__(self, *exc):
        ORDER.append(("exit", self.name))

def Fast(): return Ctx("fast", 0.0)

@app.remote(benchmark_dataset=[{"x": 1}])
async def square(x):
    return x * x

def cost(x):
    return float(x)
"""


@pytest.fixture()
def loaded(tmp_path):
    """Load a bundle from tmp_path, and forget its module afterwards (each test gets a fresh one)."""
    def load(contexts_=(), remotes=(remote_spec("square", workload_calculator="cost"),), classes=("Point",)):
        write_bundle(tmp_path, APP, remotes=remotes, contexts=contexts_, classes=classes)
        return registry.load_bundle(str(tmp_path))
    yield load
    sys.modules.pop("vast_magic_app", None)
    sys.path.remove(str(tmp_path)) if str(tmp_path) in sys.path else None
    registry.worker_app().set_contexts(None)


def test_load_bundle_resolves_functions_helpers_and_classes(loaded):
    app = loaded()
    entry = app.remotes["square"]
    assert entry.function.__name__ == "square" and entry.workload_calculator(3) == 3.0
    module = app.modules["vast_magic_app"]
    assert app.classes == {"vast_magic_app:Point": module.Point}
    assert app.class_refs == {module.Point: "vast_magic_app:Point"}
    assert entry.option("benchmark_runs") == 10 and entry.option("missing", 5) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"remotes": [remote_spec("nope")]}, "remote function 'nope'"),
    ({"remotes": [remote_spec("square", workload_calculator="gone")]}, "workload calculator 'gone'"),
    ({"classes": ["Ghost"]}, "shipped class 'Ghost'"),
    ({"contexts_": [{"name": "Missing", "args": [], "kwargs": {}}]}, "context class 'Missing'"),
])
def test_load_bundle_names_what_is_missing(loaded, kwargs, message):
    with pytest.raises(LookupError, match=message):
        loaded(**kwargs)


def test_worker_app_decorators_are_identities_and_builders_no_ops():
    app = registry.worker_app()
    assert app is registry.worker_app()

    def f():
        pass
    assert app.remote(f) is f and app.remote(benchmark_runs=3)(f) is f
    assert app.context(f) is f and app.context("arg", k=1)(f) is f
    image = app.image("x", storage=10)
    assert image.pip_install("a").apt_get("b").env(A=1) is image
    assert app.configure_autoscaling(max_workers=3) is None


def test_get_context_errors_are_clear():
    app = registry.WorkerApp()
    with pytest.raises(KeyError, match="before the worker entered its contexts"):
        app.get_context("Model")
    app.set_contexts({"Model": 1})
    assert app.get_context("Model") == 1
    with pytest.raises(KeyError, match=r"no context named 'Other' .*registered: Model"):
        app.get_context(type("Other", (), {}))


def test_contexts_enter_in_parallel_and_exit_once(loaded):
    app = loaded([{"name": "Ctx", "args": ["a"], "kwargs": {"delay": 0.3}}])
    module = app.modules["vast_magic_app"]
    app.context_classes["Ctx2"] = module.Ctx       # a second context class, same behaviour
    app.contexts.append({"name": "Ctx2", "args": ["b"], "kwargs": {"delay": 0.3}})

    async def scenario():
        entered = await contexts.enter_all(app)
        values = registry.worker_app().get_context("Ctx"), registry.worker_app().get_context("Ctx2")
        assert await entered.exit_all(timeout=1) == [] and await entered.exit_all(timeout=1) == []
        return values

    assert asyncio.run(scenario()) == ("A", "B")
    # in parallel: both started before either finished entering (one after the other: start, enter, start, enter)
    assert sorted(module.ORDER[:2]) == [("start", "a"), ("start", "b")]
    assert sorted(module.ORDER[2:]) == [("enter", "a"), ("enter", "b"), ("exit", "a"), ("exit", "b")]
    with pytest.raises(KeyError):
        registry.worker_app().get_context("Ctx")


def test_a_failing_context_exits_the_others_and_carries_the_traceback(loaded):
    app = loaded([{"name": "Ctx", "args": ["good"], "kwargs": {}}])
    module = app.modules["vast_magic_app"]
    app.context_classes["Bad"] = module.Ctx
    app.contexts.append({"name": "Bad", "args": ["bad"], "kwargs": {"fail": True}})
    with pytest.raises(contexts.ContextError, match=r"(?s)context Bad failed to enter.*OSError: bad cannot start"):
        asyncio.run(contexts.enter_all(app))
    assert [step for step in module.ORDER if step[0] != "start"] == [("enter", "good"), ("exit", "good")]


def test_a_context_that_cannot_be_created(loaded):
    app = loaded([{"name": "Ctx", "args": [], "kwargs": {}}])       # missing the name argument
    with pytest.raises(contexts.ContextError, match=r"(?s)could not be created.*TypeError"):
        asyncio.run(contexts.enter_all(app))
