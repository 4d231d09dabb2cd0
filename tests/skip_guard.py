"""A pytest plugin for CI: a skipped test fails the run unless its reason is on an allow-list.

A test that skips because a tool is missing or the network is down looks, in a green run, exactly
like a test that passed; CI is where that must be loud. Load it with
``python -m pytest -p tests.skip_guard --allowed-skips FILE``. FILE holds one regular expression a
line, searched in ``"<node id>: <reason>"``; blank lines and lines starting with ``#`` are ignored
(write the why there). The allow-list and every skip are printed at the end of the run, each skip
marked allowed or UNEXPECTED; one unexpected skip makes the run exit 1. Without the option the
plugin does nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Skip", "read_allow_list", "skip_reason", "unexpected"]


@dataclass(frozen=True)
class Skip:
    """One skipped test: its node id and the reason it gave."""
    nodeid: str
    reason: str

    @property
    def text(self) -> str:
        return f"{self.nodeid}: {self.reason}"


def read_allow_list(text: str) -> list[re.Pattern]:
    """The patterns of an allow-list file; a bad pattern is an error naming its line."""
    patterns = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            patterns.append(re.compile(line))
        except re.error as exc:
            raise pytest.UsageError(f"allowed skips, line {number}: {line!r} is not a regular expression ({exc})")
    return patterns


def skip_reason(longrepr) -> str:
    """The reason of a skipped report (pytest keeps it as (path, line, "Skipped: reason"))."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ").removeprefix("Skipped").strip() or "(no reason given)"


def unexpected(skips: list[Skip], patterns: list[re.Pattern]) -> list[Skip]:
    """The skips that no pattern allows."""
    return [skip for skip in skips if not any(p.search(skip.text) for p in patterns)]


def pytest_addoption(parser):
    parser.addoption("--allowed-skips", default=None, metavar="FILE",
                     help="fail the run when a test skips for a reason not matched by a line of FILE (CI)")


def pytest_configure(config):
    path = config.getoption("--allowed-skips")
    if path:
        config.pluginmanager.register(SkipGuard(Path(path)), "vast-magic-skip-guard")


class SkipGuard:
    """Collects skips as reports arrive; fails the session and prints the verdict at the end."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.patterns = read_allow_list(path.read_text())
        except OSError as exc:
            raise pytest.UsageError(f"cannot read the allowed skips file {path}: {exc}")
        self.skips: list[Skip] = []

    def pytest_runtest_logreport(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append(Skip(report.nodeid, skip_reason(report.longrepr)))

    def pytest_collectreport(self, report):
        if report.skipped:          # a whole module skipped at import (pytest.importorskip, skip at module level)
            self.skips.append(Skip(report.nodeid, skip_reason(report.longrepr)))

    def pytest_sessionfinish(self, session):
        if unexpected(self.skips, self.patterns) and session.exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        terminalreporter.section("skips")
        write(f"allowed skip reasons ({self.path}):")
        for pattern in self.patterns:
            write(f"  {pattern.pattern}")
        bad = set(unexpected(self.skips, self.patterns))
        for skip in self.skips:
            write(f"{'UNEXPECTED' if skip in bad else 'allowed'} skip: {skip.text}")
        write(f"{len(self.skips)} skipped, {len(bad)} unexpected"
              + (": a test CI is meant to run did not run; the run fails" if bad else ""), red=bool(bad))
