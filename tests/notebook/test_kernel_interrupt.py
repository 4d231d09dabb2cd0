"""Ctrl-C (a kernel interrupt) during %vast_deploy stops waiting and leaves the engine usable."""
from __future__ import annotations

import os
import time

import pytest
from jupyter_client.manager import start_new_kernel

SETUP = """
%load_ext vast_magic
from vast_magic import Deployment
app = Deployment(name="interrupted")

%%CONTEXT%%
"""
SLOW_CONTEXT = """%%vast_context --app app
class Slow:
    async def __aenter__(self):
        import asyncio
        await asyncio.sleep(DELAY)
        return self
    async def __aexit__(self, *exc):
        return False
"""
REMOTE = """%%vast_remote --app app --benchmark '[{"x": 1}]' --benchmark-runs 1
async def echo(x):
    return x
"""


def _execute(client, code: str, timeout: float = 60) -> tuple[str, str]:
    texts = []
    reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda m: texts.append(
        m["content"].get("text", "") or str(m["content"].get("data", {}).get("text/plain", ""))))
    content = reply["content"]
    return content["status"], "".join(texts) + content.get("ename", "")


@pytest.mark.slow
def test_interrupting_a_deploy_then_deploying_again(engine_home):
    manager, client = start_new_kernel(kernel_name="python3", env={**os.environ})
    try:
        assert _execute(client, "%load_ext vast_magic\nfrom vast_magic import Deployment\n"
                                "app = Deployment(name='interrupted')\nDELAY = 60")[0] == "ok"
        assert _execute(client, SLOW_CONTEXT)[0] == "ok"
        assert _execute(client, REMOTE)[0] == "ok"
        msg_id = client.execute("report = %vast_deploy --app app")
        time.sleep(3.0)  # the worker is entering its 60 s context by now
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)     # well before the 60 s context: the interrupt stopped the wait
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        # the kernel and the engine stay usable: a fixed context deploys and serves
        assert _execute(client, "DELAY = 0")[0] == "ok"
        assert _execute(client, SLOW_CONTEXT)[0] == "ok"
        status, text = _execute(client, "report = %vast_deploy --app app --timeout 60\nprint('tier', report.tier)\n"
                                        "print('echo', await echo(7))", timeout=90)
        assert status == "ok", text
        assert "echo 7" in text
        engine_home.collect()
        assert _execute(client, "%vast_teardown --app app")[0] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
