"""A deployment version's template: import the bundle once, then fork workers that skip that cost.

Run as ``python -m vast_magic_runtime.template FD`` by the engine, in a copy of
the extracted bundle, with the same environment a fresh worker gets and no
token: ``FD`` is its end of an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket to the
engine, one JSON object per message.

- template -> engine: ``{"ready": true}`` once the bundle's modules are imported
  (its functions and contexts registered, no context entered), or
  ``{"failed": text}`` and exit; ``{"forked": id, "pid": int}`` or
  ``{"refused": id, "error": text}`` per request; ``{"exited": pid, "code": int}``
  when a child ends (``code`` as ``Popen.returncode``: negative is a signal).
- engine -> template: ``{"fork": id, "workdir": path}`` carrying three
  descriptors (``SCM_RIGHTS``): the new worker's stdin read end and the write
  ends of its stdout and stderr pipes.

Why this is safe to fork: the template runs no thread, no event loop and holds
no socket but the control one, so a child copies nothing that cannot work in
a new process; it checks that importing the bundle started no thread, else it
says so and exits (the engine then starts fresh interpreters). The child
becomes exactly what ``python -m vast_magic_runtime.serve`` would be: its own
session, its own working directory and descriptors 0-2, the template's
descriptors closed, the SIGCHLD handler reset, then ``serve.main`` (which reads the launch message from stdin, so the token
never passes through the template). What the bundle printed while it was
imported is written to each child's stdout and stderr, as a fresh worker would
print it. End of file on the socket (the engine stopped, or is done with this
version) ends the template; its children are workers the engine stops itself.

What a fork cannot make fresh: state the bundle's modules built while they
were imported is shared as it was then. Random generators are the case to
know: CPython reseeds ``random`` in every child (so a ``random.seed`` at import
does not carry over), numpy seeds its global generator on first use (so it
differs per worker unless the import used or seeded it); seed inside a
context's ``__aenter__`` when each worker must have its own, known stream.
Also visible: ``ps`` (and ``sys.argv``) show a forked worker with the
template's command line, and the modules' ``__file__`` is in the template's
copy of the bundle (kept while the version has workers), not the worker's.
"""
from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import threading
import traceback

__all__ = ["CAPTURE_LIMIT", "load", "fork_hazard", "main"]

if __package__ in (None, ""):                # pragma: no cover - only for `python template.py` by mistake
    sys.exit("run this as a module: python -m vast_magic_runtime.template FD")

from . import registry, serve, setup

CAPTURE_LIMIT = 1 << 20          # bytes of import-time output replayed into each child, per stream
_MAX_MESSAGE = 1 << 16


def _send(control: socket.socket, message: dict) -> None:
    control.send(json.dumps(message).encode())


@contextlib.contextmanager
def _captured_output(into: list):
    """Descriptors 1 and 2 go to temporary files meanwhile; ``into`` gets what each received."""
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        for handle in files:
            handle.seek(0)
            into.append(handle.read(CAPTURE_LIMIT))
            handle.close()


def load(bundle_dir: str) -> list[bytes]:
    """Apply config.json's envs and import the bundle as a fresh worker would; returns what the import printed
    on stdout and stderr."""
    config = setup.read_config(bundle_dir)
    if config.get("runs"):
        raise RuntimeError("the bundle has set-up commands (runs): each worker must run them itself")
    setup.apply_envs(config.get("envs"))
    printed: list[bytes] = []
    with _captured_output(printed):
        registry.load_bundle(bundle_dir)
    return printed


def fork_hazard() -> str | None:
    """Why forking this process now would be unsafe, or None."""
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        return f"importing the bundle started {len(threads)} thread(s) ({', '.join(threads)}); a fork copies none"
    return None


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork_one(control: socket.socket, data: bytes, fds: list[int], printed: list[bytes], closing: list) -> None:
    """Answer one fork request; in the child, never return (it becomes the worker)."""
    try:
        request = json.loads(data)
        rid, workdir = request["fork"], str(request["workdir"])
        if len(fds) != 3:
            raise ValueError(f"a fork request carries 3 descriptors, got {len(fds)}")
    except (ValueError, KeyError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        _send(control, {"refused": None, "error": f"bad request: {exc}"})
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        pid = None
        _send(control, {"refused": rid, "error": f"fork failed: {exc}"})
    if pid == 0:
        try:
            _become_worker(fds, workdir, printed, closing)
        finally:
            os._exit(2)                          # serve.main exits by itself; this only follows a failure
    for fd in fds:
        os.close(fd)
    if pid:
        _send(control, {"forked": rid, "pid": pid})


def _become_worker(fds: list[int], workdir: str, printed: list[bytes], closing: list) -> None:
    """In the child: drop everything of the template, take the worker's descriptors, then serve."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)        # the only handler the template changed
        for thing in closing:
            thing.close()
        os.setsid()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        template_dir = os.getcwd()
        os.chdir(workdir)
        sys.path[:] = [workdir if entry == template_dir else entry for entry in sys.path]
        for fd, data in zip((1, 2), printed):
            if data:
                os.write(fd, data)
    except BaseException:
        traceback.print_exc()
        os._exit(2)
    serve.main()


class _Wakeup:
    """SIGCHLD as a readable descriptor for the selector."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.write_fd)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 512):
                pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


def _serve(control: socket.socket, printed: list[bytes]) -> None:
    wakeup = _Wakeup()
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wakeup.read_fd, selectors.EVENT_READ)
    closing = [selector, control, wakeup]
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                data, fds, _flags, _addr = socket.recv_fds(control, _MAX_MESSAGE, 3)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return                       # the engine is done with this version, or gone
                _fork_one(control, data, list(fds), printed, closing)
            else:
                wakeup.drain()
        _reap(control)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    try:
        printed = load(os.getcwd())
        hazard = fork_hazard()
    except BaseException:
        hazard = "importing the bundle failed:\n" + traceback.format_exc()
    try:
        if hazard is not None:
            _send(control, {"failed": hazard[-_MAX_MESSAGE // 4:]})     # one message: its end, where the cause is
            return
        _send(control, {"ready": True})
        _serve(control, printed)
    except (BrokenPipeError, ConnectionError):
        pass                                     # the engine went away


if __name__ == "__main__":
    serve._alias_package()
    main()
