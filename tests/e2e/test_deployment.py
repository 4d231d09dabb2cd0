"""The public API end to end on the local engine: scripts run as real processes, real workers.

Each scenario runs a user script in a fresh interpreter (as `python app.py` would),
against a private VAST_MAGIC_HOME, and checks what it printed as JSON.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from tests.scripts import result_of

APP = '''
import json, os, sys
from vast_magic import Deployment, RemoteError

app = Deployment(name="e2e", tag=os.environ.get("TAG", "default"))
app.configure_autoscaling(max_workers=int(os.environ.get("MAX_WORKERS", "2")))

@app.context(model_id="tiny")
class Model:
    def __init__(self, model_id):
        self.model_id = model_id
    async def __aenter__(self):
        self.scale = 3
        return self
    async def __aexit__(self, *exc):
        return False

class Point:
    def __init__(self, x):
        self.x = x

OFFSET = {offset}

@app.remote(benchmark_dataset=[{{"x": 2}}, {{"x": 3}}], benchmark_runs=2)
async def square(x):
    print("squaring", x)
    return x * x * app.get_context(Model).scale + OFFSET

@app.remote
def move(p):
    return Point(p.x + 1)

@app.remote
async def fail(message):
    raise ValueError(message)

@app.remote
async def pid():
    return os.getpid()

report = app.ensure_ready()
out = {{"tier": report.tier, "reasons": list(report.reasons), "endpoint": report.endpoint,
        "workers": len(report.workers), "benchmark": report.benchmark}}
out["square"] = square.call(4)
out["map"] = square.map([1, 2, 3])
moved = move.call(Point(1))
out["isinstance"] = isinstance(moved, Point) and moved.x == 2
try:
    fail.call("boom")
except ValueError as exc:
    out["error"] = [isinstance(exc, RemoteError), exc.remote_type, exc.remote_message, "in fail" in exc.remote_traceback]
out["pid"] = pid.call()
print("RESULT " + json.dumps(out))
'''


def run_app(tmp_path, offset: int = 0, **env) -> tuple[dict, str]:
    script = tmp_path / "app.py"
    script.write_text(APP.format(offset=offset))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, **env}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return result_of(proc.stdout), proc.stdout


def check_cli_tables(capsys) -> None:
    """`vast-magic status` / `ls` print the lines of events.deployment_lines / deployment_summary (one formatter)."""
    from vast_magic import cli
    capsys.readouterr()
    assert cli.main(["status", "e2e"]) == 0
    *lines, not_applied = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["vast_magic e2e (tag default): ready", "endpoint local://e2e/default"]
    assert lines[2:] and all(re.fullmatch(r"worker e2e-default-\S+: ready perf=[\d,]+\.\d/s", line) for line in lines[2:])
    assert not_applied.startswith("not applied locally: image vastai/base-image")
    assert cli.main(["ls"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"e2e\tdefault\tready\t{len(lines) - 2}/{len(lines) - 2} ready\t"
                                                    "local://e2e/default"]


def test_deploy_call_and_every_tier(tmp_path, engine_home, capsys):
    first, stdout = run_app(tmp_path)
    assert (first["tier"], first["reasons"], first["endpoint"]) == (4, ["new deployment"], "local://e2e/default")
    assert first["square"] == 48 and first["map"] == [3, 12, 27] and first["isinstance"] is True
    assert first["error"] == [True, "ValueError", "boom", True]
    assert first["benchmark"] > 0 and "squaring 4" in stdout  # worker output comes back to the caller

    same, _ = run_app(tmp_path)
    assert (same["tier"], same["pid"]) == (0, first["pid"])
    check_cli_tables(capsys)

    scaled, _ = run_app(tmp_path, MAX_WORKERS="3")
    assert scaled["tier"] == 1 and scaled["reasons"] == ["autoscaling: max_workers 2 -> 3"]
    assert scaled["pid"] == first["pid"]

    edited, _ = run_app(tmp_path, offset=100, MAX_WORKERS="3")
    assert edited["tier"] == 2 and edited["square"] == 148 and edited["pid"] != first["pid"]
    assert any(r.startswith("code:") for r in edited["reasons"])

    tagged, _ = run_app(tmp_path, offset=100, MAX_WORKERS="3", TAG="v2")
    assert tagged["tier"] == 4 and tagged["endpoint"] == "local://e2e/v2"
    assert tagged["reasons"] == ["new deployment"]  # a fresh process knows no earlier tag
    engine_home.collect()


def test_dry_run_starts_nothing(tmp_path, engine_home):
    script = tmp_path / "dry.py"
    script.write_text(textwrap.dedent('''
        from vast_magic import Deployment
        app = Deployment(name="dry")
        @app.remote(benchmark_dataset=[{"x": 1}])
        async def f(x):
            return x
        r = app.ensure_ready(dry_run=True)
        print("RESULT", r.tier, r.dry_run, r.files > 0, r.bundle_size > 0, r.workers)
    '''))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "RESULT 4 True True True ()" in proc.stdout, proc.stdout + proc.stderr
    assert not (engine_home.path / "engine.json").exists()
