"""``@app.remote(...)``'s options: validated once at decoration (``ConfigError`` naming the fix), and the
plain-data registration (``RemoteSpec``) the bundle and manifest carry. ``remote.py`` re-exports these names.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .bundle.registry_spec import RemoteSpec
from .errors import ConfigError

__all__ = ["RemoteOptions", "validate_options", "helper_functions", "remote_spec"]

_UNSET = object()


@dataclass(frozen=True)
class RemoteOptions:
    """The validated keyword options of ``@app.remote(...)``."""

    benchmark_dataset: tuple[dict, ...] | None = None
    benchmark_generator: Callable | None = None
    benchmark_runs: int = 10
    workload_calculator: Callable | None = None
    workload_mode: str | None = None
    allow_parallel_requests: bool = True
    max_queue_time: float = 30.0
    retries: int = 0
    timeout: float = 600.0


def _check_dataset(fn: Callable, dataset: Any) -> tuple[dict, ...]:
    name = fn.__name__
    if isinstance(dataset, (str, bytes, dict)) or not isinstance(dataset, Iterable):
        raise ConfigError(f"benchmark_dataset for {name} must be a list of dicts of {name}'s parameters, "
                          f"e.g. [{{'x': 2}}]; got {type(dataset).__name__}.")
    items = tuple(dataset)
    if not items:
        raise ConfigError(f"benchmark_dataset for {name} is empty; give at least one dict of arguments.")
    sig = inspect.signature(fn)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"benchmark_dataset[{index}] for {name} must be a dict of parameters, got {type(item).__name__}.")
        try:
            sig.bind(**item)
        except TypeError as exc:
            raise ConfigError(f"benchmark_dataset[{index}] = {item!r} does not match {name}{sig}: {exc}. "
                              "Use the function's parameter names as keys.") from None
    return items


def _workload_mode(fn: Callable, calculator: Callable) -> str:
    """'params' when the calculator takes the function's parameters, 'payload' for one dict."""
    fn_params = list(inspect.signature(fn).parameters)
    calc_params = inspect.signature(calculator).parameters
    if list(calc_params) == fn_params:
        return "params"
    positional = [p for p in calc_params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in calc_params.values() if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(positional) >= 1 and len(required) <= 1:
        return "payload"
    raise ConfigError(f"workload_calculator {calculator.__name__}{inspect.signature(calculator)} fits neither "
                      f"{fn.__name__}'s parameters {tuple(fn_params)} nor a single `payload` dict; "
                      f"define it as `def {calculator.__name__}({', '.join(fn_params)})` or `def {calculator.__name__}(payload)`.")


def validate_options(fn: Callable, **options: Any) -> RemoteOptions:
    """Check ``@app.remote`` options against the function; errors say how to fix them."""
    if not callable(fn) or inspect.isclass(fn):
        raise ConfigError(f"@app.remote decorates a function; got {type(fn).__name__}.")
    dataset, generator = options.pop("benchmark_dataset", None), options.pop("benchmark_generator", None)
    if dataset is not None and generator is not None:
        raise ConfigError(f"{fn.__name__}: give benchmark_dataset or benchmark_generator, not both.")
    if generator is not None and not callable(generator):
        raise ConfigError(f"{fn.__name__}: benchmark_generator must be a function returning or yielding dicts of arguments.")
    runs = options.pop("benchmark_runs", 10)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"{fn.__name__}: benchmark_runs must be a whole number >= 1, got {runs!r}.")
    calculator = options.pop("workload_calculator", None)
    mode = _workload_mode(fn, calculator) if calculator is not None else None
    retries = options.pop("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{fn.__name__}: retries must be a whole number >= 0, got {retries!r}.")
    numbers = {key: options.pop(key, default) for key, default in (("max_queue_time", 30.0), ("timeout", 600.0))}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{fn.__name__}: {key} must be a positive number of seconds, got {value!r}.")
    parallel = options.pop("allow_parallel_requests", True)
    if options:
        raise ConfigError(f"@app.remote got unknown option(s) {', '.join(sorted(options))}; known: benchmark_dataset, "
                          "benchmark_generator, benchmark_runs, workload_calculator, allow_parallel_requests, "
                          "max_queue_time, retries, timeout.")
    return RemoteOptions(
        benchmark_dataset=_check_dataset(fn, dataset) if dataset is not None else None,
        benchmark_generator=generator, benchmark_runs=runs, workload_calculator=calculator, workload_mode=mode,
        allow_parallel_requests=bool(parallel), retries=retries,
        max_queue_time=float(numbers["max_queue_time"]), timeout=float(numbers["timeout"]),
    )


def helper_functions(options: RemoteOptions) -> tuple[Callable, ...]:
    """The functions a registration names (benchmark generator, workload calculator): they ship too."""
    return tuple(f for f in (options.benchmark_generator, options.workload_calculator) if f is not None)


def remote_spec(fn: Callable, options: RemoteOptions, locate: Callable[[Any], str]) -> RemoteSpec:
    """The plain-data registration the bundle and manifest use; ``locate`` says where code lives on the worker."""
    return RemoteSpec(
        name=fn.__name__, is_async=inspect.iscoroutinefunction(fn),
        benchmark_dataset=options.benchmark_dataset,
        benchmark_generator=locate(options.benchmark_generator) if options.benchmark_generator else None,
        benchmark_runs=options.benchmark_runs,
        workload_calculator=locate(options.workload_calculator) if options.workload_calculator else None,
        workload_mode=options.workload_mode, allow_parallel_requests=options.allow_parallel_requests,
        max_queue_time=options.max_queue_time, retries=options.retries, timeout=options.timeout, at=locate(fn),
    )
