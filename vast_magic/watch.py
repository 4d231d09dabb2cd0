"""Watch mode: when to redeploy a deployment whose source files change, and which files those are.

``vast-magic watch app.py`` and ``%vast_deploy --watch`` share everything
here; each only adds its own thin loop (a blocking one in the CLI, a task on
the kernel's loop in a notebook). The loop polls: a stat per watched file per
interval, a read and a hash only when the stat changed, so an idle watch costs
nothing and no file-event dependency is needed. What the loop does next is
one pure function, ``decide_redeploy``, of what the files held at the last
attempt, at the previous poll and now:

- nothing differs from the last attempt: idle (a ``touch`` is no change);
- a file still differs from the previous poll: settle (an editor or a
  ``git checkout`` is still writing; wait one more interval);
- a changed file is missing or does not compile: wait, and say why (the
  deployment keeps serving what it served);
- otherwise: deploy.

The files watched are those the deployment's capture reads: the modules that
ship as source and the local modules that ship as files (``watched_files``).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import linecache
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .capture import CELLS_MODULE, CapturedCode
from .capture.origins import is_local_file
from .errors import ConfigError

__all__ = [
    "DEFAULT_INTERVAL", "IDLE", "SETTLE", "WAIT", "DEPLOY", "check_interval", "WatchDecision", "decide_redeploy",
    "Scan", "FileScanner", "WatchState", "files_of", "watched_files", "forget_modules", "refresh_sources",
    "reload_order", "describe_import_error", "error_files", "display_path"
]

DEFAULT_INTERVAL = 0.5                     # seconds between polls; a change deploys after two equal polls
_INTERVAL_RANGE = (0.05, 60.0)

IDLE, SETTLE, WAIT, DEPLOY = "idle", "settle", "wait", "deploy"


def check_interval(value: Any) -> float:
    """The polling interval in seconds, bounded so a watch neither spins nor looks dead."""
    low, high = _INTERVAL_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"the watch interval must be a number of seconds from {low} to {high:g}, got {value!r}; "
                          f"e.g. --interval {DEFAULT_INTERVAL}.")
    return float(value)


# -- the decision (pure) ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchDecision:
    """What the watch loop does after one poll, and the files that made it so."""

    action: str                              # IDLE | SETTLE | WAIT | DEPLOY
    changed: tuple[str, ...] = ()            # files whose content differs from the last attempt
    problems: tuple[str, ...] = ()           # WAIT: one line (or block) per missing or broken file


def decide_redeploy(attempted: Mapping[str, str | None], previous: Mapping[str, str | None],
                    current: Mapping[str, str | None], broken: Mapping[str, str] | None = None) -> WatchDecision:
    """Deploy or wait, from content digests (None: the file is missing) keyed by path.

    ``attempted``: the files when the last deploy was tried (or the last wait reported), ``previous``:
    at the poll before this one, ``current``: now; ``broken``: why a current file does not compile.
    Only ``current``'s paths are watched. A wait is reported once: the loop then treats it as attempted.
    """
    broken = broken or {}
    changed = tuple(sorted(path for path, digest in current.items() if digest != attempted.get(path)))
    if not changed:
        return WatchDecision(IDLE)
    if any(digest != previous.get(path) for path, digest in current.items()):
        return WatchDecision(SETTLE, changed)
    problems = tuple(f"{path}: missing (deleted or renamed)" for path in changed if current[path] is None)
    problems += tuple(broken[path] for path in sorted(broken) if path in current and current[path] is not None)
    if problems:
        return WatchDecision(WAIT, changed, problems)
    return WatchDecision(DEPLOY, changed)


# -- polling files ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scan:
    """The watched files at one poll: content digests (None: missing) and why any ``.py`` does not compile."""

    digests: dict[str, str | None] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)


class FileScanner:
    """Digests of files, re-read only when their stat (mtime, size, inode) changed since the last scan."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple, str, str | None]] = {}

    def scan(self, paths: Iterable[str]) -> Scan:
        digests, broken = {}, {}
        for path in sorted(set(paths)):
            try:
                info = os.stat(path)
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
                seen = self._seen.get(path)
                if seen is None or seen[0] != stamp:
                    content = Path(path).read_bytes()
                    seen = (stamp, hashlib.sha256(content).hexdigest(), _compile_error(path, content))
                    self._seen[path] = seen
            except OSError:             # missing, or replaced between stat and read: seen as missing this poll
                self._seen.pop(path, None)
                digests[path] = None
                continue
            digests[path] = seen[1]
            if seen[2] is not None:
                broken[path] = seen[2]
        return Scan(digests, broken)


def _compile_error(path: str, content: bytes) -> str | None:
    """Why a ``.py`` file does not compile, as Python prints it (file, line, caret); None if it does."""
    if not path.endswith(".py"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # SyntaxWarnings show when the module is imported, not per poll
            compile(content, display_path(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    return None


class WatchState:
    """The loop's memory between polls: the files watched and what they held at the last attempt and poll."""

    def __init__(self, files: Iterable[str] = (), scanner: FileScanner | None = None):
        self.scanner = scanner or FileScanner()
        self.files: frozenset[str] = frozenset(files)
        self.attempted: dict[str, str | None] = {}
        self.previous: dict[str, str | None] = {}
        self.current = Scan()
        self.deployed: tuple[str, str] | None = None     # (name, tag) of the last successful deploy

    def poll(self) -> WatchDecision:
        """Scan the watched files and decide; the caller acts, then calls ``attempted_now`` unless idle/settling."""
        self.current = self.scanner.scan(self.files)
        decision = decide_redeploy(self.attempted, self.previous, self.current.digests, self.current.broken)
        self.previous = dict(self.current.digests)
        return decision

    def attempted_now(self, files: Iterable[str] | None = None) -> None:
        """The last poll's files were tried (or their problem reported); ``files``: the new set to watch
        (what the new capture reads), whose newcomers count as attempted as they are now."""
        self.attempted = dict(self.current.digests)
        if files is not None:
            self.files = frozenset(files)
            newcomers = self.files - set(self.attempted)
            if newcomers:
                fresh = self.scanner.scan(newcomers).digests
                self.attempted.update(fresh)
                self.previous.update(fresh)


# -- which files ------------------------------------------------------------------------------------------
def files_of(code: CapturedCode) -> dict[str, str]:
    """Every local file the captured code came from (resolved path -> module name): the modules that ship
    as source (notebook cells have no file) and the files of local modules that ship as files."""
    found: dict[str, str] = {}
    for module in code.source_modules:
        if module.name == CELLS_MODULE:
            continue
        file = getattr(sys.modules.get(module.name), "__file__", None)
        if isinstance(file, str) and file.endswith(".py"):
            found[os.path.realpath(file)] = module.name
    for shipped in code.file_modules:
        top = sys.modules.get(shipped.module.partition(".")[0])
        file = getattr(top, "__file__", None)
        if not isinstance(file, str):
            continue
        base = Path(file).resolve().parent
        if getattr(top, "__path__", None) is not None:   # a package ships from the folder holding it
            base = base.parent
        found[os.path.realpath(base / shipped.relpath)] = shipped.module
    return found


def watched_files(app: Any, **overrides: Any) -> dict[str, str]:
    """``files_of`` the code ``app`` would deploy now (with ``%vast_deploy``'s name/tag/... overrides)."""
    return files_of(app._captured(app._snapshot(**overrides)))


# -- loading changed files again --------------------------------------------------------------------------
def forget_modules(paths: Iterable[str]) -> list[str]:
    """Drop the imported modules whose file is one of ``paths``, so the next import runs them afresh.
    Returns their names."""
    paths = set(paths)
    gone = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.realpath(file) in paths:
            del sys.modules[name]
            gone.append(name)
    return gone


def refresh_sources(paths: Iterable[str]) -> None:
    """Make sure the next import and ``inspect.getsource`` read ``paths`` from disk.

    A ``.pyc`` is trusted when the source's mtime (whole seconds) and size match, so an edit of the same
    size within a second would import the old code; linecache has the same blind spot for ``getsource``.
    """
    for path in paths:
        linecache.cache.pop(path, None)
        if path.endswith(".py"):
            try:
                os.remove(importlib.util.cache_from_source(path))
            except (OSError, NotImplementedError, ValueError):
                pass
    linecache.checkcache()
    importlib.invalidate_caches()


def reload_order(names: Iterable[str]) -> list[str]:
    """Imported modules to reload, dependencies first: a module enters ``sys.modules`` before the modules
    it imports, so the reverse of that order reloads what is imported before what imports it."""
    wanted = set(names)
    return [name for name in reversed(list(sys.modules)) if name in wanted]


def describe_import_error(error: BaseException) -> str:
    """What went wrong importing the user's code, as Python prints it, without vast_magic's and importlib's
    frames (only the user's lines matter here)."""
    if isinstance(error, SyntaxError):
        return "".join(traceback.format_exception_only(type(error), error)).rstrip()
    own = str(Path(__file__).resolve().parent)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith(("<frozen", own)) and "importlib" not in Path(frame.filename).parts]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    return "".join(lines + traceback.format_exception_only(type(error), error)).rstrip()


def error_files(error: BaseException) -> set[str]:
    """The user's files an import error points at (the one that does not compile, the lines that raised):
    watched from then on, so fixing a module the code imports retries even before it ever loaded."""
    names = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    if isinstance(error, SyntaxError) and error.filename:
        names.append(error.filename)
    return {os.path.realpath(name) for name in names if is_local_file(name) and os.path.isfile(name)}


def display_path(path: str) -> str:
    """``path`` relative to the current folder when it is below it (what a person typed), else as is."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else path
    except (OSError, ValueError):
        return path
