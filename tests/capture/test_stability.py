"""Digests do not depend on the process: two interpreters, different hash seeds, different cell order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
from tests.capture.shipping import digests_of, run_cells
from vast_magic.capture import capture_code, value_digest

config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
cells = [
    "import numpy as np\nTAGS = {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'}\n",
    "NESTED = {'z': frozenset({('a', 1), ('b', 2)}), 'a': [1.5, None, True, b'x']}\n",
    "GRID = np.arange(12, dtype=np.float32).reshape(3, 4)\n",
    "from dataclasses import dataclass\n@dataclass\nclass Cfg:\n    names: set\n    scale: float = 2.0\n",
    "def helper(v):\n    return v * 2\nlabel = lambda s: s.upper()\n",
]
order = [int(i) for i in sys.argv[2].split(",")]
run_cells(shell, *(cells[i] for i in order))
run_cells(shell, "CFG = Cfg(TAGS)\n"
                 "def main(n):\n    return [helper(n), sorted(TAGS), NESTED, GRID.sum(), CFG, label('x')]\n")
code = capture_code([shell.user_ns["main"]])
print(json.dumps({"capture": json.loads(digests_of(code)),
                  "bare": value_digest({str(i): {str(j) for j in range(i)} for i in range(20)})}))
'''


def capture_in_subprocess(seed: str, order: str, tmp_path: Path) -> dict:
    script = tmp_path / f"capture_{seed}.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, str(script), str(Path(__file__).resolve().parents[2]), order], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_digests_are_identical_across_hash_seeds_and_cell_order(tmp_path):
    first = capture_in_subprocess("1", "0,1,2,3,4", tmp_path)
    second = capture_in_subprocess("4242", "4,3,0,2,1", tmp_path)
    assert first == second
    values = {name: digest for name, digest, _ in first["capture"]["values"]}
    assert set(values) == {"CFG", "GRID", "NESTED", "TAGS", "label"}
    # CFG is an instance of the cell class Cfg: the class ships as source and CFG refers to it
    assert [name for name, *_ in first["capture"]["sources"]] == ["Cfg", "helper", "main"]
