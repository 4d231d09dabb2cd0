"""What capture refuses: each case names the variable and says what to do instead."""
from __future__ import annotations

import pytest

from tests.capture.shipping import run_cells
from vast_magic.capture import capture_code
from vast_magic.errors import CaptureError, VastMagicError

KEY = "vk-0123456789abcdef"

# (setup cell, global the function reads, capture options, words the message must contain)
REFUSALS = [
    ("fh = open(__import__('os').devnull)", "fh", {}, ["'fh'", "open file", "inside the function"]),
    ("import socket\nsock = socket.socket()", "sock", {}, ["'sock'", "socket"]),
    ("import threading\nlock = threading.Lock()", "lock", {}, ["'lock'", "lock", "inside the function"]),
    ("import threading\nrlock = threading.RLock()", "rlock", {}, ["'rlock'", "RLock"]),
    ("import threading\nready = threading.Event()", "ready", {}, ["'ready'", "Event"]),
    ("import threading\nsem = threading.Semaphore(2)", "sem", {}, ["'sem'", "Semaphore"]),
    ("import threading\ncond = threading.Condition()", "cond", {}, ["'cond'", "Condition"]),
    ("import threading\nworker = threading.Thread(target=print)", "worker", {}, ["'worker'", "thread"]),
    ("numbers = (i for i in range(3))", "numbers", {}, ["'numbers'", "generator", "list(...)"]),
    ("from vast_magic.secret import Secret\ntoken = Secret('s3cr3t')", "token", {},
     ["'token'", "Secret", "image.env(NAME=secret)"]),
    ("from vast_magic.secret import Secret\nopts = {'auth': [Secret('s3cr3t')]}", "opts", {},
     ["opts['auth'][0]", "image.env"]),
    (f"api = {KEY!r}", "api", {"forbidden_strings": [KEY]}, ["'api'", "API key"]),
    (f"settings = {{'k': ({KEY!r},)}}", "settings", {"forbidden_strings": [KEY]}, ["settings['k'][0]", "API key"]),
    ("import sqlite3\nconn = sqlite3.connect(':memory:')", "conn", {}, ["'conn'", "cannot be pickled", "Connection"]),
    ("make = lambda: 1", "make", {"backend": "vast"}, ["'make'", "Python versions", "top-level `def`"]),
    ("def outer(k):\n    def inner():\n        return k\n    return inner\nclosed = outer(1)", "closed",
     {"backend": "vast"}, ["'closed'", "code objects do not unpickle"]),
]


@pytest.mark.parametrize("setup, variable, options, words", REFUSALS, ids=[r[1] for r in REFUSALS])
def test_refused_globals_name_the_variable(shell, setup, variable, options, words):
    run_cells(shell, setup, f"def remote_fn():\n    return {variable}\n")
    try:
        with pytest.raises(CaptureError) as caught:
            capture_code([shell.user_ns["remote_fn"]], **options)
    finally:
        closer = getattr(shell.user_ns.get(variable), "close", None)
        if callable(closer):
            closer()
    message = str(caught.value)
    assert isinstance(caught.value, VastMagicError)
    assert "remote_fn" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("cells, root, words", [
    (["def f():\n    return not_defined_anywhere + 1\n"], "f",
     ["'not_defined_anywhere'", "Run the cell that defines"]),
    (["def f():\n    return Helper()\n", "class Helper:\n    pass\n", "Helper = type('Helper', (), {'k': 1})\n"],
     "f", ["'Helper'", "Cannot find the source of class"]),
    (["class Pt:\n    x: int\n", "Pt = type('Pt', (), {'__annotations__': {'y': int}})\n"], "Pt",
     ["'Pt'", "Define it (again) in a cell"]),
    (["exec('def made():\\n    return 1')\n"], "made", ["'made'", "Cannot find the source of function"]),
    ([f"def f():\n    return {KEY!r}\n"], "f", ["'f'", "API key"]),
])
def test_code_that_cannot_ship(shell, cells, root, words):
    run_cells(shell, *cells)
    with pytest.raises(CaptureError) as caught:
        capture_code([shell.user_ns[root]], forbidden_strings=[KEY])
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("root, words", [
    (42, ["int", "roots are the remote functions"]),
    (lambda: 1, ["lambda", "top-level `def`"]),
])
def test_bad_roots(root, words):
    with pytest.raises(CaptureError) as caught:
        capture_code([root])
    for word in words:
        assert word in str(caught.value)


def test_local_backend_accepts_what_vast_refuses(shell):
    run_cells(shell, "make = lambda: 1\ndef remote_fn():\n    return make()\n")
    code = capture_code([shell.user_ns["remote_fn"]], backend="local")
    assert [(v.name, v.by_value_code) for v in code.values] == [("make", True)]


def test_unrelated_unshippable_globals_are_ignored(shell):
    run_cells(shell, "import threading\nlock = threading.Lock()\nfrom vast_magic.secret import Secret\n"
                     "token = Secret('x')\ndef remote_fn():\n    return 1\n")
    code = capture_code([shell.user_ns["remote_fn"]], forbidden_strings=["x"])
    assert code.names() == ("remote_fn",)


def test_conflicting_names_are_refused(shell):
    run_cells(shell, "def helper():\n    return 1\nold = helper\n",
              "def helper():\n    return 2\ndef remote_fn():\n    return old() + helper()\n")
    with pytest.raises(CaptureError, match="'helper'.*two different objects.*Rename"):
        capture_code([shell.user_ns["remote_fn"]])
