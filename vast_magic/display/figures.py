"""Numbers written for people: rates ("24.8 k calls/s"), durations ("1.2 ms"), shares ("40%").

A benchmark's perf is workload per second; a call weighs ``workload_per_call``
(the SDK's default of 100 unless a workload calculator says otherwise), so
calls per second is perf divided by it. When calls weigh what a calculator
says, the figure stays in workload per second and says so.
"""
from __future__ import annotations

__all__ = ["format_number", "format_rate", "format_seconds", "format_share"]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _three_digits(value: float) -> str:
    """1 <= value < 1000 with three significant digits (rounding first: 9.996 -> "10.0", not "10.00")."""
    decimals = 2 if round(value, 2) < 10 else 1 if round(value, 1) < 100 else 0
    return f"{value:.{decimals}f}"


def format_number(value: float) -> str:
    """Three significant digits with a k/M/G/T prefix: 2475112.7 -> "2.48 M", 950 -> "950"."""
    if value < 0:
        return "-" + format_number(-value)
    if value == 0:
        return "0"
    for scale, prefix in _PREFIXES:
        if value >= scale * 0.9995:          # 999.96 k rounds to "1000 k": write "1.00 M"
            return f"{_three_digits(value / scale)} {prefix}"
    return _three_digits(value) if value >= 1 or value == 0 else f"{value:.2g}"


def format_rate(perf: float, workload_per_call: float | None = None) -> str:
    """A perf (workload/s) as calls per second when a call's weight is known, else as workload per second."""
    if workload_per_call:
        return f"{format_number(perf / workload_per_call)} calls/s"
    return f"{format_number(perf)} workload/s"


def format_seconds(seconds: float) -> str:
    """0.00031 -> "0.31 ms", 0.0123 -> "12.3 ms", 1.5 -> "1.50 s", 75 -> "75.0 s"."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{_three_digits(seconds * 1e3)} ms"
    return f"{_three_digits(seconds)} s" if seconds < 1000 else f"{seconds:.0f} s"


def format_share(fraction: float) -> str:
    """0.4 -> "40%", 0.004 -> "0.4%", 2.5 -> "250%"."""
    percent = fraction * 100
    return f"{percent:.1f}%" if 0 < percent < 10 else f"{percent:.0f}%"
