"""Worker logs rotate by size while the worker runs, and are read back across rotations.

The format, rotation, reading and pruning are tested on files; the output pipes
on a real pipe; then a real worker prints 50 MiB and its logs on disk must stay
within the bound while the tail still reads across a rotation boundary (through
the backend and through ``vast-magic logs`` as a subprocess).
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends.local.engine_harness import make_bundle, plan
from tests.runtime.worker_harness import remote_spec
from vast_magic import settings
from vast_magic.backends.local import logfiles
from vast_magic.backends.local.logfiles import LogLimits, LogSet, WorkerLog, decode, encode, logs_to_prune
from vast_magic.backends.local.worker_output import OutputPipe
from vast_magic.errors import ConfigError
from vast_magic.reports import LogLine


# -- records ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    (LogLine(1.5, "w", "stdout", "hello world", None), LogLine(1.5, "w", "stdout", "hello world", None)),
    (LogLine(2.0, "w", "stderr", "", "square"), LogLine(2.0, "w", "stderr", "", "square")),
    (LogLine(3.0, "w", "stdout", "  leading  spaces  ", "f"), LogLine(3.0, "w", "stdout", "  leading  spaces  ", "f")),
    (LogLine(4.0, "w", "stdout", "two\nlines\r", None), LogLine(4.0, "w", "stdout", "two lines", None)),
    (LogLine(5.0, "w", "weird stream", "x", "not a name!"), LogLine(5.0, "w", "stdout", "x", None)),
    (LogLine(6.0, "w", "stdout", "é ü 中", None), LogLine(6.0, "w", "stdout", "é ü 中", None)),
])
def test_a_record_reads_back_as_the_line(line, expected):
    raw = encode(line)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert decode(raw, "w") == expected


def test_a_long_line_is_cut_so_any_record_fits_a_file():
    raw = encode(LogLine(1.0, "w", "stdout", "y" * (logfiles.MAX_LINE_CHARS * 3), None))
    assert len(raw) < logfiles.MAX_LINE_CHARS + 100 and raw.endswith(b"[vast_magic: line cut]\n")


@pytest.mark.parametrize("raw", [b"", b"garbage", b"notatime stdout - text", b"1.0 stdout"])
def test_lines_that_are_not_records_are_skipped(raw):
    assert decode(raw, "w") is None or decode(raw, "w").text == ""


# -- rotation and reading --------------------------------------------------------------------------
def _lines(start: int, count: int, function: str | None = None) -> list[LogLine]:
    return [LogLine(float(i), "w1", "stdout", f"line {i:06d}", function) for i in range(start, start + count)]


def test_rotation_keeps_the_bound_and_the_tail_reads_across_files(tmp_path):
    limits = LogLimits(max_bytes=4096, files=3)
    log = WorkerLog(tmp_path / "w1.log", limits)
    for start in range(0, 1000, 50):
        log.write(_lines(start, 50))
    log.close()
    files = logfiles.rotated_paths(tmp_path / "w1.log")
    assert [f.name for f in files] == ["w1.log", "w1.log.1", "w1.log.2"]
    assert all(f.stat().st_size <= limits.max_bytes for f in files)
    current = len((tmp_path / "w1.log").read_bytes().splitlines())
    tail = logfiles.tail(tmp_path / "w1.log", current + 40)                 # reaches into w1.log.1
    assert [line.text for line in tail] == [f"line {i:06d}" for i in range(1000 - current - 40, 1000)]
    everything = logfiles.tail(tmp_path / "w1.log", 10_000)
    assert everything[-1].text == "line 000999" and len(everything) < 1000   # the oldest file was dropped
    assert [line.time for line in everything] == sorted(line.time for line in everything)


def test_one_file_per_worker_keeps_only_the_current_one(tmp_path):
    log = WorkerLog(tmp_path / "w1.log", LogLimits(max_bytes=2048, files=1))
    log.write(_lines(0, 200))
    log.close()
    assert [f.name for f in logfiles.rotated_paths(tmp_path / "w1.log")] == ["w1.log"]
    assert (tmp_path / "w1.log").stat().st_size <= 2048


def test_the_tail_filters_by_function_across_files(tmp_path):
    log = WorkerLog(tmp_path / "w1.log", LogLimits(max_bytes=4096, files=3))
    for start in range(0, 200, 10):
        log.write(_lines(start, 5, "square") + _lines(start + 5, 5, None))
    log.close()
    square = logfiles.tail(tmp_path / "w1.log", 30, function="square")
    assert len(square) == 30 and {line.function for line in square} == {"square"}
    assert square[-1].text == "line 000194"


def test_a_deployment_tail_merges_its_workers_by_time(tmp_path):
    for worker, start in (("a", 0), ("b", 1)):
        log = WorkerLog(logfiles.worker_log_path(tmp_path, "demo", "default", worker), LogLimits())
        log.write([LogLine(float(t), worker, "stdout", f"{worker}{t}", None) for t in range(start, 10, 2)])
        log.close()
    lines = logfiles.deployment_tail(tmp_path, "demo", "default", 4)
    assert [line.text for line in lines] == ["a6", "b7", "a8", "b9"] and lines[0].worker == "a"
    assert logfiles.logged_deployments(tmp_path) == [("demo", "default")]
    assert logfiles.find_worker_log(tmp_path, "b") == logfiles.worker_log_path(tmp_path, "demo", "default", "b")
    assert logfiles.find_worker_log(tmp_path, "../b") is None
    assert oct((tmp_path / "logs" / "demo").stat().st_mode & 0o777) == "0o700"


def test_a_full_disk_loses_lines_never_the_writer(tmp_path, capsys):
    log = WorkerLog(tmp_path / "missing-folder" / "sub" / "deeper" / "w1.log", LogLimits())
    (tmp_path / "missing-folder").write_text("a file where the folder should be")
    log.write(_lines(0, 3))                       # NotADirectoryError: logged, not raised
    assert log.failed_writes == 1 and "cannot write" in capsys.readouterr().out


# -- pruning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sets, live, keep, keep_bytes, expected", [
    ([LogSet("a", 1, 10), LogSet("b", 2, 10), LogSet("c", 3, 10)], set(), 2, 1000, ["a"]),   # the oldest stopped
    ([LogSet("a", 1, 10), LogSet("b", 2, 10), LogSet("c", 3, 10)], {"a"}, 1, 1000, ["b"]),   # live ones stay
    ([LogSet("a", 1, 10)], set(), 200, 1000, []),
    ([], {"x"}, 0, 0, []),
    ([LogSet("a", 5, 10), LogSet("b", 1, 10)], set(), 0, 1000, ["a", "b"]),
    ([LogSet("a", 1, 600), LogSet("b", 2, 600), LogSet("c", 3, 10)], set(), 200, 1000, ["a"]),   # bytes budget
    ([LogSet("big", 9, 5000), LogSet("old", 1, 10)], {"big"}, 200, 100, []),   # a live worker never counts
])
def test_which_worker_logs_are_pruned(sets, live, keep, keep_bytes, expected):
    assert logs_to_prune(sets, live, keep, keep_bytes) == expected


def test_pruning_removes_every_file_of_a_stopped_worker_and_empty_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(logfiles, "KEEP_STOPPED_LOGS", 1)
    for index, worker in enumerate(("old", "new", "live")):
        log = WorkerLog(logfiles.worker_log_path(tmp_path, f"dep{index}", "default", worker), LogLimits(4096, 2))
        log.write(_lines(index * 1000, 100))
        log.close()
        os.utime(log.path, (index, index))
    assert logfiles.prune(tmp_path, {"live"}, LogLimits()) == ["old"]
    assert not (tmp_path / "logs" / "dep0").exists()
    assert logfiles.rotated_paths(logfiles.worker_log_path(tmp_path, "dep1", "default", "new"))


# -- output pipes ----------------------------------------------------------------------------------
def test_output_pipe_hands_over_whole_lines_and_the_last_partial_one():
    async def scenario():
        read_end, write_end = os.pipe()
        got = []
        pipe = OutputPipe(os.fdopen(read_end, "rb", buffering=0), "stderr", lambda stream, texts: got.append((stream, texts)))
        os.write(write_end, b"first\nsec")
        await asyncio.sleep(0.05)
        await asyncio.to_thread(os.write, write_end, b"ond\n" + b"z" * (logfiles.MAX_LINE_CHARS * 5) + b"\nno newline")
        os.close(write_end)
        for _ in range(100):
            if pipe.closed:
                break
            await asyncio.sleep(0.01)
        return got, pipe.closed

    got, closed = asyncio.run(scenario())
    texts = [text for _, batch in got for text in batch]
    assert closed and {stream for stream, _ in got} == {"stderr"}
    assert texts[:2] == ["first", "second"] and texts[-1] == "no newline"
    assert len(texts) == 4 and len(texts[2]) == logfiles.MAX_LINE_CHARS * 5      # cut later, by the record


# -- settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value, expected", [
    ("worker_log_bytes", "1048576", 1048576), ("worker_log_files", "2", 2), ("worker_log_files", 5, 5),
])
def test_log_limits_come_from_the_settings_resolver(name, value, expected, monkeypatch):
    monkeypatch.setenv(f"VAST_MAGIC_{name.upper()}", str(value))
    assert settings.resolve(name) == expected


@pytest.mark.parametrize("name, value", [("worker_log_bytes", "1024"), ("worker_log_bytes", "10MiB"),
                                         ("worker_log_files", "0"), ("worker_log_files", "2.5")])
def test_bad_log_limits_are_refused(name, value, monkeypatch):
    monkeypatch.setenv(f"VAST_MAGIC_{name.upper()}", value)
    with pytest.raises(ConfigError, match=f"VAST_MAGIC_{name.upper()} is invalid: expected a whole number"):
        settings.resolve(name)


# -- a real worker that prints 50 MiB ------------------------------------------------------------------
CHATTY = '''
import os

async def chatter(mib):
    """Write ``mib`` MiB straight to file descriptor 1 (as C code or a subprocess would), numbered lines."""
    number, written = 0, 0
    while written < mib << 20:
        lines = []
        for _ in range(1000):
            number += 1
            lines.append(f"line {number:09d} " + "x" * 80 + "\\n")
        data = memoryview("".join(lines).encode())
        written += len(data)
        while data:
            data = data[os.write(1, data):]
    os.write(1, f"chatter done after {number} lines\\n".encode())
    return number
'''


def _log_files(home: Path) -> list[Path]:
    return [path for path in (home / "logs").rglob("*") if path.is_file()]


def test_a_worker_printing_50_mib_stays_within_the_bound_and_its_tail_reads_across_rotations(harness):
    bundle = make_bundle(harness.folder, app=CHATTY, remotes=[remote_spec("chatter")], contexts=[])
    harness.apply(plan(bundle, name="chatty", autoscaling={"cold_workers": 1, "max_workers": 1}))
    started = time.monotonic()
    lines = harness.call("chatter", 50, name="chatty", timeout=120)
    done = harness.wait_for(lambda: any("chatter done" in line.text for line in harness.run(
        harness.backend.logs("chatty", "default", None, 1))), timeout=120, what="the last line logged")
    elapsed = time.monotonic() - started
    limits = LogLimits()                                   # the defaults: 10 MiB x 3 files
    files = _log_files(harness.home)
    sizes = {path.name: path.stat().st_size for path in files}
    print(f"50 MiB printed and logged in {elapsed:.1f}s; files on disk: {sizes}")
    assert done and lines > 500_000
    assert len(files) == limits.files and all(size <= limits.max_bytes for size in sizes.values())
    assert sum(sizes.values()) <= limits.per_worker
    [current] = [path for path in files if path.name.endswith(".log")]
    in_current = len(current.read_bytes().splitlines())
    tail = harness.run(harness.backend.logs("chatty", "default", None, in_current + 1000))   # into .log.1
    numbers = [int(line.text.split()[1]) for line in tail[:-1]]
    assert numbers == list(range(lines - len(numbers) + 1, lines + 1)), "a gap or a repeat at the rotation"
    assert tail[-1].text == f"chatter done after {lines} lines"
    cli = subprocess.run([sys.executable, "-m", "vast_magic", "logs", "chatty", "--tail", str(in_current + 5)],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    printed = cli.stdout.splitlines()
    assert cli.returncode == 0 and len(printed) == in_current + 5, cli.stderr
    assert printed[0].endswith(f"line {lines - in_current - 3:09d} " + "x" * 80)   # a line from the rotated file


def test_the_log_bound_is_configurable_through_the_settings(harness, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_WORKER_LOG_BYTES", str(256 << 10))
    monkeypatch.setenv("VAST_MAGIC_WORKER_LOG_FILES", "2")            # read when the engine starts (below)
    bundle = make_bundle(harness.folder, app=CHATTY, remotes=[remote_spec("chatter")], contexts=[])
    harness.apply(plan(bundle, name="chatty", autoscaling={"cold_workers": 1, "max_workers": 1}))
    lines = harness.call("chatter", 3, name="chatty", timeout=60)
    harness.wait_for(lambda: any("chatter done" in line.text for line in harness.run(
        harness.backend.logs("chatty", "default", None, 1))), timeout=60, what="the last line logged")
    sizes = sorted(path.stat().st_size for path in _log_files(harness.home))
    assert len(sizes) == 2 and max(sizes) <= 256 << 10 and lines > 30_000
