"""The fake Vast's worker process: serves an uploaded bundle as the stock serve-mode worker does.

``FakeVast`` runs this file's text with ``python -c`` in the folder it unpacked the
bundle to, so the process sees only the bundle (its ``deployment.py`` and our
runtime inside it), as a Vast worker does (reference 4.2-4.3): read
``config.json`` and set its ``envs``; put the folder first on ``sys.path``;
``import deployment`` with a ``vastai`` module whose ``Deployment`` is the
serve-mode class (``context`` instantiates at decoration, ``get_context`` returns
what ``__aenter__`` returned, ``remote`` returns the function unchanged); enter
the lifecycle by calling ``app.__aenter__()``; one warm-up call per function
(a failed call counts as done, as in the official benchmark). Not done here:
apt/pip/runs steps, and benchmark rounds (the fake reports its ``worker_perf``).

The protocol with ``FakeVast`` is JSON lines: requests ``{"id", "fn", "kwargs"}``
on stdin; on the original stdout, ``{"event": "ready"}`` or ``{"event": "failed",
"error"}`` once, then ``{"id", "ok" | "err" | "status"}`` per request (the
official wire's answers). What user code prints goes to stderr, the worker's log.
The process ends when stdin closes (FakeVast gone).
"""
import asyncio
import json
import os
import sys
import threading
import traceback
import types

__all__ = []                      # a program (run by FakeVast with python -c), not a library

_REGISTERED = {}
_PROTOCOL = sys.stdout            # main() moves it off fd 1


class Deployment:
    """The serve-mode ``vastai.Deployment``, as far as a worker uses it (reference 4.2)."""

    def __init__(self, name=None, **_ignored):
        self.name, self.functions, self._contexts, self._entered = name, {}, [], {}
        _REGISTERED[name] = self

    def remote(self, benchmark_dataset=None, benchmark_generator=None, **_options):
        def register(function):
            self.functions[function.__name__] = (function, benchmark_dataset, benchmark_generator)
            return function
        return register

    def context(self, *args, **kwargs):
        def register(cls):
            self._contexts.append((cls, cls(*args, **kwargs)))
            return cls
        return register

    def get_context(self, cls):
        return self._entered[cls]

    def image(self, *args, **kwargs):
        return types.SimpleNamespace()

    def configure_autoscaling(self, *args, **kwargs):
        return None

    def ensure_ready(self, *args, **kwargs):
        return None

    async def __aenter__(self):
        values = await asyncio.gather(*(instance.__aenter__() for _, instance in self._contexts))
        self._entered.update((cls, value) for (cls, _), value in zip(self._contexts, values))
        return self

    async def __aexit__(self, *exc):
        for cls, instance in reversed(self._contexts):
            if cls in self._entered:
                del self._entered[cls]
                await instance.__aexit__(*exc)
        return False


def _send(message):
    _PROTOCOL.write(json.dumps(message) + "\n")
    _PROTOCOL.flush()


def _error_answer(exc):
    return {"err": {"type": "obj", "class": type(exc).__qualname__,
                    "module": {"type": "absolute", "path": type(exc).__module__.split(".")}, "contents": {}}}


async def _warm_up(app):
    for function, dataset, generator in app.functions.values():
        payload = generator() if generator is not None else (list(dataset)[-1] if dataset else None)
        if payload is not None:
            try:
                await function(**payload)
            except Exception:
                traceback.print_exc()          # the official benchmark counts it as done


async def _answer(app, request):
    entry = app.functions.get(request.get("fn"))
    if entry is None:
        reply = {"status": 404}
    else:
        try:
            reply = {"ok": await entry[0](**request.get("kwargs", {}))}
        except Exception as exc:
            reply = _error_answer(exc)
    try:
        _send({"id": request["id"], **reply})
    except (TypeError, ValueError) as exc:         # a value JSON cannot carry
        _send({"id": request["id"], **_error_answer(exc)})


def _read_requests(loop, queue):
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _serve(name):
    try:
        import deployment  # noqa: F401  (registers the Deployment)
        if name not in _REGISTERED:
            raise LookupError(f"deployment.py registered no Deployment named {name!r}")
        app = _REGISTERED[name]
        await app.__aenter__()
        await _warm_up(app)
    except BaseException as exc:
        traceback.print_exc()
        _send({"event": "failed", "error": f"Lifecycle startup failed: {exc}"})
        return
    _send({"event": "ready"})
    loop, queue, tasks = asyncio.get_running_loop(), asyncio.Queue(), set()
    threading.Thread(target=_read_requests, args=(loop, queue), daemon=True).start()
    while (line := await queue.get()) is not None:
        task = asyncio.ensure_future(_answer(app, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await app.__aexit__(None, None, None)


def main():
    global _PROTOCOL
    _PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                 # what user code prints goes to the log, never into the protocol
    with open("config.json") as file:
        config = json.load(file)
    for key, value in config.get("envs", []):
        os.environ[key] = value
    print(f"Loaded config for deployment: {config['name']}", file=sys.stderr, flush=True)
    vastai = types.ModuleType("vastai")
    vastai.Deployment = Deployment
    sys.modules["vastai"] = vastai
    sys.path.insert(0, os.getcwd())
    asyncio.run(_serve(config["name"]))


if __name__ == "__main__":
    main()
