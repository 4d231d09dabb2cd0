"""What is registered on a deployment, as plain data.

``Deployment`` builds these from ``@app.remote`` / ``@app.context``; once
capture has placed the code, the deploy pipeline fills in where each function,
class and helper lives on the worker (``at``: ``"module:attr"``, a logical
module name, so the same code gives the same spec however it was loaded). The
manifest digests them, the bundle writes them (``to_dict``) into
``vast_magic_registry.pkl`` and the worker runtime reads those dicts back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RemoteSpec", "ContextSpec"]


@dataclass(frozen=True)
class RemoteSpec:
    name: str                                   # the route name: the function's __name__
    is_async: bool
    benchmark_dataset: tuple[dict, ...] | None = None
    benchmark_generator: str | None = None      # location of a function returning/yielding payload dicts
    benchmark_runs: int = 10
    workload_calculator: str | None = None      # location of a function
    workload_mode: str | None = None            # "params" (same parameters as the function) | "payload" (one dict)
    allow_parallel_requests: bool = True
    max_queue_time: float = 30.0
    retries: int = 0
    timeout: float = 600.0
    at: str = ""                                # location of the function on the worker

    @property
    def has_benchmark(self) -> bool:
        return self.benchmark_dataset is not None or self.benchmark_generator is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["benchmark_dataset"] = list(self.benchmark_dataset) if self.benchmark_dataset is not None else None
        return data


@dataclass(frozen=True)
class ContextSpec:
    name: str                                   # the class's __name__ (what get_context looks up)
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    at: str = ""                                # location of the class on the worker

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "at": self.at, "args": list(self.args), "kwargs": dict(self.kwargs)}
