"""A typo in a deployment name is an error that lists the known ones, closest first, never a silent success.

``vast-magic teardown no-such-name`` used to print "torn down" and exit 0. The
CLI runs here as a subprocess (as typed in a shell) against a real local
engine and against this machine's Vast records; the magics run in a real
IPython shell against the fake Vast API.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from vast_magic import settings
from vast_magic.backends.vast import state
from vast_magic.known import SHOWN, closest_first, unknown_deployment


# -- the message (pure) ---------------------------------------------------------------------------
KNOWN = [("demo-app", "default"), ("demo-app", "canary"), ("zeta", "default"), ("demo-b", "default")]


@pytest.mark.parametrize("name, tag, known, expected", [
    ("demo-app", "default", KNOWN, None),                                      # known: nothing to say
    ("demo-app", None, KNOWN, None),                                           # any tag of a known name
    ("demo-ap", "default", KNOWN,
     "there is no deployment demo-ap/default on the local engine; known, closest first: demo-app/default, "
     "demo-app/canary, demo-b/default, zeta/default (`vast-magic ls` lists them)."),    # closest name, then tag
    ("demo-app", "canar", KNOWN,
     "there is no deployment demo-app/canar on the local engine; known, closest first: demo-app/canary, "
     "demo-app/default, demo-b/default, zeta/default (`vast-magic ls` lists them)."),
    ("zet", None, KNOWN, "there is no deployment zet on the local engine; known, closest first: zeta, demo-b, "
                         "demo-app (`vast-magic ls` lists them)."),
    ("anything", "default", [], "there is no deployment anything/default on the local engine, and none is "
                                "known: deploy one first."),
])
def test_the_message_lists_the_known_deployments_closest_first(name, tag, known, expected):
    assert unknown_deployment(name, tag, known) == expected


def test_long_lists_are_cut_and_vast_says_where_it_looked():
    known = [(f"app{i:02d}", "default") for i in range(SHOWN + 5)]
    text = unknown_deployment("app3", "default", known, "vast", "Check the name.")
    assert text.startswith("there is no deployment app3/default on Vast from this machine; known, closest first: ")
    assert text.endswith(" and 5 more (the Vast console lists them). Check the name.")
    assert closest_first("abc", ["xyz", "abd", "abc", "ab"]) == ["abc", "ab", "abd", "xyz"]


# -- the CLI as typed in a shell ------------------------------------------------------------------
APP = '''
import os
from vast_magic import Deployment

app = Deployment(name=os.environ.get("APP_NAME", "demo-app"))
app.configure_autoscaling(cold_workers=1, max_workers=1)

@app.remote(benchmark_dataset=[{"x": 2}], benchmark_runs=1)
async def square(x):
    return x * x
'''


def vast_magic(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vast_magic", *argv], capture_output=True, text=True,
                          timeout=180, env={**os.environ, **(env or {})})


def test_cli_typos_exit_1_with_the_known_deployments_and_touch_nothing(engine_home, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    for name, tag in (("demo-app", "default"), ("demo-app", "canary"), ("zeta", "default")):
        done = vast_magic("deploy", str(tmp_path / "app.py"), "--tag", tag, env={"APP_NAME": name})
        assert done.returncode == 0, done.stderr
    engine_home.collect()
    typos = {
        ("teardown", "no-such-name"): "there is no deployment no-such-name/default on the local engine; known, "
                                      "closest first: ",
        ("teardown", "demo-ap"): "known, closest first: demo-app/default, demo-app/canary, zeta/default",
        ("status", "demo-app", "--tag", "canry"): "known, closest first: demo-app/canary, demo-app/default",
        ("logs", "zata"): "known, closest first: zeta/default, ",
        ("teardown", "--all-tags", "demo"): "there is no deployment demo on the local engine; known, closest "
                                            "first: demo-app, zeta",
    }
    for argv, words in typos.items():
        done = vast_magic(*argv)
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        assert done.stdout == "" and words in done.stderr and "`vast-magic ls` lists them" in done.stderr, done.stderr
    listed = vast_magic("ls").stdout
    assert listed.count("\tready\t1/1 ready\t") == 3                     # every typo left everything serving
    assert vast_magic("teardown", "demo-app", "--tag", "canary").stdout == "torn down demo-app/canary\n"
    again = vast_magic("teardown", "demo-app", "--tag", "canary")       # its logs are kept: still known
    assert again.returncode == 0 and "stopped" in vast_magic("status", "demo-app", "--tag", "canary").stdout
    assert vast_magic("engine", "stop").returncode == 0
    post_mortem = vast_magic("logs", "demo-app", "--tag", "canary")     # read from the files, no engine needed
    assert post_mortem.returncode == 0 and "] benchmark square: perf " in post_mortem.stdout, post_mortem.stderr


def test_cli_in_an_empty_home_says_none_is_known(engine_home):
    done = vast_magic("status", "anything")
    assert done.returncode == 1
    assert done.stderr == ("vast-magic status: there is no deployment anything/default on the local engine, and "
                           "none is known: deploy one first. Pass --tag T for another tag.\n")


def test_cli_on_vast_checks_this_machines_records_before_asking_the_api(engine_home, tmp_path):
    state.write_record(engine_home.path, state.DeployRecord("vastapp", "default", 7, 8, None, "created"))
    for command in ("status", "teardown", "logs"):
        done = vast_magic(command, "vastap", "--backend", "vast", env={"VAST_API_KEY": "k" * 64})
        assert done.returncode == 1, done.stderr
        assert ("there is no deployment vastap/default on Vast from this machine; known, closest first: "
                "vastapp/default (the Vast console lists them)") in done.stderr


# -- the magics, on the fake Vast API ---------------------------------------------------------------
@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_MAGIC_DISPLAY", "text")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    shell.user_ns["__session__"] = str(tmp_path / "vastapp.ipynb")
    shell.run_line_magic("load_ext", "vast_magic")
    yield shell
    shell.run_line_magic("unload_ext", "vast_magic")
    settings.set_config_source(None)
    InteractiveShell.clear_instance()


def test_magics_on_vast_know_what_this_machine_deployed(shell, capsys):
    shell.run_cell(textwrap.dedent('''
        from vast_magic import Deployment
        from vast_magic.testing import FakeVast
        fake = FakeVast(api_key="test-key", ready_after=0)
        app = Deployment(name="vastapp", backend="vast", api_key="test-key", transport=fake.transport())
        typo = Deployment(name="vastap", backend="vast", api_key="test-key", transport=fake.transport())

        @app.remote(benchmark_dataset=[{"x": 2}])
        async def square(x):
            return x * x
        app.ensure_ready()
    ''')).raise_error()
    for magic in ("vast_status", "vast_logs", "vast_teardown"):
        with pytest.raises(UsageError) as info:
            shell.run_line_magic(magic, "--app typo")
        assert str(info.value).startswith(f"%{magic}: there is no deployment vastap/default on Vast from this "
                                          "machine; known, closest first: vastapp/default (the Vast console")
        assert str(info.value).endswith("or act on another: --app VAR, or typo.configure(name=..., tag=...).")
    capsys.readouterr()
    shell.run_line_magic("vast_teardown", "--app app")
    assert capsys.readouterr().out == "vastapp: torn down (tag default)\n"
    with pytest.raises(UsageError, match="and none is known: deploy one first"):   # its record went with it
        shell.run_line_magic("vast_status", "--app app")
