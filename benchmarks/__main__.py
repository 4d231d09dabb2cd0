"""``python -m benchmarks``: vast_magic next to Ray and ipyparallel, one table, written to RESULTS.md.

Every measurement runs in its own process, one after another (the machine has
few cores; nothing else of ours runs meanwhile): vast_magic scripts in this
interpreter with a private ``VAST_MAGIC_HOME`` whose engine is stopped after,
Ray and ipyparallel in ``benchmarks/.peers`` (a venv this command makes when
it is missing; nothing is installed into the project's environment), the
floors with the standard library and numpy only. Ratios compare numbers from
this one run. Exit status 1 when a target is missed.

    python -m benchmarks                 # full run (a few minutes)
    python -m benchmarks --quick         # fewer repetitions, same table
    python -m benchmarks --no-peers      # vast_magic and floors only
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.table import Row, build_rows, render_markdown, render_text, render_transports

ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV = ROOT / "benchmarks" / ".peers"
PEER_PACKAGES = ("ray==2.60.0", "ipyparallel==9.2.0", "numpy", "aiohttp", "httpx")


def run_result(argv: list[str], *, env: dict | None = None, timeout: float = 600) -> dict:
    """Run one benchmark process; its ``RESULT {json}`` line, or an error naming what failed."""
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[1:])} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def run_vast(module: str, quick: bool, extra: tuple[str, ...] = (), settings: dict | None = None) -> dict:
    """A vast_magic benchmark against a private engine home, stopped and removed afterwards; ``settings``
    are more environment variables (``VAST_MAGIC_WORKER_FORK``...)."""
    from vast_magic.backends.local.launcher import engine_stop
    home = Path(tempfile.mkdtemp(prefix="vast-magic-bench-"))
    env = {**os.environ, "VAST_MAGIC_HOME": str(home), "VAST_MAGIC_DISPLAY": "text", **(settings or {})}
    try:
        return run_result([sys.executable, "-m", module, *(["--quick"] if quick else []), *extra], env=env)
    finally:
        engine_stop(home)
        shutil.rmtree(home, ignore_errors=True)


def peers_python() -> Path:
    """The peers venv's interpreter, made (and filled from the package index) when missing."""
    python = PEERS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import ray, ipyparallel, numpy, aiohttp, httpx"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"making the peers venv in {PEERS_VENV.relative_to(ROOT)} (Ray, ipyparallel; once)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_PACKAGES],
                   check=True)
    return python


def measure_all(args) -> tuple[dict, dict]:
    """Every measurement: name -> result dict; failures are kept as text, not raised."""
    steps = {
        "floor": lambda: run_result([sys.executable, "-m", "benchmarks.floors", *(["--quick"] * args.quick)]),
        "vast_calls": lambda: run_vast("benchmarks.vast_calls", args.quick),
        "lifecycle": lambda: run_vast("benchmarks.lifecycle", args.quick),
        "scaleup_fresh": lambda: run_vast("benchmarks.scaleup", args.quick, settings={"VAST_MAGIC_WORKER_FORK": "0"}),
        "scaleup": lambda: run_vast("benchmarks.scaleup", args.quick, settings={"VAST_MAGIC_WORKER_FORK": "1"}),
        "bundle": lambda: run_result([sys.executable, "-m", "benchmarks.bundle", "--emit"]),
        "sim": lambda: run_result([sys.executable, "-m", "benchmarks.autoscaler_sim"]),
    }
    if not args.no_peers:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
        for peer in ("ray", "ipyparallel"):
            steps[peer] = lambda peer=peer: run_result(
                [str(peers_python()), "-m", "benchmarks.peers", "--peer", peer, *(["--quick"] * args.quick)],
                env=env, timeout=900)
        steps["transports"] = lambda: run_result(
            [str(peers_python()), "-m", "benchmarks.transports", *(["--quick"] * args.quick)], env=env)
    results, failures = {}, {}
    for name, step in steps.items():
        started = time.perf_counter()
        print(f"measuring {name}...", end=" ", flush=True)
        try:
            results[name] = step()
            print(f"{time.perf_counter() - started:.0f}s", flush=True)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            failures[name] = str(exc)
            print("FAILED", flush=True)
    return results, failures


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, noisier)")
    parser.add_argument("--no-peers", action="store_true", help="skip Ray and ipyparallel")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"),
                        help="where to write the Markdown table ('-' for nowhere)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results, failures = measure_all(args)
    rows: list[Row] = build_rows(results)
    info = {**machine(), "date": datetime.date.today().isoformat(), "mode": "quick" if args.quick else "full",
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "ray": results.get("ray", {}).get("version", "n/a"),
            "ipyparallel": results.get("ipyparallel", {}).get("version", "n/a")}
    print(render_text(rows, info, failures))
    print(render_transports(results.get("transports")))
    if args.output != "-":
        Path(args.output).write_text(render_markdown(rows, info, failures, results)
                                     + render_transports(results.get("transports"), markdown=True))
    return 0 if all(row.passed is not False for row in rows) and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
