"""Watch mode's parts without a deployment: the redeploy decision as a table, polling files, the loop's memory,
bad input, and stopping a background deploy from another thread.

The CLI and the magic are driven end to end in tests/e2e/test_watch_cli.py and
tests/notebook/test_watch_kernel.py.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import types

import pytest

from vast_magic import loop
from vast_magic.cli import main
from vast_magic.errors import ConfigError
from vast_magic.watch import (DEPLOY, IDLE, SETTLE, WAIT, FileScanner, WatchDecision, WatchState, check_interval,
                              decide_redeploy, describe_import_error, error_files, forget_modules, reload_order)

BROKEN = {"a.py": '  File "a.py", line 1\nSyntaxError: expected \':\''}


# -- the decision ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attempted, previous, current, broken, expected", [
    # nothing differs from the last attempt (a touch keeps the digest): idle
    ({"a.py": "1"}, {"a.py": "1"}, {"a.py": "1"}, {}, WatchDecision(IDLE)),
    # saved, and the same at two polls in a row: deploy
    ({"a.py": "1"}, {"a.py": "2"}, {"a.py": "2"}, {}, WatchDecision(DEPLOY, ("a.py",))),
    # still being written (differs from the poll before): settle, whichever file it is
    ({"a.py": "1"}, {"a.py": "1"}, {"a.py": "2"}, {}, WatchDecision(SETTLE, ("a.py",))),
    ({"a.py": "1", "b.py": "1"}, {"a.py": "2", "b.py": "1"}, {"a.py": "2", "b.py": "2"}, {},
     WatchDecision(SETTLE, ("a.py", "b.py"))),
    # two files saved together: one deploy naming both
    ({"a.py": "1", "b.py": "1"}, {"a.py": "2", "b.py": "2"}, {"a.py": "2", "b.py": "2"}, {},
     WatchDecision(DEPLOY, ("a.py", "b.py"))),
    # edited and put back before it settled: nothing to do
    ({"a.py": "1"}, {"a.py": "2"}, {"a.py": "1"}, {}, WatchDecision(IDLE)),
    # does not compile: wait, saying why
    ({"a.py": "1"}, {"a.py": "2"}, {"a.py": "2"}, BROKEN, WatchDecision(WAIT, ("a.py",), (BROKEN["a.py"],))),
    # another file changes while one is still broken: still wait
    ({"a.py": "2", "b.py": "1"}, {"a.py": "2", "b.py": "2"}, {"a.py": "2", "b.py": "2"}, BROKEN,
     WatchDecision(WAIT, ("b.py",), (BROKEN["a.py"],))),
    # deleted (or mid-rename) and still gone at the next poll: wait
    ({"a.py": "1"}, {"a.py": None}, {"a.py": None}, {},
     WatchDecision(WAIT, ("a.py",), ("a.py: missing (deleted or renamed)",))),
    # back after a missing poll: settle, then deploy
    ({"a.py": "1"}, {"a.py": None}, {"a.py": "2"}, {}, WatchDecision(SETTLE, ("a.py",))),
    # only the current files are watched: one no longer read does not count
    ({"a.py": "1", "old.py": "1"}, {"a.py": "1"}, {"a.py": "1"}, {}, WatchDecision(IDLE)),
    # a file newly watched and never attempted, stable: deploy
    ({}, {"a.py": "1"}, {"a.py": "1"}, {}, WatchDecision(DEPLOY, ("a.py",))),
])
def test_decide_redeploy(attempted, previous, current, broken, expected):
    assert decide_redeploy(attempted, previous, current, broken) == expected


# -- polling -----------------------------------------------------------------------------------------------
def test_scanner_reads_content_not_timestamps_and_reports_what_does_not_compile(tmp_path):
    scanner, path = FileScanner(), str(tmp_path / "a.py")
    (tmp_path / "a.py").write_text("x = 1\n")
    first = scanner.scan([path])
    os.utime(path, ns=(1, 1))                           # a touch: new stat, same content
    assert scanner.scan([path]) == first and first.broken == {}
    (tmp_path / "a.py").write_text("def f(:\n")
    broken = scanner.scan([path])
    assert broken.digests[path] != first.digests[path]
    assert "SyntaxError" in broken.broken[path] and 'line 1' in broken.broken[path]
    (tmp_path / "a.py").unlink()
    assert scanner.scan([path]).digests == {path: None}


def test_the_loop_memory_settles_deploys_once_and_reports_a_wait_once(tmp_path):
    path = str(tmp_path / "a.py")
    (tmp_path / "a.py").write_text("x = 1\n")
    state = WatchState([path])
    state.poll()
    state.attempted_now()
    assert state.poll().action == IDLE
    (tmp_path / "a.py").write_text("x = 2\n")
    assert [state.poll().action, state.poll().action] == [SETTLE, DEPLOY]
    state.attempted_now()
    assert state.poll().action == IDLE
    (tmp_path / "a.py").write_text("x = (\n")
    assert [state.poll().action, state.poll().action] == [SETTLE, WAIT]
    state.attempted_now()                               # the loop reported it: not again until the next save
    assert state.poll().action == IDLE


def test_newly_watched_files_count_as_attempted_as_they_are(tmp_path):
    a, b = str(tmp_path / "a.py"), str(tmp_path / "b.py")
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    state = WatchState([a])
    state.poll()
    state.attempted_now([a, b])
    assert state.files == {a, b} and state.poll().action == IDLE


# -- loading again -----------------------------------------------------------------------------------------
def test_forget_modules_and_reload_order(tmp_path, monkeypatch):
    modules = {}
    for name in ("watch_t_outer", "watch_t_inner"):
        module = types.ModuleType(name)
        module.__file__ = str(tmp_path / f"{name}.py")
        modules[name] = module
        monkeypatch.setitem(sys.modules, name, module)   # outer first: it is imported first, then imports inner
    assert reload_order(["watch_t_outer", "watch_t_inner", "not_imported"]) == ["watch_t_inner", "watch_t_outer"]
    assert forget_modules([os.path.realpath(modules["watch_t_inner"].__file__)]) == ["watch_t_inner"]
    assert "watch_t_inner" not in sys.modules and "watch_t_outer" in sys.modules


def test_import_errors_show_the_users_lines_only(tmp_path, monkeypatch):
    (tmp_path / "watch_t_fails.py").write_text("x = 1\nraise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError) as caught:
        __import__("watch_t_fails")
    text = describe_import_error(caught.value)
    assert "watch_t_fails.py\", line 2" in text and text.endswith("RuntimeError: boom at import")
    assert "importlib" not in text and "<frozen" not in text


@pytest.mark.parametrize("files, culprit", [
    ({"watch_t_top.py": "import watch_t_dep\n", "watch_t_dep.py": "def f(:\n"}, "watch_t_dep.py"),  # syntax
    ({"watch_t_top.py": "import watch_t_dep\n", "watch_t_dep.py": "1 / 0\n"}, "watch_t_dep.py"),   # raises
    ({"watch_t_top.py": "def f(:\n"}, "watch_t_top.py"),
])
def test_error_files_are_the_users_files_an_import_error_points_at(tmp_path, monkeypatch, files, culprit):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("watch_t_top", "watch_t_dep"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(Exception) as caught:
        importlib.import_module("watch_t_top")
    found = error_files(caught.value)
    assert os.path.realpath(tmp_path / culprit) in found
    # never importlib's or vast_magic's (this test's own frame is a user's file here, as the caller)
    assert all(path.startswith(os.path.realpath(tmp_path)) for path in found - {os.path.realpath(__file__)})


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.01, -1, 61, float("nan"), True, "1", None])
def test_bad_intervals(value):
    with pytest.raises(ConfigError, match=r"watch interval must be a number of seconds from 0.05 to 60, got"):
        check_interval(value)


@pytest.mark.parametrize("argv, message", [
    (["watch", "missing.py"], "missing.py is not a .py file; pass the script that defines your Deployment."),
    (["watch", "no_such_module_here"], "cannot find module no_such_module_here from this folder"),
    (["watch", "not a name"], "not a name is neither a .py file nor a module name"),
    (["watch", "app.py", "--interval", "0"], "the watch interval must be a number of seconds from 0.05 to 60"),
])
def test_watch_bad_input_exits_2_before_deploying(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.py").write_text("raise SystemExit('never imported')\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vast-magic: ConfigError: ") and message in err


# -- stopping a deploy from another thread -----------------------------------------------------------------
def test_started_coroutine_is_cancelled_and_finished_before_cancel_returns():
    entered, cleaned = threading.Event(), threading.Event()

    async def deploying():
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)                    # letting go takes a while (the engine's cancel_apply)
            cleaned.set()

    started = loop.start(deploying())
    assert entered.wait(30)
    assert started.cancel(wait=30) is True and cleaned.is_set()
    assert started.outcome.cancelled()


def test_started_coroutine_cancelled_before_it_ran_still_finishes():
    started = loop.start(asyncio.sleep(3600))
    assert started.cancel(wait=30) is True


def test_started_result_is_awaited_from_another_loop():
    async def answer():
        return 42

    async def caller():
        return await loop.start(answer()).wait()

    assert asyncio.run(caller()) == 42
