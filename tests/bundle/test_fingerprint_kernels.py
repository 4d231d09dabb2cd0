"""The fingerprint is identical in two real kernels with different hash seeds and cell order."""
from __future__ import annotations

import json
import os

import pytest
from jupyter_client.manager import start_new_kernel

CELLS = {
    "setup": "from vast_magic import Deployment\nimport numpy as np\napp = Deployment(name='fp')\n"
             "app.image('vastai/base-image:@vastai-automatic-tag').pip_install('numpy').env(MODE='fast')\n"
             "app.configure_autoscaling(max_workers=3)",
    "const": "TABLE = {'b': {3, 1, 2}, 'a': np.arange(6).reshape(2, 3)}",
    "helper": "def helper(x):\n    return x + len(TABLE['b'])",
    "klass": "class Model:\n    def __init__(self, size):\n        self.size = size\n"
             "    async def __aenter__(self):\n        return self\n    async def __aexit__(self, *exc):\n        return False",
    "ctx": "app.context(size=3)(Model)",
    "remote": "@app.remote(benchmark_dataset=[{'x': 1}, {'x': 2}])\nasync def square(x):\n    # a comment\n"
              "    return helper(x) * x * app.get_context(Model).size",
}
ORDERS = (["setup", "const", "helper", "klass", "ctx", "remote"],
          ["setup", "klass", "ctx", "helper", "const", "remote"])


def _fingerprint_in_kernel(order: list[str], seed: str, home: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed, "VAST_MAGIC_HOME": home}
    manager, client = start_new_kernel(kernel_name="python3", env=env)
    try:
        for key in order:
            reply = client.execute_interactive(CELLS[key], timeout=60)
            assert reply["content"]["status"] == "ok", (key, reply["content"])
        outputs = []
        client.execute_interactive("import dataclasses, json\nprint(json.dumps(dataclasses.asdict(app.manifest().fingerprint())))",
                                   timeout=60, output_hook=outputs.append)
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        return json.loads(text)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.slow
def test_same_fingerprint_in_two_kernels(tmp_path):
    home = str(tmp_path / "home")
    first = _fingerprint_in_kernel(ORDERS[0], "1", home)
    second = _fingerprint_in_kernel(ORDERS[1], "4242", home)
    assert first == second
    assert set(first) == {"code", "image", "autoscaling", "tag"} and all(len(v) == 64 for v in first.values())
