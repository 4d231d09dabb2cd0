"""Bad input, one table: the Python API, the CLI and the magics.

Each row does one wrong thing and names the error type and a message that
says what to do next. Rows marked ``after_deploy`` run while a real
deployment serves (one engine for the module); after each of them the
deployment must still answer with the same worker processes: nothing lost.
"""
from __future__ import annotations

import contextlib
import io
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from tests.backends.local.engine_harness import Harness
from vast_magic import Deployment, Secret, cli, loop, query, settings
from vast_magic.errors import BackendError, CaptureError, ConfigError

APP_FILE = '''
import threading
from vast_magic import Deployment, Secret

app = Deployment(name="badinput")
app.configure_autoscaling(cold_workers=1, max_workers=1)

@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    return x * x

@app.remote(timeout=5)
def add(a, b=1):
    return a + b

v2_undefined = Deployment(name="badinput")
@v2_undefined.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square_undefined(x):
    return x * NOT_DEFINED_ANYWHERE

v2_two_benchmarks = Deployment(name="badinput")
@v2_two_benchmarks.remote(benchmark_dataset=[{"x": 2}])
async def one(x):
    return x
@v2_two_benchmarks.remote(benchmark_dataset=[{"x": 2}])
async def two(x):
    return x

v2_no_benchmark = Deployment(name="badinput")
@v2_no_benchmark.remote
async def plain(x):
    return x

API_TOKEN = Secret("not-to-be-shipped")
v2_secret = Deployment(name="badinput")
@v2_secret.remote(benchmark_dataset=[{"x": 2}])
async def leaky(x):
    return str(API_TOKEN)

LOCK = threading.Lock()
v2_lock = Deployment(name="badinput")
@v2_lock.remote(benchmark_dataset=[{"x": 2}])
async def locked(x):
    with LOCK:
        return x
'''


class CliFailed(Exception):
    """The CLI exited non-zero; the text is what it wrote to stderr."""


@dataclass
class Ctx:
    served: Any                 # the loaded app module (its Deployments and proxies)
    app_file: str
    tmp: Any
    monkeypatch: pytest.MonkeyPatch

    def cli(self, *argv: str) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:              # argparse: usage + message, exit 2
                code = exc.code
        if code:
            raise CliFailed(err.getvalue())

    def shell(self) -> InteractiveShell:
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        InteractiveShell.clear_instance()
        shell = InteractiveShell.instance(config=config)
        shell.user_ns["__session__"] = str(self.tmp / "bad.ipynb")
        shell.run_line_magic("load_ext", "vast_magic")
        return shell

    def cell(self, magic: str, line: str, body: str) -> InteractiveShell:
        shell = self.shell()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            shell.run_cell_magic(magic, line, body)
        return shell

    def home_with(self, name: str, content: bytes) -> None:
        """A fresh home holding one broken file; settings and the engine read it from there."""
        home = self.tmp / f"home-{name}"
        home.mkdir(mode=0o700)
        (home / name).write_bytes(content)
        self.monkeypatch.setenv("VAST_MAGIC_HOME", str(home))


def _fresh(**options) -> Deployment:
    app = Deployment(name="fresh")
    app.configure_autoscaling(**options)
    return app


def _with_remote(**options):
    app = Deployment(name="fresh")

    def f(x):
        return x
    return app.remote(**options)(f)


def _deploy_square(ctx: Ctx, **options) -> None:
    """A new Deployment of the served module's ``square`` (its source ships as a session module's)."""
    app = Deployment(name="square-again", **options)
    app.remote(benchmark_dataset=[{"x": 1}])(ctx.served.square.local)
    app.ensure_ready()


def _vast_without_key(ctx: Ctx) -> None:
    ctx.monkeypatch.delenv("VAST_API_KEY", raising=False)
    ctx.monkeypatch.setenv("HOME", str(ctx.tmp))
    ctx.monkeypatch.setenv("XDG_CONFIG_HOME", str(ctx.tmp / "config"))
    _deploy_square(ctx, backend="vast")


def _context_without_aenter(ctx: Ctx) -> None:
    class Model:
        def __init__(self):
            self.ready = True
    Deployment(name="fresh").context()(Model)


def _call_before_deploy(ctx: Ctx) -> None:
    _with_remote(benchmark_dataset=[{"x": 1}]).call(1)


def _generator_remote():
    app = Deployment(name="fresh")

    async def tokens(n):
        yield n
    return app.remote(tokens)


def _magic_teardown_typo(ctx: Ctx) -> None:
    shell = ctx.shell()
    shell.run_cell("from vast_magic import Deployment\ntypo = Deployment(name='badinptu')")
    shell.run_line_magic("vast_teardown", "--app typo --all-tags")


def _magic_cell_raises(ctx: Ctx) -> None:
    shell = ctx.shell()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            shell.run_cell_magic("vast_remote", "", "def f(x):\n    return x\nnot_defined_here()\n")
        finally:
            from vast_magic.notebook.magics import get_session
            assert get_session(shell).app.functions == {}        # registers nothing


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Ctx], Any]
    error: type | tuple
    message: str                  # regex over str(error): what was wrong and what to do
    after_deploy: bool = False


CASES = [
    # -- Python API: declaring --------------------------------------------------------------
    Case("deployment name", lambda c: Deployment(name="bad name!"), ConfigError, r"use 1-100 letters, digits"),
    Case("ttl negative", lambda c: Deployment(name="x", ttl=-5), ConfigError, r"ttl must be a positive number"),
    Case("backend unknown", lambda c: Deployment(name="x", backend="gcp"), ConfigError, r"expected one of local, vast"),
    Case("query value type", lambda c: query.gpu_ram >= "lots", ConfigError, r"gpu_ram expects a number \(in GB\), e\.g\."),
    Case("query unknown column", lambda c: query.Column("gpu_rams"), ConfigError, r"did you mean gpu_ram\?"),
    Case("query chained", lambda c: 1 < query.num_gpus < 4, ConfigError, r"wrap each comparison in parentheses"),
    Case("query or", lambda c: (query.gpu_ram >= 24) | (query.num_gpus > 1), ConfigError, r"use \.in_\(\[\.\.\.\]\)"),
    Case("requirement code", lambda c: query.parse_requirement("__import__('os')"), ConfigError,
         r"write comparisons of a column"),
    Case("autoscaling max 0", lambda c: _fresh(max_workers=0), ConfigError, r"use cold_workers=0 to scale to zero"),
    Case("autoscaling cold > max", lambda c: _fresh(cold_workers=5, max_workers=2), ConfigError,
         r"raise max_workers to at least 5"),
    Case("autoscaling typo", lambda c: _fresh(max_worker=2), ConfigError, r"did you mean max_workers\?"),
    Case("autoscaling util", lambda c: _fresh(target_util=1.5), ConfigError, r"must be in \(0, 1\]"),
    Case("retries negative", lambda c: _with_remote(retries=-1), ConfigError, r"whole number >= 0"),
    Case("timeout zero", lambda c: _with_remote(timeout=0), ConfigError, r"timeout must be a positive number"),
    Case("dataset keys", lambda c: _with_remote(benchmark_dataset=[{"y": 1}]), ConfigError,
         r"Use the function's parameter names as keys"),
    Case("dataset a string", lambda c: _with_remote(benchmark_dataset="x=1"), ConfigError, r"must be a list of dicts"),
    Case("remote option typo", lambda c: _with_remote(retry=2), ConfigError, r"unknown option\(s\) retry; known:"),
    Case("context not async", _context_without_aenter, ConfigError, r"must define __aenter__ and __aexit__"),
    Case("no functions", lambda c: Deployment(name="empty").ensure_ready(), ConfigError, r"decorate one with @app\.remote"),
    Case("call before deploy", _call_before_deploy, ConfigError, r"run app\.ensure_ready\(\)"),
    Case("spawn before deploy", lambda c: _with_remote().spawn(1), ConfigError, r"run app\.ensure_ready\(\)"),
    Case("stream a plain function", lambda c: _with_remote().stream(1), TypeError,
         r"^f does not yield: call it with `await f\(\.\.\.\)` or `f\.call\(\.\.\.\)`"),
    Case("call a generator", lambda c: _generator_remote().call(1), TypeError,
         r"^tokens yields items: consume it with `for x in tokens\.stream\(\.\.\.\)`"),
    Case("starmap of numbers", lambda c: _with_remote().starmap([1, 2]), TypeError,
         r"^f\.starmap takes an iterable of argument tuples; item 0 is int, e\.g\. f\.starmap"),
    Case("secret env unset", lambda c: Secret.from_env("VAST_MAGIC_SURELY_UNSET"), ConfigError, r"export it first"),
    Case("image storage", lambda c: Deployment(name="x").image(storage=-1), ConfigError, r"e\.g\. storage=16"),
    Case("image env value", lambda c: Deployment(name="x").image().env(K=3), ConfigError, r"write K='3'"),
    Case("image env line break", lambda c: Deployment(name="x").image().env(K="a\nb"), ConfigError,
         r"env K: the value contains a newline, so Vast's env string cannot carry it"),
    Case("image env both quotes", lambda c: Deployment(name="x").image().env(K=Secret("it's \"x\"")), ConfigError,
         r"env K: the value contains both kinds of quote"),
    Case("logs tail", lambda c: Deployment(name="x").logs(tail=0), ConfigError, r"tail must be a whole number >= 1"),
    Case("setting from env", lambda c: (c.monkeypatch.setenv("VAST_MAGIC_DEPLOY_TIMEOUT", "soon"),
                                        settings.resolve("deploy_timeout")), ConfigError,
         r"from VAST_MAGIC_DEPLOY_TIMEOUT is invalid"),
    Case("vast without API key", _vast_without_key, ConfigError, r"set VAST_API_KEY"),
    Case("vast_url plain http", lambda c: Deployment(name="x", vast_url="http://vast.example.com"), ConfigError,
         r"vast_url='http://vast.example.com' from argument is invalid: plain http:// is accepted only for "
         r"loopback addresses .* use https://"),
    Case("autoscaler_url not a url", lambda c: Deployment(name="x", autoscaler_url="run.vast.ai"), ConfigError,
         r"autoscaler_url='run.vast.ai' from argument is invalid: expected a base URL like https://"),
    Case("vast_url with a key in it", lambda c: Deployment(name="x", vast_url="https://me:pw@console.vast.ai"),
         ConfigError, r"write only scheme, host, port and path"),
    Case("vast_url from env", lambda c: (c.monkeypatch.setenv("VAST_MAGIC_VAST_URL", "http://10.1.2.3:8080"),
                                         repr(Deployment(name="x", backend="vast"))), ConfigError,
         r"from VAST_MAGIC_VAST_URL is invalid: plain http://"),
    Case("fast polls against Vast", lambda c: (c.monkeypatch.setenv("VAST_MAGIC_VAST_POLL_INTERVAL", "0.5"),
                                               _deploy_square(c, backend="vast", api_key="k")), ConfigError,
         r"vast_poll_interval=0.5 is below 5s: Vast rate-limits get_endpoint_workers, so shorter intervals are "
         r"only for a loopback autoscaler"),
    Case("corrupt state file", lambda c: (c.home_with("state.db", b"garbage, not sqlite" * 10),
                                          Deployment(name="x").status()), BackendError,
         r"move the file aside .* and deploy again"),
    Case("corrupt token", lambda c: (c.home_with("token", b""), _deploy_square(c)), BackendError,
         r"delete the file and retry"),
    # -- Python API with a deployment serving -----------------------------------------------
    Case("too many arguments", lambda c: c.served.add.call(1, 2, 3), TypeError, r"add\(a, b=1\): too many", True),
    Case("missing argument", lambda c: c.served.square.call(), TypeError, r"square\(x\): missing .* 'x'", True),
    Case("get_call unknown id", lambda c: c.served.app.get_call("call-nope"), ConfigError,
         r"^the local engine has no call 'call-nope': it keeps a finished call's result for 1 h", True),
    Case("unpicklable argument", lambda c: c.served.square.call(threading.Lock()), CaptureError,
         r"cannot pickle .* Pass plain data", True),
    Case("call timeout negative", lambda c: loop.run_sync(c.served.square.with_timeout(-1)(3)), ConfigError,
         r"e\.g\. f\.with_timeout\(30\)", True),
    Case("undefined name", lambda c: c.served.v2_undefined.ensure_ready(), CaptureError,
         r"NOT_DEFINED_ANYWHERE.*Run the cell that defines", True),
    Case("two benchmarks", lambda c: c.served.v2_two_benchmarks.ensure_ready(), ConfigError,
         r"Exactly one remote function must define benchmark_dataset", True),
    Case("no benchmark", lambda c: c.served.v2_no_benchmark.ensure_ready(), ConfigError, r"found: none", True),
    Case("secret in closure", lambda c: c.served.v2_secret.ensure_ready(), CaptureError, r"API_TOKEN", True),
    Case("lock in closure", lambda c: c.served.v2_lock.ensure_ready(), CaptureError, r"LOCK", True),
    # -- CLI --------------------------------------------------------------------------------
    Case("cli not a .py", lambda c: c.cli("deploy", "notes.txt"), CliFailed,
         r"ConfigError: notes\.txt is neither a \.py file nor an importable module", True),
    Case("cli not a module name", lambda c: c.cli("deploy", "not-a-module"), CliFailed,
         r"not-a-module is neither a \.py file nor a module name; pass path/to/app\.py or pkg\.module\[:name\]", True),
    Case("cli missing .py", lambda c: c.cli("deploy", "missing.py"), CliFailed,
         r"missing\.py is not a \.py file; pass the script", True),
    Case("cli many deployments", lambda c: c.cli("deploy", c.app_file), CliFailed,
         r"defines 6 Deployments .*choose one with .*app\.py:NAME \(or --app NAME\)", True),
    Case("cli two names", lambda c: c.cli("deploy", c.app_file + ":app", "--app", "other"), CliFailed,
         r"names Deployment 'app' but --app says 'other'; give one of them", True),
    Case("cli unknown :name", lambda c: c.cli("bundle", "app:nope", "-o", "x.tar.gz"), CliFailed,
         r"app has no Deployment named 'nope'; found: app", True),
    Case("cli unknown --app", lambda c: c.cli("deploy", c.app_file, "--app", "nope"), CliFailed,
         r"has no Deployment named 'nope'; found: app", True),
    Case("cli status unknown name", lambda c: c.cli("status", "nope"), CliFailed, r"`vast-magic ls` lists", True),
    Case("cli logs unknown name", lambda c: c.cli("logs", "nope"), CliFailed, r"`vast-magic ls` lists", True),
    Case("cli teardown typo", lambda c: c.cli("teardown", "badinptu"), CliFailed,
         r"^vast-magic teardown: there is no deployment badinptu/default on the local engine; known, closest first: "
         r"badinput/default \(`vast-magic ls` lists them\)\. Pass --tag T", True),
    Case("cli status unknown tag", lambda c: c.cli("status", "badinput", "--tag", "v2"), CliFailed,
         r"no deployment badinput/v2 on the local engine; known, closest first: badinput/default", True),
    Case("cli teardown all tags typo", lambda c: c.cli("teardown", "badinpu", "--all-tags"), CliFailed,
         r"no deployment badinpu on the local engine; known, closest first: badinput \(", True),
    Case("cli engine action", lambda c: c.cli("engine", "restart"), CliFailed, r"usage: .*invalid choice: 'restart'"),
    Case("cli bundle no output", lambda c: c.cli("bundle", "app.py"), CliFailed, r"usage: .*required: -o/--output"),
    # -- magics (a real IPython shell) ----------------------------------------------------------
    Case("magic image missing", lambda c: c.shell().run_line_magic("vast_image", ""), UsageError,
         r"arguments are required: image.*%vast_image \[--storage GB\]"),
    Case("magic env pair", lambda c: c.shell().run_line_magic("vast_image", "img --env NOEQUALS"), UsageError,
         r"write environment variables as KEY=VALUE"),
    Case("magic remote no function", lambda c: c.cell("vast_remote", "", "x = 1\n"), UsageError,
         r"defines no public top-level function to register; define one"),
    Case("magic benchmark syntax", lambda c: c.cell("vast_remote", "--benchmark [{", "def f(x):\n    return x\n"),
         UsageError, r"is not a Python expression"),
    Case("magic context two classes", lambda c: c.cell(
        "vast_context", "", "class A:\n    async def __aenter__(self): return self\n"
        "    async def __aexit__(self, *e): return False\nclass B(A):\n    pass\n"), UsageError, r"2 context classes"),
    Case("magic deploy option", lambda c: c.shell().run_line_magic("vast_deploy", "--bogus"), UsageError,
         r"unrecognized arguments: --bogus.*%vast_deploy \[--app VAR\]"),
    Case("magic cell raises", _magic_cell_raises, NameError, r"not_defined_here"),
    Case("magic status never deployed", lambda c: c.shell().run_line_magic("vast_status", ""), UsageError,
         r"^%vast_status: there is no deployment bad/default on the local engine; known, closest first: "
         r"badinput/default .*vast_app\.configure\(name=\.\.\., tag=\.\.\.\)", True),
    Case("magic logs never deployed", lambda c: c.shell().run_line_magic("vast_logs", "square"), UsageError,
         r"^%vast_logs: there is no deployment bad/default .*closest first: badinput/default", True),
    Case("magic teardown typo", _magic_teardown_typo, UsageError,
         r"^%vast_teardown: there is no deployment badinptu on the local engine; known, closest first: badinput "
         r".*typo\.configure\(name=", True),
    Case("magic benchmark neither form", lambda c: c.cell("vast_remote", "--benchmark [{'x': y_undefined}]",
                                                          "def f(x):\n    return x\n"), UsageError,
         r"--benchmark \"\[\{'x': y_undefined\}\]\" failed: NameError: name 'y_undefined' is not defined; write it "
         r"as in Python, --benchmark \[\{'x': 2\}, \{'x': 3\}\], or quoted whole, --benchmark \"\[\{'x': 2\}"),
    Case("magic benchmark open quote", lambda c: c.cell("vast_remote", "--benchmark \"[{'x': 1}]",
                                                        "def f(x):\n    return x\n"), UsageError,
         r"is not a Python expression; write it as in Python, --benchmark \[\{'x': 2\}, \{'x': 3\}\], or quoted"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One real deployment for the module, in a private home; every pid checked at the end."""
    folder = tmp_path_factory.mktemp("bad-input")
    home = folder / "home"
    home.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"VAST_MAGIC_HOME": str(home), "VAST_MAGIC_DISPLAY": "text",
                           "VAST_MAGIC_ENGINE_IDLE_TIMEOUT": "120", "IPYTHONDIR": str(folder / "ipython")}.items():
            mp.setenv(key, value)
        mp.chdir(folder)
        (folder / "app.py").write_text(APP_FILE)
        handle = Harness(home, folder)          # collects every engine/worker pid; close() proves them gone
        try:
            module = cli.import_target(str(folder / "app.py"))
            assert module.app.ensure_ready().tier == 4
            handle.collect()
            yield module, str(folder / "app.py"), home
        finally:
            settings.set_config_source(None)
            InteractiveShell.clear_instance()
            handle.close()


def test_table_is_big_enough():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {"api", "cli", "magic"} <= {("cli" if c.id.startswith("cli") else "magic" if c.id.startswith("magic")
                                        else "api") for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, served, tmp_path, monkeypatch):
    module, app_file, home = served
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.py").write_text(APP_FILE)
    before = {(w.id, w.pid) for w in module.app.status().workers if w.state == "ready"}
    ctx = Ctx(module, app_file, tmp_path, monkeypatch)
    try:
        with pytest.raises(case.error) as info:
            case.run(ctx)
    finally:
        settings.set_config_source(None)
        InteractiveShell.clear_instance()
    assert re.search(case.message, str(info.value), re.S), str(info.value)
    if case.after_deploy:
        monkeypatch.setenv("VAST_MAGIC_HOME", str(home))
        assert module.square.call(3) == 9                          # the previous deployment still serves ...
        status = module.app.status()
        assert status.state == "ready"
        assert {(w.id, w.pid) for w in status.workers if w.state == "ready"} == before   # ... untouched
