"""The CI skip guard: a skip whose reason is not allowed fails the run, and the verdict is printed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skip_guard import Skip, read_allow_list, skip_reason, unexpected

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = '''
import pytest

def test_runs():
    assert True

def test_needs_a_tool():
    pytest.skip("unshare(1) is not installed")

@pytest.mark.skipif(True, reason="no /dev/shm on this system")
def test_needs_shm():
    pass

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False
'''


def _run(tmp_path, allowed: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.skip_guard", "test_sample.py"]
    if allowed is not None:
        (tmp_path / "allowed").write_text(allowed)
        args += ["--allowed-skips", "allowed"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("allowed, status, verdicts", [
    (None, 0, []),
    ("# a comment\n\nno /dev/shm\nunshare", 0,
     ["allowed skip: test_sample.py::test_needs_a_tool: unshare(1) is not installed",
      "allowed skip: test_sample.py::test_needs_shm: no /dev/shm on this system", "2 skipped, 0 unexpected"]),
    ("# only shm may skip\nno /dev/shm", 1,
     ["UNEXPECTED skip: test_sample.py::test_needs_a_tool: unshare(1) is not installed",
      "allowed skip: test_sample.py::test_needs_shm", "2 skipped, 1 unexpected: a test CI is meant to run did not run"]),
    ("", 1, ["2 skipped, 2 unexpected"]),
])
def test_the_run_fails_on_a_skip_not_allowed(tmp_path, allowed, status, verdicts):
    proc = _run(tmp_path, allowed)
    assert proc.returncode == status, proc.stdout + proc.stderr
    for verdict in verdicts:
        assert verdict in proc.stdout
    if allowed is None:
        assert "allowed skip reasons" not in proc.stdout
    else:
        assert "allowed skip reasons (allowed):" in proc.stdout


def test_a_bad_pattern_names_its_line():
    with pytest.raises(pytest.UsageError, match=r"line 2: '\(unclosed' is not a regular expression"):
        read_allow_list("# why\n(unclosed\n")


@pytest.mark.parametrize("longrepr, reason", [
    (("x.py", 3, "Skipped: no /dev/shm"), "no /dev/shm"),
    (("x.py", 3, "Skipped"), "(no reason given)"),
    ("Skipped: whole module", "whole module"),
])
def test_skip_reason(longrepr, reason):
    assert skip_reason(longrepr) == reason


def test_patterns_match_node_id_or_reason():
    skips = [Skip("notebooks/quickstart.ipynb::Cell 9", "(no reason given)"), Skip("tests/a.py::t", "no shm")]
    assert unexpected(skips, read_allow_list(r"^notebooks/quickstart\.ipynb::")) == [skips[1]]


def test_the_ci_allow_list_says_why_for_every_entry():
    """.ci/allowed-skips: each pattern compiles and follows a comment saying why that test cannot run in CI."""
    lines = (ROOT / ".ci" / "allowed-skips").read_text().splitlines()
    patterns = read_allow_list("\n".join(lines))
    assert patterns
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert number > 0 and lines[number - 1].startswith("#"), f"line {number + 1}: {line!r} has no why above it"
