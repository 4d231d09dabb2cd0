"""The IPython magics, driven through a real InteractiveShell."""
from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from vast_magic import settings
from vast_magic.display import resolve_display_mode
from vast_magic.errors import ConfigError
from vast_magic.reports import DeployReport
from vast_magic.notebook.magics import get_session


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("VAST_MAGIC_DISPLAY", raising=False)
    monkeypatch.delenv("VAST_MAGIC_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    settings.set_config_source(None)
    yield
    settings.set_config_source(None)


def make_shell(**user_ns) -> InteractiveShell:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    shell.user_ns.update(user_ns)
    return shell


@pytest.fixture
def shell():
    shell = make_shell(__session__="/home/me/work/My Demo (1).ipynb")
    shell.run_line_magic("load_ext", "vast_magic")
    yield shell
    shell.run_line_magic("unload_ext", "vast_magic")
    InteractiveShell.clear_instance()


@pytest.fixture
def app(shell):
    return get_session(shell).app


SQUARE = "def square(x):\n    return x * x\n"
TWO = SQUARE + "def cube(x):\n    return x ** 3\n"
CONTEXT = ("class Model:\n    def __init__(self, model_id, size=1):\n        self.model_id = model_id\n"
           "    async def __aenter__(self):\n        return self\n    async def __aexit__(self, *exc):\n        return False\n")

# (magic, line, cell or None for line magics, message, the usage line is shown)
BAD_ARGUMENTS = [
    ("vast_deploy", "--bogus", None, "unrecognized arguments: --bogus", True),
    ("vast_deploy", "--ttl soon", None, "argument --ttl: invalid float value: 'soon'", True),
    ("vast_deploy", "--backend aws", None, "argument --backend: invalid choice: 'aws'", True),
    ("vast_deploy", "--timeout", None, "argument --timeout: expected one argument", True),
    ("vast_deploy", "--app nothere", None, "--app nothere: there is no variable 'nothere'", False),
    ("vast_deploy", "--app number", None, "--app number: number is a int, not a vast_magic Deployment", False),
    ("vast_deploy", "--watch --dry-run", None, "--watch redeploys, --dry-run changes nothing: give one of them", True),
    ("vast_deploy", "--watch", None, "%vast_deploy --watch runs as a task on the kernel's event loop, and this shell "
                                     "has none running (a terminal IPython)", False),
    ("vast_image", "", None, "the following arguments are required: image", True),
    ("vast_image", "img --storage big", None, "argument --storage: invalid float value: 'big'", True),
    ("vast_image", 'img --pip "unclosed', None, "No closing quotation", True),
    ("vast_image", "img --env NOEQUALS", None, "--env 'NOEQUALS': write environment variables as KEY=VALUE", False),
    ("vast_image", "img --env 1A=2", None, "--env '1A=2': write environment variables as KEY=VALUE", False),
    ("vast_status", "extra", None, "unrecognized arguments: extra", True),
    ("vast_logs", "--tail x", None, "argument --tail: invalid int value: 'x'", True),
    ("vast_logs", "square other", None, "unrecognized arguments: other", True),
    ("vast_teardown", "--everything", None, "unrecognized arguments: --everything", True),
    ("vast_remote", "--retries x", SQUARE, "argument --retries: invalid int value: 'x'", True),
    ("vast_remote", "--benchmark-runs", SQUARE, "argument --benchmark-runs: expected one argument", True),
    ("vast_remote", "--parallel --serial", SQUARE, "give --parallel or --serial, not both", True),
    ("vast_remote", "--app nothere", SQUARE, "--app nothere: there is no variable 'nothere'", False),
    ("vast_remote", "--function cube", SQUARE, "--function cube: the cell defines no top-level function cube; "
                                               "it defines: square", False),
    ("vast_remote", "", "x = 1\ndef _helper():\n    pass\n", "defines no public top-level function to register; "
                                                           "define one", False),
    ("vast_remote", "--benchmark [", SQUARE, "--benchmark '[' is not a Python expression; write it as in Python",
     False),
    ("vast_remote", "--benchmark missing", SQUARE, "--benchmark 'missing' failed: NameError", False),
    ("vast_remote", "--benchmark [{'x': nope}]", SQUARE, "--benchmark \"[{'x': nope}]\" failed: NameError: name "
                                                        "'nope' is not defined; write it as in Python", False),
    ("vast_remote", "--benchmark", SQUARE, "argument --benchmark: expected one argument", True),
    ("vast_remote", "--benchmark [{'x':1}]", TWO, "--benchmark applies to one function but the cell registers "
                                                 "square, cube", False),
    ("vast_remote", "--workload nope", SQUARE, "--workload nope: there is no function 'nope'", False),
    ("vast_context", "--bogus 1", CONTEXT, "unrecognized arguments: --bogus", True),
    ("vast_context", "--app", CONTEXT, "argument --app: expected one argument", True),
    ("vast_context", "model_id=", CONTEXT, "not valid call arguments", False),
    ("vast_context", "model_id=undefined_name", CONTEXT, "failed: NameError: name 'undefined_name' is not defined", False),
    ("vast_context", "model_id='m'", "x = 1\n", "defines no async context-manager class; define one class", False),
    ("vast_context", "model_id='m'", CONTEXT + CONTEXT.replace("Model", "Other"),
     "defines 2 context classes (Model, Other)", False),
]


@pytest.mark.parametrize("magic, line, cell, message, usage", BAD_ARGUMENTS,
                         ids=[f"{m} {line!s}"[:60] for m, line, *_ in BAD_ARGUMENTS])
def test_bad_arguments_are_usage_errors(shell, app, magic, line, cell, message, usage):
    shell.user_ns["number"] = 3
    with pytest.raises(UsageError) as info:
        if cell is None:
            shell.run_line_magic(magic, line)
        else:
            shell.run_cell_magic(magic, line, cell)
    assert message in str(info.value)
    assert (f"%{magic} [" in str(info.value)) == usage
    assert app.functions == {} and app.contexts == {}  # nothing registered by a refused magic


@pytest.mark.parametrize("magic, text", [
    ("vast_deploy", ["Build the bundle", "--app VAR", "--name N", "--tag T", "--ttl S", "--backend B",
                     "--dry-run", "--no-wait", "--timeout S", "--watch"]),
    ("vast_image", ["Set the session deployment's image", "--storage GB", "--pip P", "--apt P", "--env K=V",
                    "--require EXPR", "--offers", "--pricing MODE"]),
    ("vast_remote", ["Run the cell, then register", "--function NAME", "--benchmark EXPR", "--benchmark-runs N",
                     "--workload VAR", "--parallel", "--serial", "--retries N"]),
    ("vast_context", ["async context-manager class", "CALL ARGS", "--app VAR"]),
    ("vast_logs", ["Print recent worker log lines", "FUNC", "--tail N"]),
    ("vast_teardown", ["safe to run twice", "--all-tags"]),
])
def test_question_mark_help_shows_docstring_and_arguments(shell, magic, text):
    prefix = "%%" if magic in ("vast_remote", "vast_context") else "%"
    shown = shell.object_inspect_text(prefix + magic)
    for fragment in text:
        assert fragment in shown


def test_session_deployment_is_named_after_the_notebook(app):
    assert app.name == "My-Demo-1"


def test_the_session_deployment_is_vast_app_and_the_first_magic_says_so(shell, capsys):
    shell.run_cell_magic("vast_remote", "", SQUARE)
    session = get_session(shell)
    assert shell.user_ns["vast_app"] is session.app and session.variable == "vast_app"
    assert capsys.readouterr().out == ("vast_magic: this notebook's deployment 'My-Demo-1' is `vast_app` (magics "
                                       "without --app use it; e.g. vast_app.configure(name=...), vast_app.status())\n")
    shell.run_cell_magic("vast_remote", "", TWO)
    assert capsys.readouterr().out == ""                     # said once
    assert sorted(shell.user_ns["vast_app"].functions) == ["cube", "square"]


@pytest.mark.parametrize("taken, expected", [
    ({}, "vast_app"),
    ({"vast_app": 42}, "vast_app_2"),                                   # the user's own value is never replaced
    ({"vast_app": "mine", "vast_app_2": None}, "vast_app_3"),
    ({"vast_app": [1], "vast_app_2": {}}, "vast_app_3"),               # unhashable values are theirs too
])
def test_the_session_variable_never_takes_a_users_name(taken, expected):
    from vast_magic import Deployment
    from vast_magic.notebook.actions import session_variable
    assert session_variable(taken, Deployment(name="x")) == expected


def test_a_taken_vast_app_is_said_and_kept(capsys):
    shell = make_shell(__session__="/tmp/clash.ipynb", vast_app=42)
    shell.run_line_magic("load_ext", "vast_magic")
    try:
        app = get_session(shell).app
        assert shell.user_ns["vast_app"] == 42 and shell.user_ns["vast_app_2"] is app
        assert ("vast_magic: vast_app already holds a int of yours, so this notebook's deployment 'clash' is "
                "`vast_app_2`") in capsys.readouterr().out
        shell.run_line_magic("reload_ext", "vast_magic")      # a new session: vast_app_2 was the session's, reused
        again = get_session(shell).app
        assert shell.user_ns["vast_app_2"] is again and again is not app and shell.user_ns["vast_app"] == 42
    finally:
        shell.run_line_magic("unload_ext", "vast_magic")


@pytest.mark.parametrize("user_ns, name", [
    ({"__vsc_ipynb_file__": "c:/x/analysis.v2.ipynb"}, "analysis.v2"),
    ({"__session__": "", "__vsc_ipynb_file__": "/x/vsc.ipynb"}, "vsc"),
])
def test_session_name_sources(user_ns, name):
    shell = make_shell(**user_ns)
    shell.run_line_magic("load_ext", "vast_magic")
    assert get_session(shell).app.name == name
    shell.run_line_magic("unload_ext", "vast_magic")


def test_unknown_notebook_name_warns_and_uses_notebook():
    shell = make_shell()
    shell.run_line_magic("load_ext", "vast_magic")
    with pytest.warns(UserWarning, match="called 'notebook'.*--name"):
        assert get_session(shell).app.name == "notebook"   # warned on first use, not on load
    shell.run_line_magic("unload_ext", "vast_magic")


def test_vast_remote_registers_public_top_level_functions(shell, app):
    cell = SQUARE + "async def fetch(url):\n    return url\ndef _private(y):\n    return y\n" \
                    "if True:\n    def nested(z):\n        return z\n"
    assert shell.run_cell_magic("vast_remote", "--retries 2 --serial", cell) is None
    assert sorted(app.functions) == ["fetch", "square"]
    square = shell.user_ns["square"]
    assert square is app.functions["square"] and square.local(4) == 16
    assert square.options.retries == 2 and square.options.allow_parallel_requests is False
    assert shell.user_ns["_private"](3) == 3 and not hasattr(shell.user_ns["_private"], "local")


def test_vast_remote_function_selection_and_benchmark(shell, app):
    shell.run_cell("def cost(x):\n    return x + 1\n")
    cell = TWO + "def bench():\n    yield {'x': 2}\n"
    shell.run_cell_magic("vast_remote", "--function cube --benchmark bench --benchmark-runs 3 --workload cost", cell)
    assert list(app.functions) == ["cube"]
    cube = shell.user_ns["cube"]
    assert cube.options.benchmark_generator is shell.user_ns["bench"]
    assert cube.options.benchmark_runs == 3 and cube.options.workload_calculator is shell.user_ns["cost"]
    assert not hasattr(shell.user_ns["square"], "local")  # not selected: stays a plain (dependency) function


def test_benchmark_helpers_in_the_cell_are_not_registered(shell, app):
    shell.run_cell_magic("vast_remote", "--benchmark data", SQUARE + "data = [{'x': 1}, {'x': 2}]\n")
    assert app.functions["square"].options.benchmark_dataset == ({"x": 1}, {"x": 2})
    shell.run_cell_magic("vast_remote", "--benchmark gen()", "def f(x):\n    return x\ndef gen():\n    return [{'x': 1}]\n")
    assert sorted(app.functions) == ["f", "square"]


@pytest.mark.parametrize("cell, error", [
    (SQUARE + "raise ValueError('bad cell')\n", ValueError),
    ("def square(x) return x\n", SyntaxError),
])
def test_a_raising_cell_registers_nothing_and_reraises(shell, app, cell, error, capsys):
    with pytest.raises(error) as info:
        shell.run_cell_magic("vast_remote", "", cell)
    assert app.functions == {}
    assert not hasattr(shell.user_ns.get("square"), "local")
    if error is ValueError:  # its traceback was shown by the cell; the magic adds one line, not a second one
        assert "bad cell" in capsys.readouterr().out
        assert info.value._render_traceback_() == [
            "%%vast_remote: nothing was registered because the cell raised ValueError (see above)."]


@pytest.mark.parametrize("line, dataset, runs", [
    ("--benchmark [{'x': 1.0}]", ({"x": 1.0},), 10),                                 # as IPython's magics write it
    ("--benchmark [{'x': 2}, {'x': 3}] --benchmark-runs 3", ({"x": 2}, {"x": 3}), 3),
    ("--benchmark \"[{'x': 2}, {'x': 3}]\"", ({"x": 2}, {"x": 3}), 10),               # quoted whole
    ("--benchmark '[{\"x\": 4}]'", ({"x": 4},), 10),
    ("--benchmark [{\"x\": 5}]", ({"x": 5},), 10),
    ("--benchmark=[{'x': 6}] --serial", ({"x": 6},), 10),
    ("--benchmark-runs 2 --benchmark [{'x': v} for v in (7, 8)]", ({"x": 7}, {"x": 8}), 2),
    ("--benchmark [{'x': known}]  # a comment", ({"x": 9},), 10),       # shell form {x: known} fails: raw is used
    ("--benchmark [{'x': '--not an option'}]", ({"x": "--not an option"},), 10),
])
def test_benchmark_written_either_way(shell, app, line, dataset, runs):
    shell.user_ns["known"] = 9
    shell.run_cell_magic("vast_remote", line, SQUARE)
    options = app.functions["square"].options
    assert (options.benchmark_dataset, options.benchmark_runs) == (dataset, runs)


def test_invalid_options_register_nothing(shell, app):
    with pytest.raises(ConfigError, match="benchmark_dataset"):
        shell.run_cell_magic("vast_remote", "--benchmark \"[{'y': 1}]\"", SQUARE)
    assert app.functions == {}


def test_rerunning_an_edited_cell_replaces_the_registration(shell, app):
    shell.run_cell_magic("vast_remote", "", SQUARE)
    shell.run_cell_magic("vast_remote", "", SQUARE)  # re-running wraps the plain function, not the proxy
    assert shell.user_ns["square"].local(3) == 9
    shell.run_cell_magic("vast_remote", "", SQUARE.replace("x * x", "x * x + 1"))
    assert list(app.functions) == ["square"] and app.functions["square"].local(3) == 10


def test_app_var_targets_a_notebook_deployment(shell, app):
    shell.run_cell("from vast_magic import Deployment\nother = Deployment(name='other')\n")
    shell.run_cell_magic("vast_remote", "--app other", SQUARE)
    shell.run_cell_magic("vast_context", "--app other model_id='m'", CONTEXT)
    other = shell.user_ns["other"]
    assert list(other.functions) == ["square"] and list(other.contexts) == ["Model"]
    assert app.functions == {} and app.contexts == {}


@pytest.mark.parametrize("line, args, kwargs", [
    ("model_id='model-a', size=3", (), (("model_id", "model-a"), ("size", 3))),
    ("'model-b'", ("model-b",), ()),
    ("--app app_var  MODEL, size=n * 2", ("m",), (("size", 4),)),
])
def test_vast_context_registers_the_one_class_with_call_args(shell, app, line, args, kwargs):
    shell.user_ns.update(MODEL="m", n=2, app_var=app)
    assert shell.run_cell_magic("vast_context", line, CONTEXT) is None  # no Out[] echo of the class
    assert app.contexts == {"Model": shell.user_ns["Model"]}
    spec = app._contexts["Model"][1]  # the registration as the bundle will see it
    assert (spec.args, spec.kwargs) == (args, kwargs)


def test_vast_context_raising_cell_registers_nothing(shell, app):
    with pytest.raises(RuntimeError):
        shell.run_cell_magic("vast_context", "model_id='m'", CONTEXT + "raise RuntimeError('no')\n")
    assert app.contexts == {}


def test_config_display_wins_over_the_environment(shell, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "widget")
    assert resolve_display_mode() == "widget"
    shell.run_line_magic("config", 'VastMagic.display = "text"')
    assert resolve_display_mode() == "text"
    shell.run_line_magic("config", "VastMagic.backend = 'vast'")
    assert settings.resolve("backend") == "vast"
    shell.run_line_magic("unload_ext", "vast_magic")
    assert resolve_display_mode() == "widget"  # the hook left with the extension
    assert shell.find_line_magic("vast_deploy") is None
    shell.run_line_magic("load_ext", "vast_magic")


def test_config_rejects_invalid_values(shell, caplog):
    shell.run_line_magic("config", 'VastMagic.display = "fancy"')  # traitlets logs a rejected config value
    assert "VastMagic.display = 'fancy' is invalid: expected one of auto, widget, text" in caplog.text
    assert shell.magics_manager.registry["VastMagics"].config_object.display is None
    assert settings.resolve("display") == "auto"


def test_deploy_overrides_are_validated_and_apply_to_that_deploy_only(shell, app, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    shell.run_cell_magic("vast_remote", "--benchmark [{'x': 2}]", SQUARE)
    with pytest.raises(ConfigError, match="name 'bad name!' is invalid"):
        shell.run_line_magic("vast_deploy", "--name 'bad name!' --dry-run")
    report = shell.run_line_magic("vast_deploy", "--name other --tag t2 --ttl 30 --dry-run")
    assert report.dry_run and (app.name, app.tag, app.ttl, app.backend) == ("My-Demo-1", "default", None, None)
    assert app.manifest().name == "My-Demo-1"        # nothing of the flags stuck


@pytest.mark.parametrize("changes, expected", [
    ({"name": "renamed"}, ("renamed", "default", None, None)),
    ({"tag": "canary", "ttl": 90}, ("My-Demo-1", "canary", 90.0, None)),
    ({"backend": "local", "ttl": None}, ("My-Demo-1", "default", None, "local")),
    ({"name": None}, (None, "default", None, None)),                 # None: the default name, as in the constructor
    ({}, ("My-Demo-1", "default", None, None)),
])
def test_configure_changes_only_what_is_passed_and_returns_the_deployment(app, changes, expected):
    assert app.configure(**changes) is app
    assert (app.name, app.tag, app.ttl, app.backend) == expected


@pytest.mark.parametrize("changes, message", [
    ({"name": "bad name!"}, "name 'bad name!' is invalid"),
    ({"tag": ""}, "tag '' is invalid"),
    ({"ttl": 0}, "ttl must be a positive number"),
    ({"backend": "gcp"}, "expected one of local, vast"),
    ({"name": "fine", "ttl": -1}, "ttl must be a positive number"),   # all checked before any is set
])
def test_configure_checks_like_the_constructor_and_changes_nothing_on_error(app, changes, message):
    with pytest.raises(ConfigError, match=message):
        app.configure(**changes)
    assert (app.name, app.tag, app.ttl, app.backend) == ("My-Demo-1", "default", None, None)


def test_configure_takes_keywords_only(app):
    with pytest.raises(TypeError):
        app.configure("positional")


def test_vast_image_sets_the_session_image(shell, app):
    from vast_magic.image import Image
    from vast_magic.query import gpu_ram, num_gpus

    line = ('vastai/pytorch:2 --storage 32 --pip numpy "pandas>=2" --apt ffmpeg --env MODE=fast "GREETING=hi there" '
            '--require "gpu_ram >= 24" "num_gpus >= 2"')
    image = shell.run_line_magic("vast_image", line)
    assert image is app.image_or_default()
    expected = (Image("vastai/pytorch:2", 32).pip_install("numpy", "pandas>=2").apt_get("ffmpeg")
                .env(MODE="fast", GREETING="hi there").require(gpu_ram >= 24, num_gpus >= 2))
    assert image.spec() == expected.spec()


def test_a_bad_requirement_keeps_the_previous_image(shell, app):
    before = shell.run_line_magic("vast_image", "vastai/base --pip numpy")
    with pytest.raises(ConfigError, match="requirement 'gpu_ram >>= 2'"):
        shell.run_line_magic("vast_image", 'other/image --require "gpu_ram >>= 2"')
    assert app.image_or_default() is before


def test_vast_deploy_dry_run_returns_a_report_and_shows_progress(shell, app, capsys, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    shell.run_cell_magic("vast_remote", "--benchmark \"[{'x': 2}, {'x': 3}]\"", SQUARE)
    assert app.functions["square"].options.benchmark_dataset == ({"x": 2}, {"x": 3})
    capsys.readouterr()
    report = shell.run_line_magic("vast_deploy", "--dry-run --tag t1 --ttl 60")
    assert isinstance(report, DeployReport)
    assert (report.dry_run, report.tier, report.reasons, report.endpoint) == (True, 4, ("new deployment",), None)
    assert (app.tag, app.ttl) == ("default", None)              # the flags were for that deploy only
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"packaged {report.files} files, {lines[0].split(', ')[1]}", "tier 4: new deployment"]
    assert len(lines) == 3 and lines[2].startswith("dry run: nothing changed or started (")


@pytest.mark.parametrize("line, expected", [
    ("--app app   # deploy it", "--app app   "),
    ("--env COLOR=#fff", "--env COLOR=#fff"),
    ("--benchmark '[{\"x\": \"#1\"}]' # note", "--benchmark '[{\"x\": \"#1\"}]' "),
    ("# only a comment", ""),
    ('--name "a # b"', '--name "a # b"'),
])
def test_trailing_comments_are_not_arguments(line, expected):
    from vast_magic.notebook.magics import strip_comment
    assert strip_comment(line) == expected


def test_vast_image_offers_shows_the_preview_from_the_api(shell, app, monkeypatch, capsys):
    """--offers asks Vast (a fake, passed in as the session deployment's transport) with the session's key."""
    from vast_magic import Deployment
    from vast_magic.testing import FakeVast
    key = "k" * 64
    fake = FakeVast(api_key=key, offers=[{"id": 1, "gpu_name": "RTX 4090", "dph_total": 0.4, "num_gpus": 1}])
    get_session(shell).app = app = Deployment(name="offers", transport=fake.transport())
    monkeypatch.setenv("VAST_API_KEY", key)
    shell.run_line_magic("vast_image", 'vastai/base --require "gpu_ram >= 24"')
    capsys.readouterr()
    shell.run_line_magic("vast_image", 'vastai/base --require "gpu_ram >= 24" --offers')
    assert "1 offer, $0.40/h: RTX 4090" in capsys.readouterr().out
    (sent,) = fake.sent("POST", "/api/v0/bundles/")
    assert sent.body["gpu_ram"] == {"gte": 24000.0} or sent.body["gpu_ram"] == {"gte": 24000}
    assert key not in repr(app) and key not in repr(app.image_or_default())
    shell.run_line_magic("vast_image", 'vastai/base --offers --pricing interruptible')
    assert fake.sent("POST", "/api/v0/bundles/")[-1].body["type"] == "bid"


@pytest.mark.parametrize("value", [None, "app", object()])
def test_the_session_deployment_must_be_a_deployment(shell, value):
    with pytest.raises(UsageError, match="must be a vast_magic Deployment"):
        get_session(shell).app = value
