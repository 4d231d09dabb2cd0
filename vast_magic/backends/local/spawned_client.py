"""Spawned calls on the local engine, client side: the requests ``LocalBackend`` sends and the answers it reads.

The engine runs a spawned call and keeps its answer as the worker's opaque frame (backends/local/spawned.py);
only this process, which has the deployment's classes, unpickles it. The request names the version the
caller deployed (``CallSpec.version``), so the engine runs it only on a worker of that version.
"""
from __future__ import annotations

import math
from typing import Any

from ...errors import (BackendError, CallCancelledError, CallTimeoutError, ConfigError, OverloadedError,
                       WorkerLostError)
from ...runtime import wire
from ..base import CallOutcome, CallSpec, outcome_from_response

__all__ = ["SPAWNED_CALL_ID", "check_timeout", "spawn", "call_result", "call_function", "spawned_outcome"]

#: the id inside a spawned call's request: it has a worker connection of its own
SPAWNED_CALL_ID = 1


def check_timeout(spec: CallSpec) -> None:
    timeout = spec.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout < math.inf):
        raise ConfigError(f"{spec.function}: the call timeout must be a positive number of seconds, got "
                          f"{timeout!r}; e.g. f.with_timeout(30)(...) or @app.remote(timeout=30).")


async def spawn(engine: Any, spec: CallSpec, pickled: tuple[bytes, list]) -> str:
    """Hand the pickled call to the engine (``EngineClient``); returns the call's id."""
    main, buffers = pickled
    return await engine.request("spawn", name=spec.name, tag=spec.tag, function=spec.function,
                                call_id=SPAWNED_CALL_ID, request=[main, [bytes(b) for b in buffers]],
                                timeout=spec.timeout, cost=spec.cost, version=spec.version, answer_timeout=60)


async def call_result(engine: Any, call_id: str, wait: float, classes: dict) -> CallOutcome | None:
    """The outcome of a spawned call once it finished (None before), waiting up to ``wait`` s for it."""
    answer = await engine.request("call_result", autostart=False, call=call_id, wait=wait, answer_timeout=wait + 30)
    if answer["state"] != "done":
        return None
    return spawned_outcome(answer, classes)


async def call_function(engine: Any, call_id: str) -> str:
    """The function a spawned call runs; ConfigError when the engine does not keep that call."""
    answer = await engine.request("call_result", autostart=False, call=call_id, wait=0, answer_timeout=30)
    return str(answer["function"])


def spawned_outcome(answer: dict, classes: Any) -> CallOutcome:
    """A finished spawned call as the engine keeps it -> CallOutcome: the worker's answer (unpickled here,
    with this process's classes), a cancellation, or the engine's reason there is no answer."""
    function = answer.get("function")
    if answer.get("frame") is None:
        error = answer.get("error") or {}
        kind, message = error.get("kind"), str(error.get("message") or "the call did not finish")
        if kind == "CallCancelledError":
            return CallOutcome(error=CallCancelledError(message, str(error.get("outcome") or "never_ran")))
        return CallOutcome(error=_ENGINE_ERRORS.get(kind, BackendError)(message))
    main, buffers = answer["frame"]
    response = wire.loads(main, buffers, {name: cls for cls, name in classes.items()})
    if response.get("cancelled"):
        output = tuple((str(s), str(t)) for s, t in response.get("output") or ())
        return CallOutcome(error=CallCancelledError(str(response.get("message")), str(response["cancelled"])),
                           output=output)
    try:
        return outcome_from_response(response, function)
    except (CallTimeoutError, OverloadedError) as exc:
        return CallOutcome(error=exc)


_ENGINE_ERRORS = {kind.__name__: kind for kind in (CallTimeoutError, ConfigError, OverloadedError, WorkerLostError)}
