"""The box's decisions, as pure functions of data: PUT actions, env strings, bundle checks, offers, worker rows.

Each rule follows the reference where it says something (section numbers in
the docstrings); where the public record is silent the box's choice is
written down here, in one place.
"""
from __future__ import annotations

import json
import os
import tarfile
from typing import Any, Iterable, Mapping

__all__ = [
    "IMAGE_FIELDS", "SCALING_FIELDS", "TERMINAL", "put_action", "image_changed", "target_workers", "parse_env_string",
    "bundle_problem", "machine_offer", "offer_matches", "search_offers", "worker_row", "waiting_status",
]

#: PUT fields whose change needs new workers (reference 8.1: image, env vars, search filters)
IMAGE_FIELDS = ("image", "env", "search_params", "storage", "docker_login_user", "docker_login_pass",
                "docker_login_repo")
SCALING_FIELDS = ("cold_workers", "max_workers", "min_load", "min_cold_load", "target_util", "cold_mult",
                  "max_queue_time", "target_queue_time", "inactivity_timeout", "autoscaler_instance", "ttl")
#: worker statuses after which a worker never serves again (reference 8.2)
TERMINAL = frozenset({"stopped", "destroying", "unavail"})
#: the stand-in for a machine's DLPerf score: what Vast reports as ``perf`` before a worker measured itself
PLACEHOLDER_PERF = 12.5


def put_action(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """One of the four actions of reference 8.1 for a PUT of ``new`` over ``old`` (None: no live deployment).

    A new bundle or an image-level change answers ``soft_update`` (the public record has no separate
    value for Vast's own "hard update"); the box then replaces workers on ``/update_workers/``, or by
    itself for an image-level change (``image_changed``).
    """
    if old is None:
        return "created"
    if old.get("file_hash") != new.get("file_hash") or any(old.get(k) != new.get(k) for k in IMAGE_FIELDS):
        return "soft_update"
    if any(old.get(k) != new.get(k) for k in SCALING_FIELDS):
        return "autoscale_update"
    return "exists"


def image_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """An image-level change of a live deployment: Vast replaces the workers' image itself (a hard update,
    reference 8.1), without ``/update_workers/``."""
    return old is not None and any(old.get(k) != new.get(k) for k in IMAGE_FIELDS)


def target_workers(body: Mapping[str, Any], limit: int) -> int:
    """Workers kept running: ``cold_workers`` (1 when unset), at most ``max_workers`` and the box's limit."""
    try:
        cold = int(body["cold_workers"]) if body.get("cold_workers") is not None else 1
        ceiling = int(body["max_workers"]) if body.get("max_workers") is not None else limit
    except (TypeError, ValueError):
        cold, ceiling = 1, limit
    return max(0, min(cold, ceiling, limit))


def parse_env_string(text: str) -> tuple[dict[str, str], list[str]]:
    """``-e K=V`` pairs and ``-p`` specs of a deployment's env string, parsed as the CLI does (reference 8.4).

    Split on spaces outside ``'...'``/``"..."`` (no escapes); a value is everything after the first
    ``=`` with outer quotes stripped; other options are ignored.
    """
    tokens, current, quote = [], "", None
    for char in text or "":
        if quote:
            current += char
            quote = None if char == quote else quote
        elif char in "'\"":
            current, quote = current + char, char
        elif char == " ":
            tokens, current = (tokens + [current]) if current else tokens, ""
        else:
            current += char
    tokens += [current] if current else []
    env, ports = {}, []
    for flag, value in zip(tokens, tokens[1:]):
        if flag == "-e" and "=" in value:
            key, _, val = value.partition("=")
            env[key] = val.strip("'\"")
        elif flag == "-p":
            ports.append(value)
    return env, ports


def bundle_problem(tar_path: str | os.PathLike, env: Mapping[str, str], *, web_url: str, autoscaler_url: str) -> str | None:
    """Why the box will not start a worker for this bundle and env, or None.

    The official worker extracts every member as it is (absolute and ``..`` paths included), runs
    ``apt-get`` for ``apt_gets`` and takes its API and report addresses from the env string; on this
    machine any of those would reach outside the box.
    """
    if env.get("VAST_API_URL", "https://console.vast.ai").rstrip("/") != web_url:
        return (f"the deployment's env string sends workers to {env.get('VAST_API_URL', 'https://console.vast.ai')} "
                f"for their bundle, not to this box ({web_url}): the client must add -e VAST_API_URL=<its webserver url>")
    if env.get("REPORT_ADDR", "").rstrip("/") != autoscaler_url:
        return (f"the deployment's env string reports to {env.get('REPORT_ADDR') or 'nowhere'}, not to this box's "
                f"autoscaler ({autoscaler_url}): the client must add -e REPORT_ADDR=<its autoscaler url>")
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            members = tar.getmembers()
            outside = [m.name for m in members if os.path.isabs(m.name) or ".." in m.name.split("/")]
            entry = next(m for m in members if m.name.removeprefix("./") == "config.json" and m.isfile())
            config = json.load(tar.extractfile(entry))
    except (OSError, tarfile.TarError, StopIteration, ValueError, TypeError) as exc:
        return f"the uploaded bundle is not a deployment tarball with a config.json ({exc})"
    if outside:
        return f"the bundle would write outside the worker's folder on this machine: {', '.join(outside[:5])}"
    if config.get("apt_gets"):
        return f"the bundle asks for apt packages {config['apt_gets']}; the box does not install system packages"
    return None


def machine_offer(cpus: int | None = None) -> dict[str, Any]:
    """This machine as one offer (no GPU, free): the box runs every worker here."""
    return {"id": 1, "machine_id": 1, "hostname": "127.0.0.1", "gpu_name": "none (this machine's CPU)", "num_gpus": 0,
            "gpu_ram": 0, "gpu_total_ram": 0, "cpu_cores": cpus or os.cpu_count() or 1, "dph_total": 0.0,
            "reliability": 1.0, "verified": True, "rentable": True, "rented": False, "dlperf": PLACEHOLDER_PERF}


_OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}


def offer_matches(offer: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """``{column: {op: value}}`` (reference 5) against one offer; a missing column never matches."""
    for column, conditions in query.items():
        if not isinstance(conditions, dict):
            continue      # type, order, limit, allocated_storage...
        if column not in offer:
            return False
        for op, value in conditions.items():
            check = _OPS.get(op)
            try:
                if check is None or not check(offer[column], value):
                    return False
            except TypeError:
                return False
    return True


def search_offers(offers: Iterable[Mapping[str, Any]], body: Mapping[str, Any]) -> list[dict]:
    limit = body.get("limit") if isinstance(body.get("limit"), int) else None
    found = [dict(o) for o in offers if offer_matches(o, body)]
    return found[:limit] if limit else found


def worker_row(worker: Any, now: float) -> dict[str, Any]:
    """One entry of ``get_endpoint_workers`` with the SDK's fields (reference 8.2) plus ``error_msg``.

    ``perf`` and ``dlperf`` hold the placeholder until the worker measured itself; ``measured_perf``
    is real only once ``status`` is ``idle``.
    """
    report = worker.report or {}
    loaded = worker.status == "idle"
    return {
        "id": worker.id, "status": worker.status, "cur_load": float(report.get("cur_load") or 0.0),
        "new_load": float(report.get("new_load") or 0.0), "cur_load_rolling_avg": 0.0,
        "cur_perf": float(report.get("cur_perf") or 0.0), "perf": worker.measured_perf if loaded else PLACEHOLDER_PERF,
        "measured_perf": worker.measured_perf if loaded else 0.0, "dlperf": PLACEHOLDER_PERF, "reliability": 1.0,
        "reqs_working": int(report.get("num_requests_working") or 0), "disk_usage": float(report.get("disk_usage") or 0.0),
        "loaded_at": worker.loaded_at, "started_at": worker.started_at, "gpu_name": "none (this machine's CPU)",
        "error_msg": worker.error or "",
    }


def waiting_status(statuses: Iterable[str], deleted: bool = False) -> str:
    """The ``status`` text of a ``/route/`` answer without ``url`` (reference 8.3)."""
    if deleted:
        return "endpoint stopped"
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    if not counts:
        return "waiting for workers: none recruited yet"
    return "waiting for workers: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
