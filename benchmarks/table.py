"""The benchmark table: one pure function from measurements to rows, and two renderers.

Each row names what it compares against: a peer (Ray) measured in the same
run, the machine's floor, or an absolute goal from the performance issue.
``passed`` is None where a row has no target or its reference is missing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    vast: float | None
    ray: float | None = None
    ipp: float | None = None
    floor: float | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None


def _get(results: dict, *path: str) -> float | None:
    value = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def _relative(metric, unit, vast, ref, limit: float, ref_name: str, higher_is_better=False, **others) -> Row:
    """A row whose target is a multiple of a reference measured in the same run."""
    ratio = vast / ref if vast is not None and ref else None
    ok = None if ratio is None else (ratio >= limit if higher_is_better else ratio <= limit)
    sign = ">=" if higher_is_better else "<="
    return Row(metric, unit, vast, ratio=ratio, target=f"{sign} {limit:g}x {ref_name}", passed=ok, **others)


def _absolute(metric, unit, vast, limit: float, higher_is_better=False, **others) -> Row:
    sign = ">=" if higher_is_better else "<="
    ok = None if vast is None else (vast >= limit if higher_is_better else vast <= limit)
    return Row(metric, unit, vast, target=f"{sign} {limit:,g} {unit}", passed=ok, **others)


def _started(r: dict, step: str, key: str, expected: str, label: str) -> str:
    """A scale-up row's label says how the workers it timed were really started (``status().workers``)."""
    start = (r.get(step) or {}).get(key)
    return label if start in (None, expected) else f"{label} (measured: {start})"


def build_rows(r: dict) -> list[Row]:
    """Rows in the order of the performance issue; missing measurements stay empty, never invented.

    Call rows compare with the machine's floors (benchmarks/floors.py) from the same run; Ray and
    ipyparallel stay in their columns for context."""
    ms = lambda *p: None if _get(r, *p) is None else _get(r, *p) * 1000   # noqa: E731
    peers: Callable[..., dict] = lambda *p: {"ray": _get(r, "ray", *p), "ipp": _get(r, "ipyparallel", *p)}  # noqa: E731
    floor = lambda *p: _get(r, "floor", *p)   # noqa: E731
    return [
        _relative("no-op await f() p50, caller's loop", "ms", _get(r, "vast_calls", "await_latency", "p50"),
                  floor("latency", "p50"), 2.0, "floor", floor=floor("latency", "p50")),
        _relative("no-op await f() p99, caller's loop", "ms", _get(r, "vast_calls", "await_latency", "p99"),
                  floor("latency", "p99"), 3.0, "floor", floor=floor("latency", "p99")),
        _relative("no-op blocking f.call() p50", "ms", _get(r, "vast_calls", "latency", "p50"),
                  floor("latency", "p50"), 3.0, "floor", floor=floor("latency", "p50"), **peers("latency", "p50")),
        Row("no-op blocking f.call() p99", "ms", _get(r, "vast_calls", "latency", "p99"),
            floor=floor("latency", "p99"), **peers("latency", "p99")),
        _relative("throughput, concurrency 64, 2 workers", "calls/s", _get(r, "vast_calls", "throughput"),
                  floor("throughput"), 0.5, "floor", higher_is_better=True, floor=floor("throughput"),
                  **peers("throughput")),
        _relative("100 MiB array round trip", "s", _get(r, "vast_calls", "array_s"), floor("memory_s"),
                  2.0, "floor", floor=floor("memory_s"), **peers("array_s")),
        Row("same, page faults per round trip (client)", "faults", _get(r, "vast_calls", "array_faults")),
        _absolute("f.map over 100,000 small items, 2 workers", "items/s", _get(r, "vast_calls", "map_items_s"),
                  25_000, higher_is_better=True),
        _absolute("cold deploy, engine running, to first result", "s",
                  _get(r, "lifecycle", "cold_engine_running_s"), 0.25),
        _absolute("cold deploy to first result", "s", _get(r, "lifecycle", "cold_s"), 1.5, **peers("cold_s")),
        _absolute("Tier-0 %vast_deploy (unchanged)", "ms", ms("lifecycle", "tier0_s"), 50),
        _absolute("reconnect after kernel restart to first result", "ms", ms("lifecycle", "reconnect_s"), 200),
        _absolute("cell edit redeployed (tier 2) and serving", "s", _get(r, "lifecycle", "tier2_s"), 1.0),
        _absolute("capture + bundle, 50-function notebook", "ms", _get(r, "bundle", "capture_bundle_ms"), 100),
        _absolute("same, unchanged redeploy (source caches warm)", "ms", _get(r, "bundle", "capture_bundle_warm_ms"), 100),
        Row(_started(r, "scaleup_fresh", "scale_up_start", "fresh", "scale-up to ready, numpy deployment, fresh interpreter"), "ms",
            _get(r, "scaleup_fresh", "scale_up_ms")),
        _absolute(_started(r, "scaleup", "scale_up_start", "forked", "same, forked from template"), "ms",
                  _get(r, "scaleup", "scale_up_ms"), 150),
        Row(_started(r, "scaleup", "zero_and_back_start", "forked", "scaled to zero: call to first result, forked"), "ms",
            _get(r, "scaleup", "zero_and_back_ms")),
        _absolute("engine daemon idle RSS", "MiB", _get(r, "lifecycle", "engine_rss"), 60, **peers("engine_rss")),
        Row("RSS per idle worker", "MiB", _get(r, "lifecycle", "worker_rss"), **peers("worker_rss")),
        Row("stream of 1,000 small items: first item", "ms", ms("vast_calls", "stream", "first_item_s")),
        Row("stream of 1,000 small items", "items/s", _get(r, "vast_calls", "stream", "items_per_s")),
        _absolute("autoscaler simulation, 10,000 workers, 1M requests", "s", _get(r, "sim", "seconds"), 10),
    ]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _cells(row: Row) -> list[str]:
    verdict = {True: "pass", False: "FAIL", None: ""}[row.passed]
    return [f"{row.metric} ({row.unit})", _fmt(row.vast), _fmt(row.ray), _fmt(row.ipp), _fmt(row.floor),
            "-" if row.ratio is None else f"{row.ratio:.2f}x", row.target, verdict]


HEADERS = ["metric", "vast_magic", "Ray", "ipyparallel", "floor", "ratio", "target", "result"]


def _machine_line(info: dict) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}, Python {info['python']}; "
            f"Ray {info['ray']}, ipyparallel {info['ipyparallel']}; {info['mode']} run on {info['date']} "
            f"in {info['minutes']} min")


def render_text(rows: list[Row], info: dict, failures: dict) -> str:
    table = [HEADERS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", _machine_line(info)] + [f"{name} failed: {text}" for name, text in failures.items()]
    return "\n".join(lines)


def render_markdown(rows: list[Row], info: dict, failures: dict, results: dict) -> str:
    out = ["# Benchmark results", "", f"Machine: {_machine_line(info)}.", "",
           "Written by `python -m benchmarks` (see benchmarks/README.md for what each row measures).", "",
           "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    if failures:
        out += ["", "## Failed measurements", ""] + [f"- {name}: `{text.splitlines()[0]}`" for name, text in failures.items()]
    out += ["", "## Raw measurements", "", "```json", json.dumps(results, indent=1, sort_keys=True), "```", ""]
    return "\n".join(out)


def render_transports(transports: dict | None, markdown: bool = False) -> str:
    """The evidence behind the worker protocol: one small echo over each client stack."""
    if not transports:
        return ""
    head = ["transport (64-byte echo, loopback)", "p50 ms", "p99 ms", "calls/s at concurrency 64"]
    rows = [[name, f"{r['p50']:.3f}", f"{r['p99']:.3f}", f"{r['throughput']:,.0f}"] for name, r in transports.items()]
    if markdown:
        return "\n".join(["", "## Transport choice", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                          *("| " + " | ".join(row) + " |" for row in rows), ""])
    widths = [max(len(line[i]) for line in [head, *rows]) for i in range(len(head))]
    return "\n".join(["", *("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                            for line in [head, *rows])])

