"""The quick soak in CI: ~10,000 calls through the public API, no errors, every figure reported.

Memory growth is printed, not held, here: on a loaded CI machine a short run's peaks are noise. The
full soak holds it (under 10%).

The full soak (~100,000 calls, up to 5 minutes) is one command:
``python benchmarks/soak.py`` (see its docstring).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_quick_soak(engine_home, tmp_path):
    proc = subprocess.run([sys.executable, str(SOAK), "--quick", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=dict(os.environ))
    engine_home.collect()
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SOAK ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(line[len("SOAK "):])
    print({k: result[k] for k in ("calls", "errors", "seconds", "calls_per_s", "p99_ms", "max_growth")})
    assert [problem for problem in result["problems"] if " RSS grew " not in problem] == [], result
    assert (result["calls"], result["errors"], result["wrong"], result["workers"]) == (10_000, 0, 0, 2)
    assert {"client", "engine"} <= set(result["memory"]) and len(result["memory"]) == 4
    assert result["max_growth"] is not None
    assert "Task was destroyed" not in proc.stderr, proc.stderr[-2000:]     # no connection left to the GC
