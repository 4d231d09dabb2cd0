"""``AutoscalingConfig``: the scaling parameters of a deployment, merged and checked.

The official SDK sends only the keys passed to ``configure_autoscaling`` and
checks nothing; Vast applies its own defaults to the rest. We keep that
contract (``set_fields()`` is exactly what the PUT body carries) but validate
every value when it is set, and later calls *merge* (``merged``), so a
notebook cell that sets ``max_workers`` does not undo one that set
``cold_workers``. ``merged(key=None)`` unsets a key (back to the default).

The embedded local engine fills the keys the user did not set with its own
defaults; they live with the policy that runs them
(``backends/local/policy.py``) and are never sent to Vast.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigError

__all__ = ["AutoscalingConfig", "describe_changes", "show_value"]

_INTS = ("cold_workers", "max_workers")
_NON_NEGATIVE = ("min_load", "min_cold_load", "cold_mult", "max_queue_time", "target_queue_time",
                 "inactivity_timeout")


@dataclass(frozen=True)
class AutoscalingConfig:
    """Autoscaling parameters; ``None`` means not set (Vast's server default applies)."""

    cold_workers: int | None = None
    max_workers: int | None = None
    min_load: float | None = None
    min_cold_load: float | None = None
    target_util: float | None = None
    cold_mult: float | None = None
    max_queue_time: float | None = None
    target_queue_time: float | None = None
    inactivity_timeout: float | None = None
    autoscaler_instance: str | None = None

    def __post_init__(self) -> None:
        for name in _field_names():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _checked(name, value))
        _check_combination(self)

    def merged(self, **params: Any) -> "AutoscalingConfig":
        """This config with ``params`` set on top (``None`` unsets a key); unknown keys are ConfigError."""
        unknown = sorted(set(params) - set(_field_names()))
        if unknown:
            raise ConfigError(f"unknown autoscaling parameter(s) {', '.join(unknown)}"
                              f"{_suggestion(unknown[0])}; valid ones: {', '.join(_field_names())}.")
        return replace(self, **params)

    def set_fields(self) -> dict[str, Any]:
        """Only the keys that are set, in field order: the autoscaling part of the Vast PUT body."""
        return {name: getattr(self, name) for name in _field_names() if getattr(self, name) is not None}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.set_fields().items())
        return f"AutoscalingConfig({shown})"


def describe_changes(old: AutoscalingConfig, new: AutoscalingConfig) -> tuple[str, ...]:
    """Tier reasons such as ``"autoscaling: max_workers 4 -> 8"``, sorted by key."""
    return tuple(f"autoscaling: {name} {show_value(getattr(old, name))} -> {show_value(getattr(new, name))}"
                 for name in sorted(_field_names()) if getattr(old, name) != getattr(new, name))


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(AutoscalingConfig))


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, _field_names(), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def show_value(value: Any) -> str:
    """A setting as tier reasons print it: ``unset`` for None, ``8`` rather than ``8.0``."""
    if value is None:
        return "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _checked(name: str, value: Any) -> Any:
    """The normalized value of one parameter, or ConfigError saying what is allowed."""
    if name == "autoscaler_instance":
        if not isinstance(value, str) or not value.strip() or any(ch.isspace() for ch in value):
            raise ConfigError(f"autoscaling autoscaler_instance must be a name such as 'prod', got {value!r}.")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"autoscaling {name} must be a finite number, got {value!r}.")
    if name in _INTS:
        if not float(value).is_integer() or value < 0:
            raise ConfigError(f"autoscaling {name} must be a whole number >= 0, got {value!r}.")
        if name == "max_workers" and value < 1:
            raise ConfigError(f"autoscaling max_workers must be at least 1, got {value!r}; "
                              "use cold_workers=0 to scale to zero.")
        return int(value)
    if name == "target_util" and not 0 < value <= 1:
        raise ConfigError(f"autoscaling target_util must be in (0, 1] (a fraction of capacity), got {value!r}.")
    if name in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"autoscaling {name} must be >= 0, got {value!r}.")
    return float(value)


def _check_combination(config: AutoscalingConfig) -> None:
    cold, most = config.cold_workers, config.max_workers
    if cold is not None and most is not None and cold > most:
        raise ConfigError(f"autoscaling cold_workers={cold} is more than max_workers={most}; "
                          f"raise max_workers to at least {cold} or lower cold_workers.")
