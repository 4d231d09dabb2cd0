"""One worker of the fake Vast: a process serving the bundle a client uploaded, stopped by PID.

``FakeVast`` keeps one per deployment generation. The tarball is unpacked into
a private folder and served by ``_fake_serve.py`` (run as ``python -c``), so a
call runs the shipped code with the shipped runtime, never a live object of
the test. Calls and the start-up verdict cross the process's pipes as JSON
lines; ``call`` is awaitable from any event loop (a reader thread completes
``concurrent.futures`` futures).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Mapping

__all__ = ["BundleWorker", "WorkerGone", "bundle_from_form", "bundle_version"]

_SERVE = (Path(__file__).with_name("_fake_serve.py")).read_text()


class WorkerGone(RuntimeError):
    """The worker process ended while a call was waiting for it."""


def bundle_from_form(content_type: str, raw: bytes) -> tuple[str, bytes] | None:
    """(key, file bytes) of a presigned multipart POST, or None when it holds no file."""
    from email.parser import BytesParser
    from email.policy import HTTP
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    if not message.is_multipart():
        return None
    fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
              for part in message.iter_parts()}
    if "file" not in fields or "key" not in fields:
        return None
    return fields["key"].decode(), fields["file"]


def bundle_version(tarball: bytes) -> str | None:
    """``_VM_VERSION`` of the ``deployment.py`` in a bundle; None when it has none (a hand-made bundle)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            member = next(m for m in tar if m.name.removeprefix("./") == "deployment.py")
            found = re.search(r"^_VM_VERSION = '([^']*)'", tar.extractfile(member).read().decode(), re.M)
    except (tarfile.TarError, StopIteration, AttributeError, OSError, UnicodeDecodeError):
        return None
    return found.group(1) if found else None


class BundleWorker:
    """A worker process on one uploaded tarball; ``stop()`` kills it by PID and removes its folder."""

    def __init__(self, tarball: bytes, env: Mapping[str, str]):
        self.root = Path(tempfile.mkdtemp(prefix="fake-vast-worker-"))
        self.folder = self.root / "bundle"
        self.folder.mkdir()
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(self.folder, filter="data")
            else:                                   # Python without extraction filters (3.10 before 3.10.12)
                tar.extractall(self.folder)
        self.log_path = self.root / "worker.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-c", _SERVE], cwd=self.folder, env=dict(env),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            start_new_session=True)
        self.error: str | None = None
        self._started = threading.Event()
        self._calls: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name=f"fake-vast-worker-{self.process.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def started(self, timeout: float) -> bool:
        """Whether start-up has ended (ready, or failed: see ``error``) within ``timeout`` seconds."""
        return self._started.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._started.is_set() and self.error is None

    async def call(self, name: str, kwargs: dict) -> dict:
        """The worker's answer to one call: {"ok": value}, {"err": ...} or {"status": 404}."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            number = next(self._ids)
            self._calls[number] = future
            try:
                self.process.stdin.write((json.dumps({"id": number, "fn": name, "kwargs": kwargs}) + "\n").encode())
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                self._calls.pop(number, None)
                raise WorkerGone(f"the worker ended; its log:\n{self.logs()[-2000:]}") from None
        return await asyncio.wrap_future(future)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)       # its own session: it and what it started
            except ProcessLookupError:
                pass
            self.process.wait(10)
        try:
            self.process.stdin.close()             # stdout is the reader thread's: it ends at EOF
        except OSError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "event" in message:
                self.error = message.get("error")
                self._started.set()
                continue
            with self._lock:
                future = self._calls.pop(message.pop("id"), None)
            if future is not None:
                future.set_result(message)
        if not self._started.is_set():
            self.error = f"the worker exited before it was ready; its log:\n{self.logs()[-2000:]}"
            self._started.set()
        with self._lock:
            pending, self._calls = list(self._calls.values()), {}
        for future in pending:
            future.set_exception(WorkerGone(f"the worker ended during the call; its log:\n{self.logs()[-2000:]}"))
